/**
 * Retention (platform/retention.ts): each service's purge job deletes what is past its window, in
 * batches, on one node at a time (an advisory lock), with metrics; deduplication holds inside
 * the windows. Real Postgres; rows are aged by moving their timestamps back, not by waiting.
 */
import crypto from "node:crypto";
import { Errors, type ServiceBroker, type ServiceSchema } from "moleculer";
import { config } from "../../platform/config";
import { retentionJob, type RetentionHost, type RetentionReport } from "../../platform/retention";
import { DbMixin } from "../../mixins/db.mixin";
import { deliverLocally, type DomainEvent } from "../../mixins/events.mixin";
import {
	SagaMixin,
	sagaMigrations,
	type SagaDefinition,
	type SagaMixinMethods
} from "../../mixins/saga.mixin";
import { customer, startTestBroker, type TestBroker } from "../support/broker";
import { fastQuery, QueryTypes } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";

const DAY = 24 * 3600_000;

/** A row as the tests read it: its columns by name. */
type Row = Record<string, unknown>;

/** A saga whose one step fails transiently `failures` times, then succeeds. */
const failures = new Map<string, number>();
const flaky: SagaDefinition<{ ref: string }> = {
	name: "flaky",
	version: 1,
	stepTimeoutMs: 2_000,
	retry: { maxAttempts: 8, baseDelayMs: 1, maxDelayMs: 2 },
	businessErrors: [],
	failureReason: () => "PROCESSING_FAILED",
	steps: [{ name: "poke", action: "flakypart.poke", params: d => ({ ref: d.ref }) }]
};
const flakyPart: ServiceSchema = {
	name: "flakypart",
	actions: {
		poke(ctx: { params: { ref: string } }) {
			const n = (failures.get(ctx.params.ref) ?? 0) + 1;
			failures.set(ctx.params.ref, n);
			if (n <= 6)
				throw new Errors.MoleculerRetryableError(
					`attempt ${n}`,
					503,
					"SERVICE_UNAVAILABLE"
				);
			return { ok: true };
		}
	}
};
/** A saga orchestrator on its own `orders`-named database (this suite's prefix). */
const orchestrator: ServiceSchema = {
	name: "flakysaga",
	mixins: [DbMixin({ service: "orders", migrations: sagaMigrations }), SagaMixin()],
	sagas: { flaky }
} as ServiceSchema;

describe("retention", () => {
	let t: TestBroker;
	let broker: ServiceBroker;
	const db = (service: string): ShopDatabase =>
		(broker.getLocalService(service) as unknown as { db: ShopDatabase }).db;
	const q = (service: string, sql: string, bind: unknown[] = []): Promise<Row[]> =>
		fastQuery(db(service), sql, { bind, type: QueryTypes.SELECT }) as Promise<Row[]>;
	/** `<service>.runRetention`; the test orchestrator has no such action: its job directly. */
	const run = (service: string): Promise<RetentionReport> =>
		service === "flakysaga"
			? retentionJob(broker.getLocalService(service) as unknown as RetentionHost).runOnce()
			: broker.call(`${service}.runRetention`);
	const purgedMetric = (service: string, table: string): number =>
		(broker.metrics.getMetric("shop.retention.purged.total")?.get({ service, table })?.value as
			number | undefined) ?? 0;

	beforeAll(async () => {
		t = await startTestBroker(["inventory", "payments", "notifications"], {
			env: {
				RETENTION_BATCH_SIZE: "3",
				RETENTION_BATCH_PAUSE_MS: "0",
				SAGA_ERRORS_KEEP: "3"
			},
			broker: { metrics: { enabled: true, reporter: [] } },
			extra: [flakyPart, orchestrator]
		});
		broker = t.broker;
	}, 60_000);

	afterAll(async () => {
		await t?.stop();
	});

	it("documents its defaults: inbox ≥ the stream's max age ≥ the duplicate window", () => {
		const c = config();
		expect(c.retention).toMatchObject({
			outboxMs: 7 * DAY,
			inboxMs: 8 * DAY,
			idempotencyKeyMs: 7 * DAY,
			sagaMs: 30 * DAY,
			deadLetterMs: 30 * DAY,
			reservationMs: 30 * DAY,
			intervalMs: 3600_000
		});
		expect(c.retention.inboxMs).toBeGreaterThanOrEqual(c.eventsMaxAgeMs);
		expect(c.eventsMaxAgeMs).toBeGreaterThanOrEqual(10 * 60_000);
	});

	it("inbox: a redelivery inside the window is a duplicate; past it the record is purged", async () => {
		const user = customer();
		const orderId = crypto.randomUUID();
		const event: DomainEvent = {
			id: crypto.randomUUID(),
			name: "order.cancelled",
			source: "orders",
			aggregateId: orderId,
			occurredAt: new Date().toISOString(),
			requestId: null,
			data: {
				order: {
					id: orderId,
					userId: user.id,
					status: "CANCELLED",
					items: [],
					total: 0,
					currency: "USD",
					paymentMethod: "tok_visa",
					cancellationReason: "OUT_OF_STOCK",
					cancelRequested: false,
					createdAt: new Date().toISOString(),
					updatedAt: new Date().toISOString(),
					customerEmail: user.email
				}
			}
		};
		await deliverLocally(broker, event);
		const before = (await broker.call("notifications.inboxStatus")) as { duplicates: number };
		// Just inside the window (8 d less a minute): kept, and a redelivery is a duplicate.
		await q(
			"notifications",
			"UPDATE inbox SET processed_at = now() - $2::float8 * interval '1 millisecond' WHERE event_id = $1",
			[event.id, 8 * DAY - 60_000]
		);
		await run("notifications");
		await deliverLocally(broker, event);
		const after = (await broker.call("notifications.inboxStatus")) as { duplicates: number };
		expect(after.duplicates).toBe(before.duplicates + 1);
		expect(
			await q("notifications", "SELECT 1 FROM inbox WHERE event_id = $1", [event.id])
		).toHaveLength(1);
		// Past the window: gone.
		await q(
			"notifications",
			"UPDATE inbox SET processed_at = now() - $2::float8 * interval '1 millisecond' WHERE event_id = $1",
			[event.id, 8 * DAY + 60_000]
		);
		const metricBefore = purgedMetric("notifications", "inbox");
		const report = await run("notifications");
		expect(report.ran).toBe(true);
		expect(report.purged.inbox).toBeGreaterThanOrEqual(1);
		expect(
			await q("notifications", "SELECT 1 FROM inbox WHERE event_id = $1", [event.id])
		).toHaveLength(0);
		expect(purgedMetric("notifications", "inbox")).toBe(metricBefore + report.purged.inbox!);
	});

	it("idempotency keys: a repeat inside the window answers the first outcome; past it the key is gone", async () => {
		const orderId = crypto.randomUUID();
		const key = `${crypto.randomUUID()}:charge`;
		const params = { orderId, amount: 4499, currency: "USD", paymentMethod: "tok_visa" };
		const first = await broker.call("payments.charge", params, {
			meta: { idempotencyKey: key }
		});
		await q(
			"payments",
			"UPDATE idempotency_keys SET created_at = now() - interval '7 days' + interval '1 minute' WHERE key = $1",
			[key]
		);
		await run("payments");
		expect(
			await broker.call("payments.charge", params, { meta: { idempotencyKey: key } })
		).toEqual(first);
		await q(
			"payments",
			"UPDATE idempotency_keys SET created_at = now() - interval '7 days' - interval '1 minute' WHERE key = $1",
			[key]
		);
		const report = await run("payments");
		expect(report.purged.idempotency_keys).toBeGreaterThanOrEqual(1);
		expect(
			await q("payments", "SELECT 1 FROM idempotency_keys WHERE key = $1", [key])
		).toHaveLength(0);
	});

	it("outbox: published rows past the window go in batches; unpublished ones stay", async () => {
		await q("payments", "DELETE FROM outbox");
		for (let i = 0; i < 7; i++)
			await q(
				"payments",
				`INSERT INTO outbox (id, name, aggregate_id, data, published_at)
				 VALUES ($1, 'payment.captured', 'x', '{}', now() - interval '8 days')`,
				[crypto.randomUUID()]
			);
		await q(
			"payments",
			`INSERT INTO outbox (id, name, aggregate_id, data, created_at, published_at)
			 VALUES ($1, 'payment.captured', 'recent', '{}', now(), now() - interval '6 days'),
			        ($2, 'payment.captured', 'unsent', '{}', now() - interval '30 days', NULL)`,
			[crypto.randomUUID(), crypto.randomUUID()]
		);
		const report = await run("payments");
		// 7 rows in batches of 3: 3 + 3 + 1.
		expect(report.purged.outbox).toBe(7);
		expect(
			(await q("payments", "SELECT aggregate_id FROM outbox ORDER BY seq")).map(
				r => r.aggregate_id
			)
		).toEqual(["recent", "unsent"]);
	});

	it("reservations: final ones past the window go; RESERVED ones (kept past the pivot) never", async () => {
		const [kept, committed, recent] = [
			crypto.randomUUID(),
			crypto.randomUUID(),
			crypto.randomUUID()
		];
		await q(
			"inventory",
			`INSERT INTO reservations (order_id, status, items, expires_at, updated_at) VALUES
			 ($1, 'RESERVED', '[]', NULL, now() - interval '90 days'),
			 ($2, 'COMMITTED', '[]', NULL, now() - interval '31 days'),
			 ($3, 'RELEASED', '[]', NULL, now() - interval '29 days')`,
			[kept, committed, recent]
		);
		const report = await run("inventory");
		expect(report.purged.reservations).toBe(1);
		const left = (
			await q(
				"inventory",
				"SELECT order_id FROM reservations WHERE order_id = ANY($1::uuid[])",
				[[kept, committed, recent]]
			)
		).map(r => r.order_id);
		expect(left.sort()).toEqual([kept, recent].sort());
	});

	it("dead letters: replayed ones past the window go; pending ones stay", async () => {
		const ids = [crypto.randomUUID(), crypto.randomUUID()];
		await q(
			"notifications",
			`INSERT INTO dead_letters (id, consumer, event_id, event_name, event, error, deliveries, created_at, replayed_at) VALUES
			 ($1::uuid, 'c', $1::text, 'order.confirmed', '{}', 'x', 5, now() - interval '60 days', now() - interval '31 days'),
			 ($2::uuid, 'c', $2::text, 'order.confirmed', '{}', 'x', 5, now() - interval '60 days', NULL)`,
			ids
		);
		const report = await run("notifications");
		expect(report.purged.dead_letters).toBe(1);
		expect((await q("notifications", "SELECT id FROM dead_letters")).map(r => r.id)).toEqual([
			ids[1]
		]);
	});

	it("sagas: finished ones past the window go with their steps; parked and running ones stay; errors keep the last N", async () => {
		const svc = broker.getLocalService("flakysaga") as unknown as SagaMixinMethods;
		const saga = await svc.createSaga(
			"flaky",
			{ ref: crypto.randomUUID() },
			{ deadlineMs: 30_000 }
		);
		const done = await svc.runSaga(saga.id);
		expect(done).toMatchObject({ status: "COMPLETED" });
		// Six failed attempts; the row keeps the newest three (SAGA_ERRORS_KEEP=3).
		const stored = await svc.getSaga(saga.id);
		expect(stored!.errors.map(e => e.message)).toEqual(["attempt 4", "attempt 5", "attempt 6"]);
		expect((await svc.getSagaSteps(saga.id)).length).toBe(7);
		const parked = crypto.randomUUID();
		const running = crypto.randomUUID();
		await q(
			"flakysaga",
			`INSERT INTO sagas (id, name, version, status, data, deadline_at, created_at, updated_at) VALUES
			 ($1, 'flaky', 1, 'FAILED', '{}', now(), now() - interval '90 days', now() - interval '90 days'),
			 ($2, 'flaky', 1, 'RUNNING', '{}', now(), now() - interval '90 days', now() - interval '90 days')`,
			[parked, running]
		);
		let report = await run("flakysaga");
		expect(report.purged).toMatchObject({ sagas: 0, saga_steps: 0 });
		await q(
			"flakysaga",
			"UPDATE sagas SET created_at = now() - interval '31 days', updated_at = now() - interval '31 days' WHERE id = $1",
			[saga.id]
		);
		report = await run("flakysaga");
		expect(report.purged).toMatchObject({ sagas: 1, saga_steps: 7 });
		expect((await q("flakysaga", "SELECT id FROM sagas")).map(r => r.id).sort()).toEqual(
			[parked, running].sort()
		);
	});

	it("runs on one node at a time: while another holds the lease, a run purges nothing", async () => {
		const seq = db("payments");
		await q(
			"payments",
			`INSERT INTO outbox (id, name, aggregate_id, data, published_at)
			 VALUES ($1, 'payment.captured', 'leased', '{}', now() - interval '8 days')`,
			[crypto.randomUUID()]
		);
		let release!: () => void;
		const held = new Promise<void>(r => (release = r));
		let locked!: () => void;
		const isLocked = new Promise<void>(r => (locked = r));
		const other = seq.transaction(async tx => {
			await fastQuery(
				seq,
				"SELECT pg_advisory_xact_lock(hashtext('shop.retention:payments'))",
				{
					transaction: tx
				}
			);
			locked();
			await held;
		});
		await isLocked;
		try {
			expect(await run("payments")).toMatchObject({ ran: false, purged: {} });
			expect(
				await q("payments", "SELECT 1 FROM outbox WHERE aggregate_id = 'leased'")
			).toHaveLength(1);
		} finally {
			release();
			await other;
		}
		const report = await run("payments");
		expect(report.ran).toBe(true);
		expect(
			await q("payments", "SELECT 1 FROM outbox WHERE aggregate_id = 'leased'")
		).toHaveLength(0);
		const status = (await broker.call("payments.retentionStatus")) as {
			last: RetentionReport;
			windows: object;
		};
		expect(status.windows).toEqual({ idempotency_keys: 7 * DAY, outbox: 7 * DAY });
		expect(status.last.at).toBe(report.at);
		const lastRun = broker.metrics
			.getMetric("shop.retention.last.run.seconds")
			?.get({ service: "payments" })?.value;
		expect(Math.abs((lastRun as number) - Date.now() / 1000)).toBeLessThan(60);
		expect(
			broker.metrics.getMetric("shop.retention.duration")?.get({ service: "payments" })
		).toBeTruthy();
	});
});
