/**
 * The cluster form's replicas of every stateful service (two `orders`, two `inventory`, two
 * `payments`, two `notifications`, each a `moleculer-runner` process over a real nats-server with
 * JetStream, on the jest run's Postgres), and the three mechanisms that make two nodes of one
 * service safe, each shown across the replicas:
 *
 * - saga leases (platform/saga/store.ts): both orders nodes drive sagas, each saga's steps run once
 *   (one charge, one reservation per order); an orders node that dies mid-saga (SAGA_FAULTS
 *   `crash-before:chargePayment`, a SIGKILL of itself) and is NOT restarted leaves its saga to the
 *   other node, which claims it once the lease expires and drives it to the end;
 * - the outbox relay's single-publisher lock (platform/events/outbox.ts `lockPendingRows`, a
 *   transaction-scoped advisory lock per service database): the two relays of orders, inventory
 *   and payments publish every row once between them (their `published` counts add up to the
 *   rows, JetStream dropped no re-send as a duplicate), and when one orders node dies the other's
 *   relay publishes the rest;
 * - the consumers' groups (platform/events/consumers.ts: one durable JetStream consumer per
 *   service and event, shared by its nodes): both notifications nodes take events, each event is
 *   applied once between them (their `shop_events_processed_total` add up to the inbox's rows), and
 *   with one SIGKILLed the other takes everything, still one notification per order.
 *
 * Counts come from the databases and each node's own /metrics and `<service>.outboxStatus`.
 * test/cluster/replicas.test.ts covers two inventory nodes under a SIGKILL, and
 * test/cluster/fault-tolerance.test.ts Moleculer's balanced events by group.
 */
import crypto from "node:crypto";
import { Client } from "pg";
import { EVENTS_STREAM } from "../../platform/events/jetstream";
import { placeOrder } from "../support/overload-retry";
import { freePort } from "../support/ports";
import { api } from "../support/shop-process";
import {
	CLUSTER_ADMIN,
	startCluster,
	until,
	withOutputOnFailure,
	type TestCluster
} from "../support/cluster";

const REPLICATED = ["orders", "inventory", "payments", "notifications"] as const;
const OUTBOX_SERVICES = ["orders", "inventory", "payments"] as const;
const NODES = REPLICATED.flatMap(s => [`${s}-1`, `${s}-2`]);
const STOCK = 1_000;
const CUSTOMERS = 4;
/** A short lease so that a dead node's saga is claimed within seconds. */
const SAGA_LEASE_MS = 3_000;

interface OutboxStatus {
	pending: number;
	published: number;
	serverDuplicates: number;
	mode: string;
}

describe("two nodes of each stateful service: saga leases, outbox lock and consumer groups across them", () => {
	let cluster: TestCluster;
	let base: string;
	const metricsPort: Record<string, number> = {};
	const tokens: string[] = [];
	const products: string[] = [];
	/** Every order the shop accepted (202), with what it bought. */
	const placed: { id: string; productId: string; quantity: number }[] = [];
	const refused: string[] = [];
	const report: Record<string, unknown> = {};

	/** Runs `text` on the cluster's database of `service`. */
	async function sql<T = Record<string, unknown>>(
		service: string,
		text: string,
		values: unknown[] = []
	): Promise<T[]> {
		const u = new URL(process.env.DATABASE_URL!);
		u.pathname = `/${cluster.prefix}${service}`;
		const client = new Client({ connectionString: u.toString() });
		await client.connect();
		try {
			return (await client.query(text, values)).rows as T[];
		} finally {
			await client.end();
		}
	}

	/**
	 * The sum of a counter's samples on a node's /metrics (0 if none), only those labelled
	 * `service="<service>"` when given.
	 */
	async function counter(nodeID: string, name: string, service?: string): Promise<number> {
		const text = await (await fetch(`http://127.0.0.1:${metricsPort[nodeID]}/metrics`)).text();
		return text
			.split("\n")
			.filter(l => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
			.filter(l => service === undefined || l.includes(`service="${service}"`))
			.reduce((s, l) => s + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
	}

	/** The messages SHOP_EVENTS holds, from the NATS server's monitoring endpoint. */
	async function streamMessages(): Promise<number> {
		const res = await fetch(`${cluster.nats.monitorUrl}/jsz?streams=true`);
		const jsz = (await res.json()) as {
			account_details?: { stream_detail?: { name: string; state: { messages: number } }[] }[];
		};
		const stream = (jsz.account_details ?? [])
			.flatMap(a => a.stream_detail ?? [])
			.find(s => s.name === EVENTS_STREAM);
		return stream?.state.messages ?? -1;
	}

	/** `<service>.outboxStatus` of one node. */
	const outboxStatus = (service: string, nodeID: string): Promise<OutboxStatus> =>
		cluster.broker.call(`${service}.outboxStatus`, {}, { nodeID });

	/**
	 * Places `n` orders, `concurrency` at a time; a request that fails (a node dying under it) is
	 * sent again with the same Idempotency-Key, as a client would.
	 */
	async function placeOrders(n: number, concurrency: number, tag: string): Promise<void> {
		let next = 0;
		await Promise.all(
			Array.from({ length: concurrency }, async () => {
				for (let i = next++; i < n; i = next++) {
					const productId = products[i % products.length]!;
					const quantity = 1 + (i % 3);
					const key = `${tag}-${i}`;
					let last = "";
					for (let attempt = 0; attempt < 4; attempt++) {
						// 503 ORDERS_OVERLOADED (the orders node's adaptive limit) is retried after
						// Retry-After with the same key, and is not a failed attempt.
						const r = await placeOrder(base, {
							token: tokens[i % CUSTOMERS]!,
							idempotencyKey: key,
							body: { items: [{ productId, quantity }], paymentMethod: "tok_visa" }
						}).catch((err: unknown) => ({ status: 0, body: String(err) }));
						if (r.status === 202) {
							placed.push({ id: r.body.id, productId, quantity });
							last = "";
							break;
						}
						last = `${r.status} ${JSON.stringify(r.body)}`;
						await new Promise(res => setTimeout(res, 500));
					}
					if (last) refused.push(last);
				}
			})
		);
	}

	/** Waits until every order in the orders database has ended; returns the counts per status. */
	async function everyOrderEnded(): Promise<Record<string, number>> {
		const rows = await until(
			() =>
				sql<{ status: string; n: number }>(
					"orders",
					"SELECT status, count(*)::int AS n FROM orders GROUP BY status"
				),
			r => r.every(x => x.status === "CONFIRMED" || x.status === "CANCELLED"),
			90_000,
			250
		);
		return Object.fromEntries(rows.map(r => [r.status, r.n]));
	}

	/** One capture, one committed reservation, one notification per order; stock exact. */
	async function expectEachOrderOnce(): Promise<void> {
		const ids = placed.map(p => p.id);
		const orders = await sql<{ id: string }>("orders", "SELECT id FROM orders");
		// Every order the database holds is one the client saw accepted (retries are idempotent).
		expect(orders.map(o => o.id).sort()).toEqual([...ids].sort());
		const payments = await sql<{ order_id: string; n: number }>(
			"payments",
			"SELECT order_id, count(*)::int AS n FROM payments WHERE status = 'CAPTURED' GROUP BY order_id"
		);
		expect(payments.filter(p => p.n !== 1)).toEqual([]);
		expect(payments.map(p => p.order_id).sort()).toEqual([...ids].sort());
		const reservations = await sql<{ order_id: string; n: number }>(
			"inventory",
			"SELECT order_id, count(*)::int AS n FROM reservations WHERE status = 'COMMITTED' GROUP BY order_id"
		);
		expect(reservations.filter(r => r.n !== 1)).toEqual([]);
		expect(reservations).toHaveLength(ids.length);
		// Exactly one notification per order (they arrive after the order ends).
		const notes = await until(
			() =>
				sql<{ order_id: string; n: number }>(
					"notifications",
					"SELECT order_id, count(*)::int AS n FROM notifications WHERE kind = 'ORDER_CONFIRMED' GROUP BY order_id"
				),
			r => r.length >= ids.length,
			30_000,
			250
		);
		expect(notes.filter(n => n.n !== 1)).toEqual([]);
		expect(notes.map(n => n.order_id).sort()).toEqual([...ids].sort());
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
	}

	beforeAll(async () => {
		for (const id of NODES) metricsPort[id] = await freePort();
		cluster = await startCluster({
			replicas: { orders: 2, inventory: 2, payments: 2, notifications: 2 },
			env: {
				SAGA_LEASE_MS: String(SAGA_LEASE_MS),
				SAGA_RECOVERY_INTERVAL_MS: "250",
				EVENT_ACK_WAIT_MS: "3000",
				OUTBOX_POLL_MS: "200"
			},
			nodeEnv: Object.fromEntries(
				NODES.map(id => [id, { METRICS_PORT: String(metricsPort[id]) }])
			)
		});
		base = cluster.url!;
		const admin = await api(base, "POST", "/api/users/login", { body: CLUSTER_ADMIN });
		expect(admin.status).toBe(200);
		for (let i = 0; i < 3; i++) {
			const p = await api(base, "POST", "/api/products", {
				token: admin.body.token,
				body: {
					sku: `SR-${crypto.randomBytes(4).toString("hex")}`,
					name: `Replicated item ${i}`,
					description: "Ordered across replicas",
					price: 700 + i,
					currency: "USD",
					stock: STOCK
				}
			});
			expect(p.status).toBe(201);
			products.push(p.body.id);
		}
		for (let i = 0; i < CUSTOMERS; i++) {
			const r = await api(base, "POST", "/api/users/register", {
				body: {
					email: `sr-${i}-${crypto.randomBytes(3).toString("hex")}@example.com`,
					password: "correct horse battery",
					name: `Customer ${i}`
				}
			});
			expect(r.status).toBe(201);
			tokens.push(r.body.token);
		}
	}, 180_000);

	afterAll(async () => {
		console.log(`[stateful-replicas] ${JSON.stringify(report)}`);
		await cluster?.stop();
	}, 90_000);

	it(
		"shares the work of every service between its two nodes, each saga, event and notification once",
		() =>
			withOutputOnFailure(cluster, async () => {
				// Sample the sagas' lease owners while orders flow: both orders nodes hold some.
				const owners = new Set<string>();
				let sampling = true;
				const u = new URL(process.env.DATABASE_URL!);
				u.pathname = `/${cluster.prefix}orders`;
				const db = new Client({ connectionString: u.toString() });
				await db.connect();
				const sampler = (async () => {
					try {
						while (sampling) {
							const { rows } = await db.query<{ owner: string }>(
								"SELECT DISTINCT split_part(lease_owner, ':', 1) AS owner FROM sagas WHERE lease_owner IS NOT NULL"
							);
							for (const r of rows) owners.add(r.owner);
							await new Promise(res => setTimeout(res, 30));
						}
					} finally {
						await db.end();
					}
				})();
				await placeOrders(60, CUSTOMERS, "p1");
				sampling = false;
				await sampler;
				const statuses = await everyOrderEnded();
				expect(refused).toEqual([]);
				expect(statuses).toEqual({ CONFIRMED: placed.length });
				expect([...owners].sort()).toEqual(["orders-1", "orders-2"]);

				// Sagas: confirmed by both nodes, each exactly once (the counters add up).
				const confirmed = await Promise.all(
					["orders-1", "orders-2"].map(id => counter(id, "shop_orders_confirmed_total"))
				);
				report.confirmedPerOrdersNode = confirmed;
				expect(confirmed.every(n => n > 0)).toBe(true);
				expect(confirmed[0]! + confirmed[1]!).toBe(placed.length);
				const charges = await sql<{ n: number }>(
					"orders",
					"SELECT count(*)::int AS n FROM saga_steps WHERE step_name = 'chargePayment' AND phase = 'forward' AND status = 'SUCCEEDED'"
				);
				expect(charges[0]!.n).toBe(placed.length);
				await expectEachOrderOnce();

				// Outbox relays: for each service, the two relays published every row once between them.
				const relays: Record<string, number[]> = {};
				for (const s of OUTBOX_SERVICES) {
					const rows = await until(
						() =>
							sql<{ total: number; pending: number }>(
								s,
								"SELECT count(*)::int AS total, count(*) FILTER (WHERE published_at IS NULL)::int AS pending FROM outbox"
							),
						r => r[0]!.pending === 0,
						20_000,
						200
					);
					expect(rows[0]!.pending).toBe(0);
					const st = await Promise.all(
						[`${s}-1`, `${s}-2`].map(id => outboxStatus(s, id))
					);
					relays[s] = st.map(x => x.published);
					expect(st.map(x => x.mode)).toEqual(["jetstream", "jetstream"]);
					expect({ s, duplicates: st.map(x => x.serverDuplicates) }).toEqual({
						s,
						duplicates: [0, 0]
					});
					expect({ s, published: st[0]!.published + st[1]!.published }).toEqual({
						s,
						published: rows[0]!.total
					});
				}
				report.publishedPerRelay = relays;

				// Consumer group: both notifications nodes applied events, each event once.
				const processed = await Promise.all(
					["notifications-1", "notifications-2"].map(id =>
						counter(id, "shop_events_processed_total", "notifications")
					)
				);
				const inbox = await sql<{ n: number }>(
					"notifications",
					"SELECT count(*)::int AS n FROM inbox"
				);
				report.processedPerNotificationsNode = processed;
				expect(processed.every(n => n > 0)).toBe(true);
				expect(processed[0]! + processed[1]!).toBe(inbox[0]!.n);
			}),
		240_000
	);

	it(
		"hands a dead orders node's saga, outbox and a dead notifications node's events to the survivors",
		() =>
			withOutputOnFailure(cluster, async () => {
				const before = placed.length;
				// orders-2 now SIGKILLs itself at the first charge it is about to make; notifications-2
				// is SIGKILLed (no goodbye: its unacknowledged deliveries are redelivered after the
				// ack wait). Neither comes back.
				const orders2 = cluster.node("orders-2");
				await orders2.restart({ SAGA_FAULTS: "crash-before:chargePayment" });
				await cluster.node("notifications-2").kill("SIGKILL");
				const load = placeOrders(30, 2, "p2");
				await until(
					async () => orders2.running,
					r => !r,
					60_000,
					100
				);
				expect(orders2.exit).toEqual({ code: null, signal: "SIGKILL" });
				const tDeath = Date.now();
				// The saga(s) it left: running, still leased to the dead node.
				const stranded = await sql<{ id: string; lease_owner: string }>(
					"orders",
					"SELECT id, lease_owner FROM sagas WHERE status = 'RUNNING' AND lease_owner LIKE 'orders-2:%'"
				);
				expect(stranded.length).toBeGreaterThanOrEqual(1);
				await load;

				const statuses = await everyOrderEnded();
				expect(refused).toEqual([]);
				expect(statuses).toEqual({ CONFIRMED: placed.length });
				// orders-1 claimed each stranded saga after its lease expired and completed it.
				const after = await sql<{ id: string; status: string; charged: number }>(
					"orders",
					`SELECT s.id, s.status,
						(SELECT count(*)::int FROM saga_steps t WHERE t.saga_id = s.id AND t.step_name = 'chargePayment'
							AND t.phase = 'forward' AND t.status = 'SUCCEEDED') AS charged
					   FROM sagas s WHERE s.id = ANY($1::uuid[])`,
					[stranded.map(s => s.id)]
				);
				expect(after.map(s => [s.status, s.charged])).toEqual(
					stranded.map(() => ["COMPLETED", 1])
				);
				expect(orders2.running).toBe(false);
				report.strandedSagas = stranded.length;
				report.recoveredWithinMs = Date.now() - tDeath;

				// The survivor's relay published what the dead one left: nothing pending, no duplicate.
				const pending = await until(
					() =>
						sql<{ n: number }>(
							"orders",
							"SELECT count(*)::int AS n FROM outbox WHERE published_at IS NULL"
						),
					r => r[0]!.n === 0,
					20_000,
					200
				);
				expect(pending[0]!.n).toBe(0);
				// orders-2 may have died between a publish and its row's published_at: orders-1 sends
				// those rows again and JetStream drops them by Nats-Msg-Id (counted, not stored). What
				// must hold is the stream itself: every outbox row of every service in it once.
				const survivor = await outboxStatus("orders", "orders-1");
				report.resentAfterCrashDroppedByJetStream = survivor.serverDuplicates;
				let outboxRows = 0;
				for (const s of [...OUTBOX_SERVICES, "products"]) {
					outboxRows += (
						await sql<{ n: number }>(s, "SELECT count(*)::int AS n FROM outbox")
					)[0]!.n;
				}
				expect(await streamMessages()).toBe(outboxRows);

				// notifications-1 alone applied phase 2's events: one notification per order still.
				await expectEachOrderOnce();
				report.ordersPhase2 = placed.length - before;
				report.orders = placed.length;
			}),
		240_000
	);
});
