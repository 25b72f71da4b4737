/**
 * OpenTelemetry tracing of the shop as separate nodes (one `moleculer-runner` process per service
 * over NATS), exported for real: every node runs `OTEL_TRACES_EXPORTER=otlp` with
 * `OTEL_EXPORTER_OTLP_ENDPOINT` at a local OTLP/HTTP receiver (test/support/otlp-receiver.ts),
 * which decodes the JSON export requests `OTLPTraceExporter` (@opentelemetry/exporter-trace-otlp-http)
 * sends to `/v1/traces`.
 *
 * One order is placed over REST with a known W3C `traceparent` (and `tracestate`): the answer
 * carries a `traceparent` of that trace naming the gateway's span, and the exported spans of
 * that trace id come from at least the api, orders, inventory and payments nodes (their
 * `service.instance.id`), each under its Moleculer service's `service.name`. They form one tree
 * hanging from the caller's span: the gateway's span is its only child of the caller, and the
 * saga's step calls (`inventory.reserve`, `payments.charge`, `inventory.commit`, run after the
 * 202 on the orders node) hang under the span of the `orders.create` that started the saga.
 */
import crypto from "node:crypto";
import {
	CLUSTER_ADMIN,
	startCluster,
	until,
	withOutputOnFailure,
	type TestCluster
} from "../support/cluster";
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from "../support/otlp-receiver";
import { api } from "../support/shop-process";

describe("OpenTelemetry tracing across the nodes (OTLP/HTTP, W3C trace context)", () => {
	let receiver: OtlpReceiver;
	let cluster: TestCluster;
	let base: string;

	beforeAll(async () => {
		receiver = await startOtlpReceiver();
		cluster = await startCluster({
			env: {
				OTEL_TRACES_EXPORTER: "otlp",
				OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
				// Spans leave each node within 200 ms (the SDK's default is 5 s).
				OTEL_BSP_SCHEDULE_DELAY: "200"
			}
		});
		base = cluster.url!;
	}, 120_000);
	afterAll(async () => {
		await cluster?.stop();
		await receiver?.stop();
	}, 60_000);

	it("an order placed with a known traceparent: its spans on api, orders, inventory and payments share the caller's trace, in one tree", () =>
		withOutputOnFailure(cluster, async () => {
			const admin = await api(base, "POST", "/api/users/login", { body: CLUSTER_ADMIN });
			expect(admin.status).toBe(200);
			const reg = await api(base, "POST", "/api/users/register", {
				body: {
					email: `otlp-${crypto.randomBytes(4).toString("hex")}@example.com`,
					password: "correct horse battery",
					name: "Otlp"
				}
			});
			expect(reg.status).toBe(201);
			const product = await api(base, "POST", "/api/products", {
				token: admin.body.token,
				body: {
					sku: `OTLP-${crypto.randomBytes(4).toString("hex")}`,
					name: "Traced widget",
					description: "Leaves a trace",
					price: 990,
					currency: "EUR",
					stock: 5
				}
			});
			expect(product.status).toBe(201);

			// The caller's trace: random, so no other request can share it.
			const traceId = crypto.randomBytes(16).toString("hex");
			const callerSpan = crypto.randomBytes(8).toString("hex");
			const placed = await api(base, "POST", "/api/orders", {
				token: reg.body.token,
				headers: {
					traceparent: `00-${traceId}-${callerSpan}-01`,
					tracestate: "shop-test=42"
				},
				body: {
					items: [{ productId: product.body.id, quantity: 2 }],
					paymentMethod: "tok_visa"
				}
			});
			expect(placed.status).toBe(202);
			// The request id (the log correlation id) is the trace id; the answer names the
			// gateway's span in that trace.
			expect(placed.headers.get("x-request-id")).toBe(traceId);
			const answered = placed.headers.get("traceparent");
			expect(answered).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
			const gatewaySpanId = answered!.split("-")[2]!;
			const orderId: string = placed.body.id;

			const order = await until(
				() => api(base, "GET", `/api/orders/${orderId}`, { token: reg.body.token }),
				r => r.body?.status === "CONFIRMED" || r.body?.status === "CANCELLED",
				30_000
			);
			expect(order.body.status).toBe("CONFIRMED");

			const find = (spans: ReceivedSpan[]) => {
				const trace = spans.filter(s => s.traceId === traceId);
				const gateway = trace.filter(s => s.spanId === gatewaySpanId);
				const create = trace.filter(
					s =>
						s.name === "action 'orders.create'" &&
						gateway.some(g => g.spanId === s.parentSpanId)
				);
				const step = (action: string) =>
					trace.filter(
						s =>
							s.name === `action '${action}'` &&
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
			const found = await until(
				async () => find(receiver.spans()),
				f => Object.values(f).every(list => list.length > 0),
				15_000,
				200
			);
			expect(receiver.errors()).toEqual([]);
			const missing = Object.keys(found).filter(
				k => found[k as keyof typeof found].length === 0
			);
			if (missing.length > 0)
				throw new Error(
					`No span for ${missing.join(", ")} of order ${orderId} (trace ${traceId}) among the ` +
						`${receiver.spans().length} received:\n` +
						receiver
							.spans()
							.map(
								s =>
									`  ${s.traceId} ${s.spanId} <- ${s.parentSpanId ?? "root"} ${s.serviceName}@${s.resource["service.instance.id"]}: ${s.name}`
							)
							.join("\n")
				);
			for (const list of Object.values(found)) expect(list).toHaveLength(1);
			const gateway = found.gateway[0]!;
			expect(gateway.name).toBe("POST /api/orders");
			expect(gateway.parentSpanId).toBe(callerSpan);
			expect(gateway.kind).toBe(2); // SERVER

			// Let the last batches arrive (the steps' spans came; their callers' may lag a flush).
			await new Promise(r => setTimeout(r, 600));
			const trace = receiver.spans().filter(s => s.traceId === traceId);

			// service.name is the Moleculer service; service.instance.id the node that ran it.
			const services = new Set(trace.map(s => s.serviceName));
			const nodes = new Set(trace.map(s => String(s.resource["service.instance.id"])));
			for (const name of ["api", "orders", "inventory", "payments"]) {
				expect(services).toContain(name);
				expect(nodes).toContain(`${name}-1`);
			}
			for (const s of trace) {
				expect(s.resource["service.instance.id"]).toBe(`${s.serviceName}-1`);
				expect(s.attributes.nodeID).toBe(`${s.serviceName}-1`);
				expect(s.resource["service.namespace"]).toBe("shop");
				expect(s.attributes.requestID).toBe(traceId);
			}
			// The calls of the request itself carry its tracestate across the nodes.
			expect(gateway.traceState).toBe("shop-test=42");
			expect(found.create[0]!.traceState).toBe("shop-test=42");

			// One tree: the caller's span is the only parent outside the trace, the gateway's span
			// its only child. (A durable event's consumer span, when consumers record one, joins
			// the trace at its own root: platform/tracing/event-span.ts.)
			const ids = new Set(trace.map(s => s.spanId));
			const outside = trace.filter(
				s => (s.parentSpanId === null || !ids.has(s.parentSpanId)) && s.kind !== 5
			);
			expect(outside.map(s => s.spanId)).toEqual([gateway.spanId]);
			// The durable event of the confirmation, consumed by notifications, in the same trace.
			const consumed = await until(
				async () =>
					receiver
						.spans()
						.filter(
							s =>
								s.traceId === traceId &&
								s.kind === 5 &&
								s.name.startsWith("event 'order.confirmed' consumed by ")
						),
				list => list.length > 0,
				15_000,
				200
			);
			expect(consumed.length).toBeGreaterThan(0);
			expect(consumed[0]!.serviceName).toBe("notifications");
			expect(consumed[0]!.attributes.outcome).toBe("applied");
			console.log(
				`otlp: ${receiver.spans().length} spans in ${receiver.requests()} export requests; ` +
					`trace ${traceId} (order ${orderId}): ${trace.length} spans, ` +
					`services [${[...services].sort().join(", ")}], nodes [${[...nodes].sort().join(", ")}]`
			);
		}));
});
