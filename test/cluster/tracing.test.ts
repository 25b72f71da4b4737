/**
 * Tracing and metrics of the shop as separate nodes (one `moleculer-runner` process per service
 * over NATS), exported for real:
 *
 * - Every node runs Moleculer's Jaeger exporter (`TRACING_EXPORTER=jaeger`) against a local
 *   Jaeger-compatible collector (test/support/jaeger-collector.ts) that decodes the Thrift
 *   batches jaeger-client sends. One order is placed over REST with a client `X-Request-ID`; the
 *   saga runs after the 202 on the orders node and calls inventory and payments. The gateway's
 *   span, `orders.create` and the saga's step spans (found by their parent span, not by their
 *   trace id) must all share ONE trace id, spanning at least api, orders, inventory and
 *   payments, in one tree rooted at the gateway's span. The exporter names a span's process `serviceName` after the Moleculer service (not
 *   the node), and every span carries the `nodeID` tag of the node that ran it: both are checked.
 *   The trace id is the client's X-Request-ID: the gateway makes it the context's requestID,
 *   Moleculer uses the requestID as the trace id, and the exporter (legacy 64-bit ids) keeps its
 *   first 16 hex digits.
 * - Every node serves Prometheus metrics on its own `METRICS_PORT`, labelled with its nodeID.
 */
import crypto from "node:crypto";
import { SHOP_SERVICES } from "../../tools/cluster";
import {
	CLUSTER_ADMIN,
	startCluster,
	until,
	withOutputOnFailure,
	type TestCluster
} from "../support/cluster";
import {
	startJaegerCollector,
	type CollectedSpan,
	type JaegerCollector
} from "../support/jaeger-collector";
import { freePort } from "../support/ports";
import { api } from "../support/shop-process";

/** The nodeIDs of the cluster: one node per service. */
const NODE_IDS = SHOP_SERVICES.map(s => `${s}-1`);

/** Distinct free ports, one per nodeID. */
async function metricsPorts(): Promise<Record<string, number>> {
	const used = new Set<number>();
	const ports: Record<string, number> = {};
	for (const id of NODE_IDS) {
		let p = await freePort();
		while (used.has(p)) p = await freePort();
		used.add(p);
		ports[id] = p;
	}
	return ports;
}

describe("tracing and metrics across the nodes", () => {
	let collector: JaegerCollector;
	let cluster: TestCluster;
	let base: string;
	let ports: Record<string, number>;

	beforeAll(async () => {
		collector = await startJaegerCollector();
		ports = await metricsPorts();
		cluster = await startCluster({
			env: {
				TRACING_EXPORTER: "jaeger",
				JAEGER_ENDPOINT: `${collector.url}/api/traces`
			},
			nodeEnv: Object.fromEntries(
				NODE_IDS.map(id => [id, { METRICS_PORT: String(ports[id]) }])
			)
		});
		base = cluster.url!;
	}, 120_000);
	afterAll(async () => {
		await cluster?.stop();
		await collector?.stop();
	}, 60_000);

	it("one order: the gateway, orders and the saga's steps on inventory and payments share one trace, the client's X-Request-ID", () =>
		withOutputOnFailure(cluster, async () => {
			const admin = await api(base, "POST", "/api/users/login", { body: CLUSTER_ADMIN });
			expect(admin.status).toBe(200);
			const reg = await api(base, "POST", "/api/users/register", {
				body: {
					email: `trace-${crypto.randomBytes(4).toString("hex")}@example.com`,
					password: "correct horse battery",
					name: "Trace"
				}
			});
			expect(reg.status).toBe(201);
			const product = await api(base, "POST", "/api/products", {
				token: admin.body.token,
				body: {
					sku: `TRACE-${crypto.randomBytes(4).toString("hex")}`,
					name: "Traced widget",
					description: "Leaves a trace",
					price: 990,
					currency: "EUR",
					stock: 5
				}
			});
			expect(product.status).toBe(201);

			const requestId = crypto.randomUUID();
			const placed = await api(base, "POST", "/api/orders", {
				token: reg.body.token,
				headers: { "X-Request-ID": requestId },
				body: {
					items: [{ productId: product.body.id, quantity: 2 }],
					paymentMethod: "tok_visa"
				}
			});
			expect(placed.status).toBe(202);
			expect(placed.headers.get("x-request-id")).toBe(requestId);
			const orderId: string = placed.body.id;

			const order = await until(
				() => api(base, "GET", `/api/orders/${orderId}`, { token: reg.body.token }),
				r => r.body?.status === "CONFIRMED" || r.body?.status === "CANCELLED",
				30_000
			);
			expect(order.body.status).toBe("CONFIRMED");

			// The spans that belong to this order, each found by what it is and by its parent,
			// not by its trace id.
			const find = (spans: CollectedSpan[]) => {
				const gateway = spans.filter(
					s =>
						s.serviceName === "api" &&
						s.operationName === "POST /api/orders" &&
						s.tags.requestID === requestId
				);
				const create = spans.filter(
					s =>
						s.operationName === "action 'orders.create'" &&
						gateway.some(g => g.spanId === s.parentSpanId)
				);
				// Spans carry no params (moleculer.config.ts keeps secrets out of traces): a saga
				// step of this order is a child of this request's orders.create span.
				const step = (action: string) =>
					spans.filter(
						s =>
							s.operationName === `action '${action}'` &&
							create.some(c => c.spanId === s.parentSpanId)
					);
				return {
					gateway,
					create,
					reserve: step("inventory.reserve"),
					charge: step("payments.charge"),
					commit: step("inventory.commit")
				};
			};
			// jaeger-client flushes each node's buffer every second (RemoteReporter's default).
			const found = await until(
				async () => find(collector.spans()),
				f => Object.values(f).every(list => list.length > 0),
				15_000,
				200
			);
			expect(collector.errors()).toEqual([]);
			const missing = Object.keys(found).filter(
				k => found[k as keyof typeof found].length === 0
			);
			if (missing.length > 0)
				throw new Error(
					`No span for ${missing.join(", ")} of order ${orderId} (X-Request-ID ${requestId}) ` +
						`among the ${collector.spans().length} collected:\n` +
						collector
							.spans()
							.map(
								s =>
									`  ${s.traceId} ${s.spanId} <- ${s.parentSpanId ?? "root"} ${s.serviceName}: ${s.operationName} requestID=${s.tags.requestID}`
							)
							.join("\n")
				);
			expect(found.gateway).toHaveLength(1);
			expect(found.create).toHaveLength(1);
			expect(found.reserve).toHaveLength(1);
			expect(found.charge).toHaveLength(1);
			expect(found.commit).toHaveLength(1);

			const ofOrder = Object.values(found).flat();
			const traceIds = new Set(ofOrder.map(s => s.traceId));
			expect([...traceIds]).toEqual([found.gateway[0]!.traceId]);
			const traceId = found.gateway[0]!.traceId;

			// The client's X-Request-ID is the trace: its first 64 bits are the trace id, and it
			// travels whole as every span's requestID tag.
			expect(traceId).toBe(requestId.replace(/-/g, "").slice(0, 16));
			const trace = collector.spans().filter(s => s.traceId === traceId);
			for (const s of trace) expect(s.tags.requestID).toBe(requestId);

			// The process serviceName is the Moleculer service; the node is in the nodeID tag.
			const services = new Set(trace.map(s => s.serviceName));
			for (const name of ["api", "orders", "inventory", "payments"])
				expect(services).toContain(name);
			for (const s of trace) expect(s.tags.nodeID).toBe(`${s.serviceName}-1`);
			const nodes = new Set(trace.map(s => s.tags.nodeID));
			expect(nodes.size).toBeGreaterThanOrEqual(4);

			// One tree: the gateway's span is the only root; the saga's asynchronous step calls
			// hang under the span of orders.create that started the saga. A durable event's
			// consumer span (platform/tracing/event-span.ts) joins the trace as a root of its own:
			// the outbox keeps the request's trace id, not the producing span's id.
			expect(found.gateway[0]!.parentSpanId).toBeNull();
			const consumed = (s: CollectedSpan): boolean => s.operationName.startsWith("event '");
			const roots = trace.filter(s => s.parentSpanId === null && !consumed(s));
			expect(roots.map(r => r.spanId)).toEqual([found.gateway[0]!.spanId]);
			const ids = new Set(trace.map(s => s.spanId));
			for (const s of trace)
				if (s.parentSpanId !== null) expect(ids).toContain(s.parentSpanId);
			console.log(
				`tracing: ${collector.spans().length} spans collected in ${collector.batches()} batches; ` +
					`trace ${traceId} (X-Request-ID ${requestId}, order ${orderId}): ${trace.length} spans, ` +
					`${services.size} services [${[...services].sort().join(", ")}], ` +
					`${nodes.size} nodes [${[...nodes].sort().join(", ")}], ` +
					`${roots.length} root spans [${roots.map(r => `${r.serviceName}: ${r.operationName}`).join("; ")}]`
			);
		}));

	it("every node serves its own Prometheus metrics on its METRICS_PORT", () =>
		withOutputOnFailure(cluster, async () => {
			expect(cluster.nodes.map(n => n.nodeID).sort()).toEqual([...NODE_IDS].sort());
			const list = await api(base, "GET", "/api/products");
			expect(list.status).toBe(200);

			const summary: string[] = [];
			for (const nodeID of NODE_IDS) {
				const res = await fetch(`http://127.0.0.1:${ports[nodeID]}/metrics`);
				const text = await res.text();
				expect(res.status).toBe(200);
				expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
				const metrics = text.split("\n").filter(l => l.startsWith("moleculer_"));
				expect(metrics.length).toBeGreaterThan(0);
				// Every labelled sample is this node's, in the shop's namespace.
				const nodeLabels = new Set([...text.matchAll(/nodeID="([^"]*)"/g)].map(m => m[1]));
				expect([...nodeLabels]).toEqual([nodeID]);
				expect(text).toMatch(
					new RegExp(`^moleculer_node_type\\{[^}]*nodeID="${nodeID}"`, "m")
				);
				expect(text).toContain('namespace="shop"');
				summary.push(`${nodeID}:${ports[nodeID]} ${metrics.length} samples`);
			}

			// The products node counted the request it just served.
			const products = await (
				await fetch(`http://127.0.0.1:${ports["products-1"]}/metrics`)
			).text();
			const listed = products
				.split("\n")
				.find(
					l =>
						l.startsWith("moleculer_request_total{") &&
						l.includes('action="products.list"')
				);
			expect(listed).toBeDefined();
			expect(Number(listed!.split(" ").pop())).toBeGreaterThanOrEqual(1);
			console.log(`metrics: ${summary.join(", ")}`);
		}));
});
