/**
 * Structured logs across the nodes (one `moleculer-runner` process per service over NATS), in
 * production form (`LOG_FORMAT=json`): two orders are placed at the same time, each with its own
 * `X-Request-ID`, one paid and one declined. Grepping all the nodes' output for one request id
 * must find that order's whole story, and only that order's: the gateway's access line, the
 * order placed and its saga (orders), the reservation and its commit or release (inventory), the
 * payment (payments) and the durable consumer applying `order.confirmed` / `order.cancelled`
 * (notifications, after the event went through the outbox and JetStream). Every such line is one
 * JSON object with `requestId`, `nodeID` and `svc`. No password or token reaches any log.
 */
import crypto from "node:crypto";
import {
	CLUSTER_ADMIN,
	startCluster,
	until,
	withOutputOnFailure,
	type TestCluster
} from "../support/cluster";
import { api } from "../support/shop-process";

type LogLine = Record<string, unknown> & { requestId?: string; nodeID?: string; svc?: string };

describe("request-correlated JSON logs across the nodes", () => {
	let cluster: TestCluster;
	let base: string;

	beforeAll(async () => {
		cluster = await startCluster({ env: { LOG_FORMAT: "json", LOGLEVEL: "info" } });
		base = cluster.url!;
	}, 120_000);
	afterAll(async () => {
		await cluster?.stop();
	}, 60_000);

	/** The lines of a node's output that contain `text`. */
	const grep = (nodeID: string, text: string): string[] =>
		cluster
			.node(nodeID)
			.output()
			.split("\n")
			.filter(l => l.includes(text));

	it(
		"one grep of a request id finds its order's story on every node, as JSON lines",
		() =>
			withOutputOnFailure(cluster, async () => {
				const admin = await api(base, "POST", "/api/users/login", { body: CLUSTER_ADMIN });
				expect(admin.status).toBe(200);
				const password = `Pw-${crypto.randomBytes(12).toString("base64url")}-9z`;
				const reg = await api(base, "POST", "/api/users/register", {
					body: {
						email: `logs-${crypto.randomBytes(4).toString("hex")}@example.com`,
						password,
						name: "Logs"
					}
				});
				expect(reg.status).toBe(201);
				const token = reg.body.token as string;
				const product = await api(base, "POST", "/api/products", {
					token: admin.body.token,
					body: {
						sku: `LOGS-${crypto.randomBytes(4).toString("hex")}`,
						name: "Logged widget",
						price: 1250,
						currency: "EUR",
						stock: 10
					}
				});
				expect(product.status).toBe(201);

				const paidId = `paid-${crypto.randomUUID()}`;
				const declinedId = `declined-${crypto.randomUUID()}`;
				const place = (requestId: string, paymentMethod: string) =>
					api(base, "POST", "/api/orders", {
						token,
						headers: { "X-Request-ID": requestId },
						body: {
							items: [{ productId: product.body.id, quantity: 1 }],
							paymentMethod
						}
					});
				const [paid, declined] = await Promise.all([
					place(paidId, "tok_visa"),
					place(declinedId, "tok_chargeDeclined")
				]);
				expect([paid.status, declined.status]).toEqual([202, 202]);
				expect(paid.headers.get("x-request-id")).toBe(paidId);
				const orderOf: Record<string, string> = {
					[paidId]: paid.body.id,
					[declinedId]: declined.body.id
				};

				// Both sagas end and the notifications consumer records both e-mails.
				const notes = await until(
					() => api(base, "GET", "/api/notifications", { token }),
					r => r.body?.rows?.length === 2,
					30_000
				);
				expect(notes.body.rows.map((n: { kind: string }) => n.kind).sort()).toEqual([
					"ORDER_CANCELLED",
					"ORDER_CONFIRMED"
				]);
				// The consumer logs after its transaction commits; give it a moment to be flushed.
				await until(
					async () => grep("notifications-1", declinedId).length,
					n => n > 0,
					10_000
				);

				for (const requestId of [paidId, declinedId]) {
					const otherOrder = orderOf[requestId === paidId ? declinedId : paidId]!;
					const story: Record<string, LogLine[]> = {};
					for (const node of cluster.nodes) {
						const lines = grep(node.nodeID, requestId);
						story[node.nodeID] = lines.map(l => {
							// Each line is one JSON object carrying the id, its node and its service.
							const parsed = JSON.parse(l) as LogLine;
							expect(parsed.requestId).toBe(requestId);
							expect(parsed.nodeID).toBe(node.nodeID);
							expect(typeof parsed.svc).toBe("string");
							expect(typeof parsed.msg).toBe("string");
							expect(typeof parsed.time).toBe("string");
							// Under concurrency, no line of this request is about the other order.
							expect(l).not.toContain(otherOrder);
							return parsed;
						});
					}
					const msgs = (nodeID: string): string =>
						(story[nodeID] ?? []).map(l => String(l.msg)).join("\n");
					const order = orderOf[requestId]!;
					expect(story["api-1"]!.every(l => l.svc === "api")).toBe(true);
					expect(msgs("api-1")).toMatch(/<= 202 POST \/api\/orders/);
					expect(msgs("orders-1")).toContain(`Order ${order} placed`);
					expect(msgs("inventory-1")).toContain(
						`Reservation for order ${order} RESERVED`
					);
					expect(msgs("notifications-1")).toMatch(
						/: applied order\.(confirmed|cancelled) /
					);
					if (requestId === paidId) {
						expect(msgs("orders-1")).toMatch(/Saga \S+ \(order\) COMPLETED/);
						expect(msgs("payments-1")).toContain(`Payment CAPTURED for order ${order}`);
						expect(msgs("inventory-1")).toContain(
							`Reservation for order ${order} COMMITTED`
						);
						expect(msgs("notifications-1")).toContain("applied order.confirmed");
					} else {
						expect(msgs("orders-1")).toMatch(
							/Saga \S+ \(order\) compensating: PAYMENT_DECLINED/
						);
						expect(msgs("orders-1")).toMatch(
							/Saga \S+ \(order\) COMPENSATED \(PAYMENT_DECLINED\)/
						);
						expect(msgs("payments-1")).toContain(`Payment DECLINED for order ${order}`);
						expect(msgs("inventory-1")).toContain(
							`Reservation for order ${order} RELEASED`
						);
						expect(msgs("notifications-1")).toContain("applied order.cancelled");
					}
					for (const nodeID of [
						"api-1",
						"orders-1",
						"inventory-1",
						"payments-1",
						"notifications-1"
					])
						expect({ nodeID, lines: story[nodeID]!.length > 0 }).toEqual({
							nodeID,
							lines: true
						});
				}

				// Production form: every line a node logged is JSON (the harness's own notes aside).
				for (const node of cluster.nodes)
					for (const line of node.output().split("\n")) {
						if (line.trim() === "" || /^\[\S+ (exited|restarting|failed)/.test(line))
							continue;
						expect({ node: node.nodeID, line, json: line.startsWith("{") }).toEqual({
							node: node.nodeID,
							line,
							json: true
						});
					}
				// Secrets never reach a log: neither the password nor the tokens.
				const all = cluster.outputs();
				expect(all).not.toContain(password);
				expect(all).not.toContain(token);
				expect(all).not.toContain(CLUSTER_ADMIN.password);
				expect(all).not.toContain(admin.body.token as string);
			}),
		90_000
	);
});
