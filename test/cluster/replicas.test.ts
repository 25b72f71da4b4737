/**
 * Replicas over NATS: two `inventory` nodes (separate `moleculer-runner` processes) both take
 * requests; one is SIGKILLed while customers keep ordering, and no order is lost; restarted, it
 * rejoins and serves again. Who served what is read from each node's own Prometheus endpoint
 * (`moleculer_request_total` for `inventory.reserve`), whose counters start at zero per process.
 */
import crypto from "node:crypto";
import { isOverloaded, placeOrder } from "../support/overload-retry";
import { freePort } from "../support/ports";
import { api } from "../support/shop-process";
import {
	CLUSTER_ADMIN,
	startCluster,
	until,
	withOutputOnFailure,
	type TestCluster
} from "../support/cluster";

const CUSTOMERS = 4;
const STOCK = 1_000;

/** `inventory.reserve` requests this node has handled, from its /metrics. */
async function reservesServed(metricsPort: number): Promise<number> {
	const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
	const text = await res.text();
	let n = 0;
	for (const line of text.split("\n"))
		if (
			line.startsWith("moleculer_request_total{") &&
			line.includes('action="inventory.reserve"')
		)
			n += Number(line.slice(line.lastIndexOf(" ") + 1));
	return n;
}

describe("two inventory replicas: both serve, one dies under load, nothing is lost", () => {
	let cluster: TestCluster;
	let base: string;
	const metrics: Record<string, number> = {};

	beforeAll(async () => {
		metrics["inventory-1"] = await freePort();
		metrics["inventory-2"] = await freePort();
		cluster = await startCluster({
			replicas: { inventory: 2 },
			nodeEnv: {
				"inventory-1": { METRICS_PORT: String(metrics["inventory-1"]) },
				"inventory-2": { METRICS_PORT: String(metrics["inventory-2"]) }
			}
		});
		base = cluster.url!;
	}, 120_000);
	afterAll(async () => cluster?.stop(), 60_000);

	it(
		"keeps every order and every unit of stock through a SIGKILL and a restart",
		() =>
			withOutputOnFailure(cluster, async () => {
				const admin = await api(base, "POST", "/api/users/login", { body: CLUSTER_ADMIN });
				const products: string[] = [];
				for (let i = 0; i < 3; i++) {
					const p = await api(base, "POST", "/api/products", {
						token: admin.body.token,
						body: {
							sku: `REP-${crypto.randomBytes(4).toString("hex")}`,
							name: `Replica item ${i}`,
							description: "Ordered while nodes die",
							price: 500 + i,
							currency: "USD",
							stock: STOCK
						}
					});
					expect(p.status).toBe(201);
					products.push(p.body.id);
				}
				const tokens: string[] = [];
				for (let i = 0; i < CUSTOMERS; i++) {
					const r = await api(base, "POST", "/api/users/register", {
						body: {
							email: `rep-${i}-${crypto.randomBytes(3).toString("hex")}@example.com`,
							password: "correct horse battery",
							name: `Customer ${i}`
						}
					});
					expect(r.status).toBe(201);
					tokens.push(r.body.token);
				}

				const placed: { id: string; token: string; productId: string; quantity: number }[] =
					[];
				const refused: number[] = [];
				let running = true;
				/** One customer ordering back to back until told to stop. */
				const customerLoop = async (token: string, c: number): Promise<void> => {
					for (let n = 0; running; n++) {
						const productId = products[(c + n) % products.length]!;
						const quantity = 1 + (n % 3);
						// 503 ORDERS_OVERLOADED (the orders node's adaptive limit) is retried
						// after Retry-After with the same key, as a client does.
						const r = await placeOrder(base, {
							token,
							idempotencyKey: `rep-${c}-${n}`,
							body: { items: [{ productId, quantity }], paymentMethod: "tok_visa" },
							stop: () => !running
						});
						if (r.status === 202)
							placed.push({ id: r.body.id, token, productId, quantity });
						else if (!(isOverloaded(r) && !running)) refused.push(r.status);
					}
				};
				const load = tokens.map((t, c) => customerLoop(t, c));

				// Both replicas take reservations.
				const both = await until(
					async () => [
						await reservesServed(metrics["inventory-1"]!),
						await reservesServed(metrics["inventory-2"]!)
					],
					([a, b]) => a! >= 5 && b! >= 5,
					30_000,
					200
				);
				expect(both[0]).toBeGreaterThanOrEqual(5);
				expect(both[1]).toBeGreaterThanOrEqual(5);

				// Kill one under load; keep ordering a while longer.
				const beforeKill = placed.length;
				await cluster.node("inventory-2").kill("SIGKILL");
				await until(
					async () => placed.length,
					n => n >= beforeKill + 40,
					60_000,
					100
				);
				running = false;
				await Promise.all(load);

				// Every accepted order ends, and with plenty of stock and a good card it is confirmed.
				const ended = await Promise.all(
					placed.map(p =>
						until(
							() => api(base, "GET", `/api/orders/${p.id}`, { token: p.token }),
							r =>
								r.status === 200 &&
								["CONFIRMED", "CANCELLED"].includes(r.body.status),
							60_000,
							250
						)
					)
				);
				const statuses = ended.map(r =>
					r.status === 200 ? r.body.status : `HTTP ${r.status}`
				);
				const notConfirmed = ended.filter(r => r.body.status !== "CONFIRMED");
				expect(
					notConfirmed.map(r => [r.body.id, r.body.status, r.body.cancellationReason])
				).toEqual([]);
				expect(refused).toEqual([]);

				// Stock: sold exactly what was confirmed; nothing left reserved.
				for (const productId of products) {
					const sold = placed
						.filter(p => p.productId === productId)
						.reduce((s, p) => s + p.quantity, 0);
					const level = await until(
						() => api(base, "GET", `/api/inventory/${productId}`),
						r => r.status === 200 && r.body.reserved === 0,
						20_000,
						200
					);
					expect(level.body).toMatchObject({ onHand: STOCK - sold, reserved: 0 });
				}

				// Restarted, it rejoins and serves (its fresh counters start at zero).
				await cluster.node("inventory-2").restart();
				expect(await reservesServed(metrics["inventory-2"]!)).toBe(0);
				const again = await Promise.all(
					Array.from({ length: 16 }, (_, i) =>
						placeOrder(base, {
							token: tokens[i % CUSTOMERS]!,
							body: {
								items: [{ productId: products[i % products.length]!, quantity: 1 }],
								paymentMethod: "tok_visa"
							}
						})
					)
				);
				expect(again.map(r => r.status)).toEqual(again.map(() => 202));
				const served = await until(
					() => reservesServed(metrics["inventory-2"]!),
					n => n > 0,
					20_000,
					200
				);
				expect(served).toBeGreaterThan(0);
				console.log(
					`replicas: ${placed.length} orders under load (${placed.length - beforeKill} after ` +
						`SIGKILL of inventory-2), statuses ${JSON.stringify(countBy(statuses))}; ` +
						`reserves before kill inventory-1=${both[0]} inventory-2=${both[1]}; ` +
						`after restart inventory-2 served ${served} of 16`
				);
			}),
		240_000
	);
});

function countBy(xs: string[]): Record<string, number> {
	const out: Record<string, number> = {};
	for (const x of xs) out[x] = (out[x] ?? 0) + 1;
	return out;
}
