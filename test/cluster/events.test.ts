/**
 * Durable domain events over a real NATS JetStream, with each service in its own
 * `moleculer-runner` process and real Postgres (mixins/events.mixin.ts):
 * - the notifications node is down while 200 orders complete; back up, it records exactly 200
 *   notifications, none twice;
 * - the orders node's relay is killed (SIGKILL) right after publishing and before marking the
 *   outbox row, then restarted: the re-sent event is dropped by JetStream's duplicate window
 *   (`Nats-Msg-Id`), and the notification arrives once; killed right before publishing: the
 *   event is published after the restart, once;
 * - a poison message (not JSON) and an event whose handler always fails land on the dead-letter
 *   stream, and the events behind them still flow;
 * - the NATS server restarts while orders are placed: every accepted order ends and has its one
 *   notification.
 * Counts are read from the databases (outbox, inbox, notifications) and the streams.
 */
import crypto from "node:crypto";
import { connect, type NatsConnection } from "nats";
import { Client } from "pg";
import { DLQ_STREAM, EVENTS_STREAM } from "../../platform/events/jetstream";
import { startNats, type NatsServer } from "../support/nats";
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

interface Customer {
	token: string;
	id: string;
}

describe("durable events over JetStream", () => {
	let nats: NatsServer;
	let cluster: TestCluster;
	let base: string;
	let adminToken: string;
	let productId: string;
	const customers: Customer[] = [];
	const report: Record<string, unknown> = {};
	const metricsPorts: Record<string, number> = {};

	/** The value of a Prometheus sample `name{service="<service>"}` on a node's /metrics. */
	async function metric(port: number, name: string, service: string): Promise<number | null> {
		const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
		const line = text
			.split("\n")
			.find(l => l.startsWith(`${name}{`) && l.includes(`service="${service}"`));
		return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : null;
	}

	/** Runs `sql` on the cluster's database of `service`. */
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
	 * Places `n` one-unit orders (round-robin over customers, `concurrency` at a time); a 503
	 * ORDERS_OVERLOADED (the orders node's adaptive limit) is retried after Retry-After with the
	 * same Idempotency-Key, as a client does (test/support/overload-retry.ts).
	 */
	async function placeOrders(
		n: number,
		concurrency = 8
	): Promise<{ accepted: string[]; refused: number[] }> {
		const accepted: string[] = [];
		const refused: number[] = [];
		let next = 0;
		await Promise.all(
			Array.from({ length: concurrency }, async () => {
				for (let i = next++; i < n; i = next++) {
					const c = customers[i % customers.length]!;
					const r = await placeOrder(base, {
						token: c.token,
						body: { items: [{ productId, quantity: 1 }], paymentMethod: "tok_visa" }
					}).catch(() => ({ status: 0, body: null }));
					if (r.status === 202) accepted.push(r.body.id);
					else refused.push(r.status);
				}
			})
		);
		return { accepted, refused };
	}

	/** Waits until every order has ended; returns status counts. */
	async function allEnded(ids: string[], timeoutMs = 90_000): Promise<Record<string, number>> {
		const rows = await until(
			() =>
				sql<{ status: string; n: number }>(
					"orders",
					"SELECT status, count(*)::int AS n FROM orders WHERE id = ANY($1::uuid[]) GROUP BY status",
					[ids]
				),
			r =>
				r
					.filter(x => x.status === "CONFIRMED" || x.status === "CANCELLED")
					.reduce((s, x) => s + x.n, 0) === ids.length,
			timeoutMs,
			250
		);
		return Object.fromEntries(rows.map(r => [r.status, r.n]));
	}

	/** Notifications per order for these ids (order id → count). */
	async function notificationCounts(ids: string[]): Promise<Map<string, number>> {
		const rows = await sql<{ order_id: string; n: number }>(
			"notifications",
			"SELECT order_id, count(*)::int AS n FROM notifications WHERE order_id = ANY($1::uuid[]) GROUP BY order_id",
			[ids]
		);
		return new Map(rows.map(r => [r.order_id, r.n]));
	}

	async function waitNotified(ids: string[], timeoutMs = 60_000): Promise<Map<string, number>> {
		return until(
			() => notificationCounts(ids),
			m => m.size === ids.length,
			timeoutMs,
			250
		);
	}

	beforeAll(async () => {
		nats = await startNats();
		metricsPorts.orders = await freePort();
		metricsPorts.notifications = await freePort();
		cluster = await startCluster({
			nats,
			env: { EVENT_MAX_DELIVER: "3", OUTBOX_POLL_MS: "200", SAGA_DEADLINE_MS: "60000" },
			nodeEnv: {
				"orders-1": { METRICS_PORT: String(metricsPorts.orders) },
				"notifications-1": { METRICS_PORT: String(metricsPorts.notifications) }
			}
		});
		base = cluster.url!;
		const admin = await api(base, "POST", "/api/users/login", { body: CLUSTER_ADMIN });
		adminToken = admin.body.token;
		const p = await api(base, "POST", "/api/products", {
			token: adminToken,
			body: {
				sku: `EVT-${crypto.randomBytes(4).toString("hex")}`,
				name: "Event stream sticker",
				description: "Never lost",
				price: 199,
				currency: "USD",
				stock: 100_000
			}
		});
		productId = p.body.id;
		for (let i = 0; i < 5; i++) {
			const r = await api(base, "POST", "/api/users/register", {
				body: {
					email: `evt-${i}-${crypto.randomBytes(3).toString("hex")}@example.com`,
					password: "correct horse battery",
					name: `Events ${i}`
				}
			});
			customers.push({ token: r.body.token, id: r.body.user.id });
		}
	}, 180_000);

	afterAll(async () => {
		console.log(`events: ${JSON.stringify(report)}`);
		await cluster?.stop();
		await nats?.stop();
	}, 60_000);

	it(
		"the notifications node is down while 200 orders complete: back up, exactly 200 notifications",
		() =>
			withOutputOnFailure(cluster, async () => {
				const node = cluster.node("notifications-1");
				await node.kill("SIGTERM");
				const { accepted, refused } = await placeOrders(200);
				expect(refused).toEqual([]);
				expect(accepted).toHaveLength(200);
				expect(await allEnded(accepted)).toEqual({ CONFIRMED: 200 });
				expect(await notificationCounts(accepted)).toEqual(new Map());

				await node.restart();
				const counts = await waitNotified(accepted);
				await new Promise(r => setTimeout(r, 1_000)); // anything late would show now
				const again = await notificationCounts(accepted);
				expect(again.size).toBe(200);
				expect([...again.values()].every(n => n === 1)).toBe(true);
				expect(counts.size).toBe(200);
				const inbox: { processed: number; duplicates: number; redeliveries: number } =
					await cluster.broker.call("notifications.inboxStatus");
				const published = await sql<{ n: number }>(
					"orders",
					"SELECT count(*)::int AS n FROM outbox WHERE published_at IS NOT NULL AND aggregate_id = ANY($1)",
					[accepted]
				);
				report.downWhile200 = {
					orders: accepted.length,
					notifications: again.size,
					eventsPublishedForThem: published[0]!.n,
					consumerAfterRestart: inbox
				};
			}),
		240_000
	);

	it(
		"a relay killed after publishing and before marking re-sends; JetStream drops the duplicate; one notification",
		() =>
			withOutputOnFailure(cluster, async () => {
				const orders = cluster.node("orders-1");
				await orders.restart({ OUTBOX_FAULTS: "crash-after-publish" });
				const c = customers[0]!;
				const r = await api(base, "POST", "/api/orders", {
					token: c.token,
					body: { items: [{ productId, quantity: 1 }], paymentMethod: "tok_visa" }
				});
				expect(r.status).toBe(202);
				const orderId: string = r.body.id;
				await until(
					async () => orders.running,
					running => !running,
					20_000
				);
				expect(orders.exit?.signal).toBe("SIGKILL");
				// Published (the stream has it) but not marked: the row is still unsent.
				const unsent = await sql<{ id: string; name: string }>(
					"orders",
					"SELECT id, name FROM outbox WHERE aggregate_id = $1 AND published_at IS NULL",
					[orderId]
				);
				expect(unsent.map(u => u.name)).toEqual(["order.created"]);

				await orders.restart({ OUTBOX_FAULTS: "" });
				expect(await allEnded([orderId])).toEqual({ CONFIRMED: 1 });
				expect(await waitNotified([orderId])).toEqual(new Map([[orderId, 1]]));
				const status: { serverDuplicates: number; pending: number } = await until(
					() => cluster.broker.call("orders.outboxStatus"),
					(s: { pending: number }) => s.pending === 0,
					20_000
				);
				// The re-sent order.created (same Nats-Msg-Id) was stored once.
				expect(status.serverDuplicates).toBeGreaterThanOrEqual(1);
				report.crashAfterPublish = { orderId, serverDuplicates: status.serverDuplicates };
			}),
		120_000
	);

	it(
		"a relay killed before publishing publishes after the restart, once",
		() =>
			withOutputOnFailure(cluster, async () => {
				const orders = cluster.node("orders-1");
				await orders.restart({ OUTBOX_FAULTS: "crash-before-publish" });
				const c = customers[1]!;
				const r = await api(base, "POST", "/api/orders", {
					token: c.token,
					body: { items: [{ productId, quantity: 2 }], paymentMethod: "tok_visa" }
				});
				expect(r.status).toBe(202);
				const orderId: string = r.body.id;
				await until(
					async () => orders.running,
					running => !running,
					20_000
				);
				const unsent = await sql<{ name: string }>(
					"orders",
					"SELECT name FROM outbox WHERE aggregate_id = $1 AND published_at IS NULL",
					[orderId]
				);
				expect(unsent.map(u => u.name)).toEqual(["order.created"]);
				await orders.restart({ OUTBOX_FAULTS: "" });
				expect(await allEnded([orderId])).toEqual({ CONFIRMED: 1 });
				expect(await waitNotified([orderId])).toEqual(new Map([[orderId, 1]]));
				const sent = await until(
					() =>
						sql<{ name: string; published: boolean }>(
							"orders",
							"SELECT name, published_at IS NOT NULL AS published FROM outbox WHERE aggregate_id = $1 ORDER BY seq",
							[orderId]
						),
					rows => rows.every(x => x.published),
					20_000
				);
				expect(sent.map(x => x.name)).toEqual(["order.created", "order.confirmed"]);
			}),
		120_000
	);

	it(
		"poison messages go to the dead-letter stream and the events behind them still flow",
		() =>
			withOutputOnFailure(cluster, async () => {
				const nc: NatsConnection = await connect({
					servers: nats.url.replace("nats://", "")
				});
				try {
					const js = nc.jetstream();
					const jsm = await nc.jetstreamManager();
					const dlqBefore = (await jsm.streams.info(DLQ_STREAM)).state.messages;
					// Not JSON at all: dead-lettered at once.
					await js.publish("shop.events.order.confirmed", Buffer.from("{not json"));
					// A well-formed event whose order is missing: the handler fails on every delivery.
					const poisonId = crypto.randomUUID();
					await js.publish(
						"shop.events.order.confirmed",
						Buffer.from(
							JSON.stringify({
								id: poisonId,
								name: "order.confirmed",
								source: "test",
								aggregateId: "nothing",
								occurredAt: new Date().toISOString(),
								requestId: null,
								data: { order: null }
							})
						),
						{ msgID: poisonId }
					);
					// Events behind them.
					const { accepted } = await placeOrders(10, 5);
					expect(await allEnded(accepted)).toEqual({ CONFIRMED: 10 });
					const counts = await waitNotified(accepted);
					expect([...counts.values()]).toEqual(Array(10).fill(1));

					const dlq = await until(
						async () => (await jsm.streams.info(DLQ_STREAM)).state.messages,
						n => n >= dlqBefore + 2,
						30_000,
						200
					);
					expect(dlq - dlqBefore).toBe(2);
					const last = await jsm.streams.getMessage(DLQ_STREAM, {
						last_by_subj: "shop.dlq.notifications__order_confirmed"
					});
					expect(last.header.get("Shop-Deliveries")).toBe("3");
					expect(last.header.get("Shop-Error")).toMatch(/Malformed order event/);

					const letters: { rows: { eventId: string; deliveries: number }[] } =
						await cluster.broker.call(
							"notifications.listDeadLetters",
							{ pageSize: 100 },
							{
								meta: {
									user: { id: "x", email: "a@b.c", name: "a", role: "admin" }
								}
							}
						);
					const poison = letters.rows.find(l => l.eventId === poisonId);
					expect(poison?.deliveries).toBe(3);
					expect(letters.rows.some(l => l.eventId.startsWith("stream-seq:"))).toBe(true);
					report.deadLetters = {
						dlqStreamMessages: dlq,
						rows: letters.rows.length,
						eventsStream: (await jsm.streams.info(EVENTS_STREAM)).state.messages
					};
				} finally {
					await nc.close();
				}
			}),
		120_000
	);

	it(
		"the NATS server restarts while orders are placed: every accepted order ends with one notification",
		() =>
			withOutputOnFailure(cluster, async () => {
				const load = placeOrders(120, 6);
				await new Promise(r => setTimeout(r, 1_500));
				await nats.restart();
				const { accepted, refused } = await load;
				report.natsRestart = { accepted: accepted.length, refusedStatuses: refused };
				expect(accepted.length).toBeGreaterThan(0);
				const ended = await allEnded(accepted, 120_000);
				expect(ended).toEqual({ CONFIRMED: accepted.length });
				const counts = await waitNotified(accepted, 90_000);
				expect([...counts.values()].every(n => n === 1)).toBe(true);
				const inbox = await cluster.broker.call("notifications.inboxStatus");
				report.natsRestart = { ...(report.natsRestart as object), inbox };
			}),
		300_000
	);

	it(
		"operators see the outbox lag and the consumers' counts as Prometheus metrics",
		() =>
			withOutputOnFailure(cluster, async () => {
				const { accepted } = await placeOrders(5, 5);
				await allEnded(accepted);
				await waitNotified(accepted);
				const published = await until(
					() => metric(metricsPorts.orders!, "shop_outbox_published_total", "orders"),
					v => v !== null && v > 0,
					10_000
				);
				expect(published).toBeGreaterThan(0);
				expect(await metric(metricsPorts.orders!, "shop_outbox_pending", "orders")).toBe(0);
				expect(await metric(metricsPorts.orders!, "shop_outbox_lag_ms", "orders")).toBe(0);
				const processed = await until(
					() =>
						metric(
							metricsPorts.notifications!,
							"shop_events_processed_total",
							"notifications"
						),
					v => v !== null && v >= 5,
					10_000
				);
				expect(processed).toBeGreaterThanOrEqual(5);
				report.metrics = { outboxPublished: published, eventsProcessed: processed };
			}),
		120_000
	);
});
