/**
 * Graceful degradation (issue #6, part 4), with each service in its own `moleculer-runner` process
 * over NATS JetStream:
 *
 * - `/ready` names what failed: a stopped service node makes the gateway's `/ready` answer 503
 *   with that service's check failing (and the others "ok"); 200 again once it is back.
 * - Payments down: an order does not fail at once. Its saga reserves the stock and retries the
 *   charge (transient SERVICE_NOT_FOUND / SERVICE_NOT_AVAILABLE) within its deadline, the order
 *   stays PENDING/STOCK_RESERVED meanwhile; payments back before the deadline, the order ends
 *   CONFIRMED, its saga log showing several charge attempts.
 * - The notifications database away (notifications on a private Postgres of its own, stopped with
 *   a fast shutdown while orders are confirmed): the order events wait for it instead of using up
 *   their deliveries; once it is back every order has its one notification, nothing is
 *   dead-lettered.
 * - A node that keeps failing opens a circuit breaker, and the breaker's state shows in the
 *   Prometheus metrics (METRICS_PORT): during a simulated outage of the whole processor
 *   (`payments.simulateOutage`: every card fails with PAYMENTS_PROCESSOR_UNAVAILABLE, 503,
 *   `data.scope: "processor"`, on every retry of the saga; one token's failures,
 *   `tok_processorUnavailable`, are not counted) orders open the breaker of endpoint `payments-1` / `payments.charge`: `moleculer_circuit_breaker_opened_active`
 *   becomes 1 and `moleculer_circuit_breaker_opened_total` counts it. Moleculer keeps a breaker on
 *   every node that calls the endpoint, the failing node itself included (its breaker wraps local
 *   actions too): whichever of the two sees half of 20 calls fail first opens, and once the
 *   payments node's own one is open it refuses with SERVICE_NOT_AVAILABLE (404, not a breaker
 *   failure for the caller). So the test reads both nodes' `/metrics`, as a dashboard would take
 *   the maximum over the cluster; the orders meanwhile wait, none fails.
 *
 * Needs `npm run build` (the nodes run dist/).
 */
import crypto from "node:crypto";
import { Client } from "pg";
import { freePort } from "../support/ports";
import { startPrivatePostgres, type PrivatePostgres } from "../support/postgres";
import { api } from "../support/shop-process";
import {
	CLUSTER_ADMIN,
	startCluster,
	until,
	withOutputOnFailure,
	type TestCluster
} from "../support/cluster";

/** `url` naming database `name` (its query, e.g. the socket directory, kept). */
function withDatabase(url: string, name: string): string {
	const u = new URL(url);
	u.pathname = `/${name}`;
	return u.toString();
}

const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

/** The saga deadline of this suite's orders, in ms. */
const DEADLINE_MS = 60_000;

interface SagaStep {
	stepName: string;
	phase: string;
	status: string;
	error: { type: string } | null;
}
interface SagaDetail {
	id: string;
	status: string;
	attempts: number;
	steps: SagaStep[];
}

describe("graceful degradation", () => {
	let notificationsPg: PrivatePostgres;
	let cluster: TestCluster;
	let base: string;
	let token: string;
	let productId: string;
	/** Prometheus ports of the nodes whose metrics the breaker test reads. */
	const metricsPorts: Record<string, number> = {};
	const NOTIFICATIONS_DB = "degradation_notifications";

	/** Runs `text` on the notifications database (on its private Postgres). */
	async function notificationsSql<T>(text: string, values: unknown[] = []): Promise<T[]> {
		const client = new Client({
			connectionString: withDatabase(notificationsPg.url, NOTIFICATIONS_DB)
		});
		await client.connect();
		try {
			return (await client.query(text, values)).rows as T[];
		} finally {
			await client.end();
		}
	}

	/** Places one order of `quantity` units of the suite's product. */
	async function placeOrder(paymentMethod = "tok_visa", quantity = 1): Promise<string> {
		const r = await api(base, "POST", "/api/orders", {
			token,
			headers: { "Idempotency-Key": crypto.randomUUID() },
			body: { items: [{ productId, quantity }], paymentMethod }
		});
		expect(r.status).toBe(202);
		return r.body.id as string;
	}

	const getOrder = async (
		id: string
	): Promise<{ status: string; cancellationReason: string | null }> =>
		(await api(base, "GET", `/api/orders/${id}`, { token })).body;

	/** The saga of an order, with its step log (operators' actions, called in the cluster). */
	async function sagaOf(orderId: string): Promise<SagaDetail> {
		const list: { rows: { id: string; orderId: string }[] } = await cluster.broker.call(
			"orders.listSagas",
			{ pageSize: 100 }
		);
		const row = list.rows.find(s => s.orderId === orderId);
		if (!row) throw new Error(`No saga for order ${orderId}`);
		return cluster.broker.call("orders.getSaga", { id: row.id });
	}

	/** The value of the first sample of `name` on a node's /metrics whose labels match. */
	async function metric(
		nodeID: string,
		name: string,
		labels: Record<string, string>
	): Promise<number | null> {
		const text = await (await fetch(`http://127.0.0.1:${metricsPorts[nodeID]}/metrics`)).text();
		const line = text
			.split("\n")
			.find(
				l =>
					l.startsWith(`${name}{`) &&
					Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`))
			);
		return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : null;
	}

	beforeAll(async () => {
		notificationsPg = await startPrivatePostgres();
		metricsPorts["orders-1"] = await freePort();
		metricsPorts["payments-1"] = await freePort();
		cluster = await startCluster({
			env: { SAGA_DEADLINE_MS: String(DEADLINE_MS) },
			nodeEnv: {
				"orders-1": { METRICS_PORT: String(metricsPorts["orders-1"]) },
				"payments-1": { METRICS_PORT: String(metricsPorts["payments-1"]) },
				"notifications-1": {
					NOTIFICATIONS_DATABASE_URL: withDatabase(notificationsPg.url, NOTIFICATIONS_DB)
				}
			}
		});
		base = cluster.url!;
		const admin = await api(base, "POST", "/api/users/login", { body: CLUSTER_ADMIN });
		expect(admin.status).toBe(200);
		const product = await api(base, "POST", "/api/products", {
			token: admin.body.token,
			body: {
				sku: `DEGRADE-${crypto.randomBytes(4).toString("hex")}`,
				name: "Patient parcel",
				description: "Waits for its dependencies",
				price: 4200,
				currency: "EUR",
				stock: 10_000
			}
		});
		expect(product.status).toBe(201);
		productId = product.body.id;
		const reg = await api(base, "POST", "/api/users/register", {
			body: {
				email: `degrade-${crypto.randomBytes(4).toString("hex")}@example.com`,
				password: "correct horse battery",
				name: "Degrade"
			}
		});
		expect(reg.status).toBe(201);
		token = reg.body.token;
	}, 180_000);

	afterAll(async () => {
		await cluster?.stop();
		await notificationsPg?.stop();
	}, 90_000);

	it(
		"/ready answers 503 naming a stopped service node, 200 again once it is back",
		() =>
			withOutputOnFailure(cluster, async () => {
				const ready = await api(base, "GET", "/ready");
				expect(ready.status).toBe(200);
				expect(Object.values(ready.body.checks).every(v => v === "ok")).toBe(true);

				const payments = cluster.node("payments-1");
				await payments.kill("SIGTERM");
				const down = await until(
					() => api(base, "GET", "/ready"),
					r => r.status === 503,
					20_000,
					200
				);
				expect(down.status).toBe(503);
				expect(down.body.status).toBe("unavailable");
				expect(["SERVICE_NOT_FOUND", "SERVICE_NOT_AVAILABLE"]).toContain(
					down.body.checks.payments
				);
				const others = Object.entries(down.body.checks).filter(([k]) => k !== "payments");
				expect(others.length).toBeGreaterThanOrEqual(6); // transporter and five services
				expect(others.filter(([, v]) => v !== "ok")).toEqual([]);

				await payments.restart();
				const back = await api(base, "GET", "/ready");
				expect(back.status).toBe(200);
				expect(back.body.checks.payments).toBe("ok");
			}),
		90_000
	);

	it(
		"payments down: the order waits and retries within its deadline, then is CONFIRMED",
		() =>
			withOutputOnFailure(cluster, async () => {
				const payments = cluster.node("payments-1");
				await payments.kill("SIGTERM");
				await until(
					() => api(base, "GET", "/ready"),
					r => r.body?.checks?.payments !== "ok",
					20_000,
					200
				);
				const placedAt = Date.now();
				const orderId = await placeOrder();

				// Several seconds without payments: never cancelled, the stock held meanwhile.
				const seen = new Set<string>();
				while (Date.now() - placedAt < 8_000) {
					const o = await getOrder(orderId);
					seen.add(o.status);
					expect(["PENDING", "STOCK_RESERVED"]).toContain(o.status);
					await sleep(250);
				}
				expect(seen).toContain("STOCK_RESERVED");
				const waiting = await sagaOf(orderId);
				expect(waiting.status).toBe("RUNNING");
				const failedCharges = waiting.steps.filter(
					s => s.stepName === "chargePayment" && s.phase === "forward"
				);
				expect(failedCharges.length).toBeGreaterThan(1);
				for (const s of failedCharges.filter(x => x.status === "FAILED"))
					expect(["SERVICE_NOT_FOUND", "SERVICE_NOT_AVAILABLE"]).toContain(s.error?.type);

				// Back before the deadline: the next attempt charges, the order is confirmed.
				await payments.restart();
				const ended = await until(
					() => getOrder(orderId),
					o => o.status === "CONFIRMED" || o.status === "CANCELLED",
					30_000,
					250
				);
				expect(ended.status).toBe("CONFIRMED");
				expect(Date.now() - placedAt).toBeLessThan(DEADLINE_MS);
				const saga = await sagaOf(orderId);
				expect(saga.status).toBe("COMPLETED");
				const charges = saga.steps.filter(
					s => s.stepName === "chargePayment" && s.phase === "forward"
				);
				expect(charges.length).toBeGreaterThan(1);
				expect(charges.at(-1)!.status).toBe("SUCCEEDED");
				// One attempt per step would be 4; the charge alone took several.
				expect(saga.attempts).toBeGreaterThan(saga.steps.length - charges.length + 1);
				expect(saga.steps.some(s => s.phase === "compensate")).toBe(false);
				expect(await cluster.broker.call("payments.get", { orderId })).toMatchObject({
					status: "CAPTURED",
					amount: 4200
				});
				console.log(
					`degradation: order ${orderId} waited for payments through ${charges.length} charge attempts (${saga.attempts} step attempts), CONFIRMED after ${Date.now() - placedAt} ms`
				);
			}),
		120_000
	);

	it(
		"the notifications database away: events wait for it, every order gets its one notification",
		() =>
			withOutputOnFailure(cluster, async () => {
				await notificationsPg.down();
				const ids: string[] = [];
				for (let i = 0; i < 10; i++) ids.push(await placeOrder());
				const ended = await until(
					() => Promise.all(ids.map(getOrder)),
					os => os.every(o => o.status === "CONFIRMED"),
					30_000,
					250
				);
				expect(ended.map(o => o.status)).toEqual(ids.map(() => "CONFIRMED"));
				// Longer than every redelivery backoff of EVENT_MAX_DELIVER (5) deliveries together
				// (0.2 + 0.4 + 0.8 + 1.6 s): deliveries spent on the outage would be gone by now.
				await sleep(8_000);
				await notificationsPg.up();

				const rows = await until(
					() =>
						notificationsSql<{ order_id: string; kind: string }>(
							"SELECT order_id, kind FROM notifications WHERE order_id = ANY($1::uuid[])",
							[ids]
						).catch(() => []),
					r => r.length >= ids.length,
					30_000,
					500
				);
				await sleep(1_000); // a duplicate would show by now
				const again = await notificationsSql<{ order_id: string; kind: string }>(
					"SELECT order_id, kind FROM notifications WHERE order_id = ANY($1::uuid[])",
					[ids]
				);
				expect(rows.length).toBe(ids.length);
				expect(again.map(r => r.order_id).sort()).toEqual([...ids].sort());
				expect(new Set(again.map(r => r.kind))).toEqual(new Set(["ORDER_CONFIRMED"]));
				const dead = await notificationsSql<{ n: number }>(
					"SELECT count(*)::int AS n FROM dead_letters"
				);
				expect(dead[0]!.n).toBe(0);
			}),
		120_000
	);

	it(
		"a node that keeps failing opens a circuit breaker, visible in /metrics",
		() =>
			withOutputOnFailure(cluster, async () => {
				const labels = {
					affectedNodeID: "payments-1",
					service: "payments",
					action: "payments.charge"
				};
				const nodes = ["orders-1", "payments-1"];
				/** Nodes whose breaker for the endpoint is open now. */
				const openOn = async (): Promise<string[]> => {
					const open: string[] = [];
					for (const n of nodes)
						if (
							(await metric(n, "moleculer_circuit_breaker_opened_active", labels)) ===
							1
						)
							open.push(n);
					return open;
				};
				expect(await openOn()).toEqual([]);

				// The processor down for every card: each of these sagas retries the charge, which
				// keeps failing with 503. The outage lasts until the orders are cancelled.
				await cluster.broker.call("payments.simulateOutage", { durationMs: 120_000 });
				try {
					const ids: string[] = [];
					for (let i = 0; i < 12; i++) ids.push(await placeOrder("tok_visa"));
					const open = await until(openOn, o => o.length > 0, 30_000, 250);
					expect(open.length).toBeGreaterThan(0);
					for (const n of open)
						expect(
							await metric(n, "moleculer_circuit_breaker_opened_total", labels)
						).toBeGreaterThanOrEqual(1);
					console.log(
						`degradation: breaker for payments-1/payments.charge open on ${open}`
					);

					// Meanwhile the orders wait (a transient failure), none has failed.
					for (const id of ids)
						expect(["PENDING", "STOCK_RESERVED"]).toContain(
							(await getOrder(id)).status
						);
					// Let them go: the customer cancels, the sagas compensate.
					for (const id of ids)
						expect(
							(await api(base, "POST", `/api/orders/${id}/cancel`, { token })).status
						).toBe(202);
					const cancelled = await until(
						() => Promise.all(ids.map(getOrder)),
						os => os.every(o => o.status === "CANCELLED"),
						30_000,
						250
					);
					expect(new Set(cancelled.map(o => o.cancellationReason))).toEqual(
						new Set(["CANCELLED_BY_CUSTOMER"])
					);
				} finally {
					await cluster.broker.call("payments.simulateOutage", { durationMs: 0 });
				}
			}),
		90_000
	);
});
