/**
 * Durable domain events: a transactional outbox on the emitting side, idempotent consumers (an
 * inbox) on the receiving side, NATS JetStream in between (platform/events/jetstream.ts), or, without a
 * transporter (one process), in-process delivery with the same at-least-once semantics.
 *
 * Patterns: Transactional Outbox, Polling Publisher and Idempotent Consumer
 * (Chris Richardson, microservices.io/patterns/data/transactional-outbox.html and
 * .../communication-style/idempotent-consumer.html). Unlike eShop's outbox, rows not confirmed
 * as published are re-sent until they are.
 *
 * Emitting (`OutboxMixin`, needs DbMixin and `outboxMigrations`):
 * - `this.enqueueEvent(t, name, data, { aggregateId })` writes the event in the SAME transaction as
 *   the state change; after the commit the relay is woken.
 * - The relay (one per service database at a time: a transaction-scoped advisory lock) reads
 *   unsent rows in `seq` order, publishes each (JetStream with `Nats-Msg-Id` = the row id, so a
 *   re-send after a crash is dropped by the server's duplicate window), stops at the first failure
 *   (order per service, hence per aggregate, is kept) and marks what was sent. A crash between the
 *   publish and the mark re-sends: at-least-once. It also runs every `OUTBOX_POLL_MS`.
 * - After publishing, the event is also emitted as a plain Moleculer event (best effort) for
 *   live, non-durable listeners.
 *
 * Consuming (`InboxMixin`, needs DbMixin and `inboxMigrations`): the schema's `durableEvents`
 * `{ "order.confirmed": async function (event, t) {...} }`. Each delivery runs in one database
 * transaction that first inserts (consumer, event id) into `inbox`: a redelivery finds the row and
 * has no second effect. The message is acknowledged only after that transaction commits. A
 * handler that keeps failing is retried with backoff up to `EVENT_MAX_DELIVER` deliveries, then
 * dead-lettered: a row in `dead_letters` (admins list and replay it) and, with NATS, a message on
 * the `SHOP_DLQ` stream; the events behind it keep flowing. A failure because the consumer's own
 * database does not answer (platform/db/database-unavailable.ts) is no fault of the event and spends no
 * delivery: the consumer holds the message and tries again until the database is back.
 *
 * Retention (platform/retention.ts, docs/retention.md): published outbox rows are purged
 * `OUTBOX_RETENTION_MS` after publication (unpublished ones never), inbox records
 * `INBOX_RETENTION_MS` after processing (never below the stream's `EVENTS_MAX_AGE_MS`, so an event
 * the stream may still redeliver is still deduplicated), dead letters `DEAD_LETTER_RETENTION_MS`
 * after their replay (pending ones are kept for an operator). A consumer that falls behind the
 * stream's retention is reported: `shop_events_consumer_behind` and the `events` detail of the
 * service's `readiness` answer.
 *
 * Metrics (with METRICS_PORT): `shop_outbox_pending`, `shop_outbox_lag_ms`,
 * `shop_outbox_published_total`, `shop_events_processed_total`, `shop_events_duplicates_total`,
 * `shop_events_redeliveries_total`, `shop_events_dead_letters_total`,
 * `shop_events_consumer_behind`, `shop_events_consumer_pending`,
 * `shop_events_consumer_oldest_pending_age`.
 */
import crypto from "node:crypto";
import type { ServiceBroker, ServiceSchema } from "moleculer";
import type { JsMsg } from "nats";
import { QueryTypes, type Sequelize, type Transaction } from "sequelize";
import { config } from "../platform/config";
import { runStoppedFirst } from "../platform/lifecycle";
import type { Migration } from "../platform/db/database";
import { isDatabaseUnavailable } from "../platform/db/database-unavailable";
import { shopError } from "../platform/errors";
import { withRequestId } from "../platform/request-context";
import { natsSecurity } from "../platform/nats-options";
import {
	DLQ_STREAM,
	EVENTS_STREAM,
	connectJetStream,
	consumerLag,
	deadLetterSubject,
	ensureConsumer,
	eventSubject,
	toHeaders,
	type ConsumerLag,
	type JetStreamBus
} from "../platform/events/jetstream";
import { fastQuery } from "../platform/db/fast-query";
import { writeOrDefer, type DeferredWrite } from "../platform/db/deferred-writes";
import {
	addRetentionTask,
	retentionActions,
	startRetention,
	stopRetention
} from "../platform/retention";
import { registerMetrics, setMetric } from "../platform/metrics";

/** A domain event as it travels (the JetStream message body). */
export interface DomainEvent<T = unknown> {
	/** UUID: the outbox row id, the `Nats-Msg-Id`, the inbox key. */
	id: string;
	/** e.g. `order.confirmed`. */
	name: string;
	/** The emitting service. */
	source: string;
	/** The entity the event is about (an order id, a product id); order is kept per aggregate. */
	aggregateId: string;
	/** ISO 8601, when the state change committed (the outbox row's time). */
	occurredAt: string;
	/** The request that caused it (X-Request-ID), for correlation. */
	requestId: string | null;
	data: T;
}

/** A durable event handler: runs inside the consumer's transaction `t`; throw to be redelivered. */
export type DurableEventHandler = (
	this: any,
	event: DomainEvent<any>,
	t: Transaction
) => Promise<void>;

declare module "moleculer" {
	interface ServiceSchema {
		/** InboxMixin: durable event handlers by event name. */
		durableEvents?: Record<string, DurableEventHandler>;
	}
}

/** Tables of an emitting service. */
export const outboxMigrations: readonly Migration[] = [
	{
		name: "950-create-outbox",
		up: `
CREATE TABLE outbox (
	seq bigserial PRIMARY KEY,
	id uuid NOT NULL UNIQUE,
	name text NOT NULL,
	aggregate_id text NOT NULL,
	data jsonb NOT NULL,
	request_id text,
	created_at timestamptz NOT NULL DEFAULT now(),
	published_at timestamptz
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE published_at IS NULL;`,
		down: "DROP TABLE outbox;"
	},
	{
		// The retention purge finds published rows by their publication time.
		name: "951-outbox-published-idx",
		up: "CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;",
		down: "DROP INDEX outbox_published_idx;"
	}
];

/** Tables of a consuming service. */
export const inboxMigrations: readonly Migration[] = [
	{
		name: "960-create-inbox",
		up: `
CREATE TABLE inbox (
	consumer text NOT NULL,
	event_id text NOT NULL,
	event_name text NOT NULL,
	processed_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, event_id)
);
CREATE TABLE dead_letters (
	id uuid PRIMARY KEY,
	consumer text NOT NULL,
	event_id text NOT NULL,
	event_name text NOT NULL,
	event jsonb NOT NULL,
	error text NOT NULL,
	deliveries integer NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	replayed_at timestamptz,
	UNIQUE (consumer, event_id)
);`,
		down: "DROP TABLE dead_letters; DROP TABLE inbox;"
	},
	{
		// The retention purge finds old inbox records by their processing time.
		name: "961-inbox-processed-idx",
		up: "CREATE INDEX inbox_processed_idx ON inbox (processed_at);",
		down: "DROP INDEX inbox_processed_idx;"
	}
];

/** `$2` ms before the database's now: the cutoff of a retention task (platform/retention.ts). */
const CUTOFF = "now() - $2::float8 * interval '1 millisecond'";

// ---------------------------------------------------------------------------------------------
// The shared bus: one NATS connection per process and URL; in-process consumers per broker.

const buses = new Map<string, { bus: Promise<JetStreamBus>; users: number }>();

async function acquireBus(url: string, name: string): Promise<JetStreamBus> {
	let entry = buses.get(url);
	if (!entry) {
		const c = config();
		entry = {
			bus: connectJetStream(url, name, natsSecurity(c), {
				maxAgeMs: c.eventsMaxAgeMs,
				maxBytes: c.eventsMaxBytes
			}),
			users: 0
		};
		buses.set(url, entry);
		entry.bus.catch(() => buses.delete(url));
	}
	entry.users++;
	return entry.bus;
}

async function releaseBus(url: string): Promise<void> {
	const entry = buses.get(url);
	if (!entry) return;
	if (--entry.users > 0) return;
	buses.delete(url);
	await (await entry.bus).close().catch(() => undefined);
}

/** One process, no transporter: the consumers of each event in this broker. */
interface LocalConsumer {
	readonly consumer: string;
	/** Processes (with retries, then dead-letters); rejects only while the consumer stops. */
	deliver(event: DomainEvent): Promise<void>;
}
const localConsumers = new WeakMap<ServiceBroker, Map<string, LocalConsumer[]>>();

function localRegistry(broker: ServiceBroker): Map<string, LocalConsumer[]> {
	let m = localConsumers.get(broker);
	if (!m) {
		m = new Map();
		localConsumers.set(broker, m);
	}
	return m;
}

/**
 * Delivers `event` to this broker's in-process durable consumers (the relay's path without a
 * transporter; tests use it to deliver an event, or the same event twice). Resolves when every
 * consumer has applied it, found it a duplicate, or dead-lettered it.
 */
export async function deliverLocally(broker: ServiceBroker, event: DomainEvent): Promise<void> {
	for (const c of localRegistry(broker).get(event.name) ?? []) await c.deliver(event);
}

/** Whether this node carries durable events over JetStream (a NATS transporter is configured). */
function busUrl(): string | null {
	return config().transporter;
}

const delay = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

/** How often a consumer's lag is measured for its gauges, in ms (readiness measures it anew). */
const LAG_CHECK_INTERVAL_MS = 30_000;

/** What one delivery came to; "unavailable": the consumer's database did not answer. */
type ApplyOutcome = "applied" | "duplicate" | "failed" | "deadLettered" | "unavailable";

/**
 * Wait before the `n`th retry of an event held while the consumer's database is away, in ms:
 * 250, 500, 1000, then every 2 s (short enough for `working()` to keep the message).
 */
export function holdDelayMs(n: number): number {
	return Math.min(250 * 2 ** Math.max(0, n - 1), 2_000);
}

/** Redelivery backoff after `deliveries` failed deliveries, in ms: 200, 400, 800 ... ≤ 10 s. */
export function redeliveryDelayMs(deliveries: number): number {
	return Math.min(200 * 2 ** Math.max(0, deliveries - 1), 10_000);
}

function register(
	broker: ServiceBroker,
	type: "gauge" | "counter",
	name: string,
	description: string
): void {
	if (!broker.isMetricsEnabled() || broker.metrics.getMetric(name)) return;
	broker.metrics.register({ type, name, labelNames: ["service"], description } as Parameters<
		ServiceBroker["metrics"]["register"]
	>[0]);
}

// ---------------------------------------------------------------------------------------------
// Outbox

export interface OutboxMixinOptions {
	/** Relay poll interval, in ms (default `OUTBOX_POLL_MS`). */
	readonly pollIntervalMs?: number;
	/** Wait before a woken relay's pass, in ms, batching the commits meanwhile (default `OUTBOX_BATCH_DELAY_MS`). */
	readonly batchDelayMs?: number;
	/** Rows published per relay transaction (default 200). */
	readonly batchSize?: number;
	/**
	 * Injected faults (failure tests): the relay crashes right before publishing a row, or right
	 * after publishing it and before marking it sent. Default from `OUTBOX_FAULTS`.
	 */
	readonly faults?: readonly ("crash-before-publish" | "crash-after-publish")[];
	/** What a crash is; default: the process SIGKILLs itself. */
	readonly crash?: () => void;
}

/** What OutboxMixin adds to `this`. */
export interface OutboxMethods {
	/**
	 * Writes event `name` in transaction `t` (the state change's own); the relay publishes it after
	 * the commit.
	 * @param aggregateId - the entity it is about (order id, product id ...)
	 * @returns the event id (UUID)
	 */
	enqueueEvent(
		t: Transaction,
		name: string,
		data: unknown,
		opts: { aggregateId: string; requestId?: string | null }
	): Promise<string>;
	/**
	 * Writes several events in transaction `t` with one statement (same contract as
	 * `enqueueEvent`). @returns their ids, in order
	 */
	enqueueEvents(
		t: Transaction,
		events: readonly { name: string; data: unknown; aggregateId: string }[],
		requestId: string | null
	): Promise<string[]>;
	/**
	 * The outbox insert of `events` as a write to put in a statement of one's own
	 * (`prependWrites`, platform/db/deferred-writes.ts); once that statement committed, call `kickRelay`.
	 */
	outboxWrite(
		events: readonly { name: string; data: unknown; aggregateId: string }[],
		requestId: string | null
	): DeferredWrite;
	/** Runs the relay now (coalesced with a run in progress). */
	kickRelay(): void;
}

interface OutboxBacklog {
	pending: number;
	oldestPendingAgeMs: number;
}

interface OutboxRow {
	seq: string;
	id: string;
	name: string;
	aggregate_id: string;
	data: unknown;
	request_id: string | null;
	created_at: Date;
}

/**
 * The transactional outbox of an emitting service (see the file's doc comment).
 * Adds the action `<service>.outboxStatus` (internal/admin):
 * `{ pending, oldestPendingAgeMs, published, mode: "jetstream" | "local" }`.
 */
export function OutboxMixin(opts: OutboxMixinOptions = {}): Partial<ServiceSchema> {
	const pollIntervalMs = opts.pollIntervalMs ?? config().outboxPollMs;
	const batchSize = opts.batchSize ?? 200;
	const batchDelayMs = opts.batchDelayMs ?? config().outboxBatchDelayMs;
	const faults = opts.faults ?? config().outboxFaults;
	const crash = opts.crash ?? (() => process.kill(process.pid, "SIGKILL"));

	async function stopRelay(this: any): Promise<void> {
		if (this.$outboxStopping) return;
		this.$outboxStopping = true;
		clearInterval(this.$outboxTimer);
		// A last pass sends what the service committed while stopping.
		await this.$outboxRun?.catch(() => undefined);
		await this.relayOnce().catch(() => undefined);
		if (this.$outboxBusUrl) await releaseBus(this.$outboxBusUrl);
	}

	return {
		merged(schema: ServiceSchema): void {
			// Runs before DbMixin's stopped (Moleculer runs them in reverse): the DB is still open.
			runStoppedFirst(schema, stopRelay);
			runStoppedFirst(schema, stopRetention);
		},

		created(this: any): void {
			this.$outboxStopping = false;
			this.$outboxRun = null;
			this.$outboxAgain = false;
			this.$outboxPublished = 0;
			this.$outboxServerDuplicates = 0;
			this.$outboxBus = null;
			this.$outboxBusUrl = null;
			register(this.broker, "gauge", "shop.outbox.pending", "Outbox rows not yet published");
			register(
				this.broker,
				"gauge",
				"shop.outbox.lag.ms",
				"Age of the oldest unpublished outbox row (ms)"
			);
			register(
				this.broker,
				"counter",
				"shop.outbox.published.total",
				"Outbox rows published"
			);
			addRetentionTask(this, {
				table: "outbox",
				sql: `DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox
					WHERE published_at < ${CUTOFF} ORDER BY published_at LIMIT $1)`,
				windowMs: config().retention.outboxMs
			});
		},

		async started(this: any): Promise<void> {
			const url = busUrl();
			if (url) {
				this.$outboxBus = await acquireBus(url, `${this.broker.nodeID}-events`);
				this.$outboxBusUrl = url;
			}
			this.$outboxTimer = setInterval(() => this.kickRelay(), pollIntervalMs);
			this.$outboxTimer.unref?.();
			startRetention.call(this);
		},

		stopped: stopRelay,

		actions: {
			...retentionActions(),
			/**
			 * Outbox lag of this service's database (operators, metrics).
			 * @returns `{ pending, oldestPendingAgeMs, published, serverDuplicates, mode }`: rows not
			 *   yet published, the age of the oldest in ms (0 when none), rows this node published
			 *   since it started, and how many of those JetStream dropped as already stored (re-sends)
			 */
			outboxStatus: {
				visibility: "public",
				params: {},
				async handler(this: any): Promise<{
					pending: number;
					oldestPendingAgeMs: number;
					published: number;
					serverDuplicates: number;
					mode: "jetstream" | "local";
				}> {
					const backlog: OutboxBacklog = await this.outboxBacklog();
					return {
						...backlog,
						published: this.$outboxPublished,
						serverDuplicates: this.$outboxServerDuplicates,
						mode: this.$outboxBus ? "jetstream" : "local"
					};
				}
			}
		},

		methods: {
			async enqueueEvent(
				this: any,
				t: Transaction,
				name: string,
				data: unknown,
				o: { aggregateId: string; requestId?: string | null }
			): Promise<string> {
				const [id] = (await this.enqueueEvents(
					t,
					[{ name, data, aggregateId: o.aggregateId }],
					o.requestId ?? null
				)) as string[];
				return id!;
			},

			async enqueueEvents(
				this: any,
				t: Transaction,
				events: readonly { name: string; data: unknown; aggregateId: string }[],
				requestId: string | null
			): Promise<string[]> {
				if (events.length === 0) return [];
				const write: DeferredWrite & { ids: string[] } = this.outboxWrite(
					events,
					requestId
				);
				// Sent with the transaction's last statement when its owner takes deferred writes.
				await writeOrDefer(this.sequelize as Sequelize, t, write);
				t.afterCommit(() => this.kickRelay());
				return write.ids;
			},

			outboxWrite(
				this: any,
				events: readonly { name: string; data: unknown; aggregateId: string }[],
				requestId: string | null
			): DeferredWrite & { ids: string[] } {
				const ids = events.map(() => crypto.randomUUID());
				const bind: unknown[] = [requestId];
				const rows = events.map((e, i) => {
					bind.push(ids[i], e.name, e.aggregateId, JSON.stringify(e.data));
					const n = bind.length;
					return `($${n - 3}, $${n - 2}, $${n - 1}, $${n}::jsonb, $1)`;
				});
				return {
					sql: `INSERT INTO outbox (id, name, aggregate_id, data, request_id) VALUES ${rows.join(", ")}`,
					bind,
					ids
				};
			},

			kickRelay(this: any): void {
				// Not before DbMixin has migrated the database (no outbox table yet on a first start).
				if (this.$outboxStopping || this.$dbReady === false) return;
				if (this.$outboxRun) {
					this.$outboxAgain = true;
					return;
				}
				// The relay publishes every request's events: it runs outside the request that woke
				// it (each publication runs with its own event's requestId, below).
				this.$outboxRun = withRequestId(null, async () => {
					try {
						// Commits during this wait are published by the same pass.
						if (batchDelayMs > 0) await delay(batchDelayMs);
						for (;;) {
							this.$outboxAgain = false;
							const sent: number = await this.relayOnce();
							if (this.$outboxStopping) break;
							// A full batch: there is more. Another node holds the lock: try shortly.
							if (sent === batchSize) continue;
							if (sent < 0) {
								await delay(50);
								if ((await this.relayOnce()) === batchSize) continue;
							}
							if (!this.$outboxAgain) break;
						}
					} catch (err) {
						this.logger.warn(
							"Outbox relay pass failed; retrying on the next poll",
							err
						);
					} finally {
						this.$outboxRun = null;
					}
				});
			},

			/**
			 * One relay pass under the database's outbox lock.
			 * @returns rows published, or -1 when another node holds the lock
			 */
			/** Unpublished rows and the age of the oldest, in ms (0 when none). */
			async outboxBacklog(this: any): Promise<OutboxBacklog> {
				const [row] = (await fastQuery(
					this.sequelize as Sequelize,
					`SELECT count(*)::int AS pending,
						COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)) * 1000, 0)::bigint AS age
					 FROM outbox WHERE published_at IS NULL`,
					{ type: QueryTypes.SELECT }
				)) as { pending: number; age: string }[];
				return { pending: row!.pending, oldestPendingAgeMs: Number(row!.age) };
			},

			async relayOnce(this: any): Promise<number> {
				const sequelize = this.sequelize as Sequelize;
				const sent = await sequelize.transaction(async t => {
					const [lock] = (await fastQuery(
						sequelize,
						"SELECT pg_try_advisory_xact_lock(hashtext('shop.outbox')) AS locked",
						{ type: QueryTypes.SELECT, transaction: t }
					)) as { locked: boolean }[];
					if (!lock!.locked) return -1;
					const rows = (await fastQuery(
						sequelize,
						`SELECT seq, id, name, aggregate_id, data, request_id, created_at FROM outbox
						 WHERE published_at IS NULL ORDER BY seq LIMIT $1`,
						{ bind: [batchSize], type: QueryTypes.SELECT, transaction: t }
					)) as OutboxRow[];
					const published: string[] = [];
					for (const row of rows) {
						const event: DomainEvent = {
							id: row.id,
							name: row.name,
							source: this.name,
							aggregateId: row.aggregate_id,
							occurredAt: new Date(row.created_at).toISOString(),
							requestId: row.request_id,
							data: row.data
						};
						if (faults.includes("crash-before-publish")) crash();
						const ok = await withRequestId(event.requestId, async () => {
							try {
								await this.publishEvent(event);
								return true;
							} catch (err) {
								this.logger.warn(
									`Could not publish ${event.name} ${event.id}; will retry`,
									err
								);
								return false;
							}
						});
						if (!ok) break;
						published.push(row.id);
						if (faults.includes("crash-after-publish")) crash();
					}
					if (published.length > 0)
						await fastQuery(
							sequelize,
							"UPDATE outbox SET published_at = now() WHERE id = ANY($1::uuid[])",
							{ bind: [published], transaction: t }
						);
					return published.length;
				});
				if (sent > 0) {
					this.$outboxPublished += sent;
					if (this.broker.isMetricsEnabled())
						this.broker.metrics.increment(
							"shop.outbox.published.total",
							{ service: this.name },
							sent
						);
				}
				if (sent >= 0 && this.broker.isMetricsEnabled()) {
					const backlog: OutboxBacklog = await this.outboxBacklog();
					this.broker.metrics.set("shop.outbox.pending", backlog.pending, {
						service: this.name
					});
					this.broker.metrics.set("shop.outbox.lag.ms", backlog.oldestPendingAgeMs, {
						service: this.name
					});
				}
				return sent;
			},

			/** JetStream publish (acknowledged by the server), or in-process delivery. */
			async publishEvent(this: any, event: DomainEvent): Promise<void> {
				const bus = this.$outboxBus as JetStreamBus | null;
				if (bus) {
					const ack = await bus.js.publish(
						eventSubject(event.name),
						Buffer.from(JSON.stringify(event)),
						{ msgID: event.id, timeout: 5_000 }
					);
					// A re-send after a crash, dropped by the server's duplicate window.
					if (ack.duplicate) this.$outboxServerDuplicates++;
				} else {
					await deliverLocally(this.broker, event);
				}
				// Live, non-durable listeners (best effort).
				this.broker.emit(event.name, event.data).catch(() => undefined);
			}
		}
	};
}

// ---------------------------------------------------------------------------------------------
// Inbox

export interface InboxMixinOptions {
	/** Deliveries before dead-lettering (default `EVENT_MAX_DELIVER`). */
	readonly maxDeliver?: number;
	/** JetStream ack wait, in ms (default `EVENT_ACK_WAIT_MS`). */
	readonly ackWaitMs?: number;
}

/** A dead letter as admins see it. */
export interface DeadLetter {
	id: string;
	consumer: string;
	eventId: string;
	eventName: string;
	event: unknown;
	error: string;
	deliveries: number;
	createdAt: string;
	replayedAt: string | null;
}

interface DeadLetterRow {
	id: string;
	consumer: string;
	event_id: string;
	event_name: string;
	event: unknown;
	error: string;
	deliveries: number;
	created_at: Date;
	replayed_at: Date | null;
}

function toDeadLetter(r: DeadLetterRow): DeadLetter {
	return {
		id: r.id,
		consumer: r.consumer,
		eventId: r.event_id,
		eventName: r.event_name,
		event: r.event,
		error: r.error,
		deliveries: r.deliveries,
		createdAt: new Date(r.created_at).toISOString(),
		replayedAt: r.replayed_at ? new Date(r.replayed_at).toISOString() : null
	};
}

/** Whether `x` has the shape of a DomainEvent (a message that does not is poison). */
function isDomainEvent(x: unknown): x is DomainEvent {
	const e = x as DomainEvent;
	return (
		typeof e === "object" &&
		e !== null &&
		typeof e.id === "string" &&
		e.id.length > 0 &&
		e.id.length <= 200 &&
		typeof e.name === "string" &&
		typeof e.aggregateId === "string" &&
		typeof e.data === "object" &&
		e.data !== null
	);
}

/**
 * Idempotent durable consumers for the schema's `durableEvents` (see the file's doc comment).
 * Adds the actions `<service>.listDeadLetters` ({ page, pageSize, pending }) and
 * `<service>.replayDeadLetter` ({ id }) for admins, and `<service>.inboxStatus`.
 * @throws EVENTS_DEAD_LETTER_NOT_FOUND (404), EVENTS_REPLAY_FAILED (409) from the replay action
 */
export function InboxMixin(opts: InboxMixinOptions = {}): Partial<ServiceSchema> {
	const maxDeliver = opts.maxDeliver ?? config().eventMaxDeliver;
	const ackWaitMs = opts.ackWaitMs ?? config().eventAckWaitMs;

	async function stopConsumers(this: any): Promise<void> {
		if (this.$inboxStopping) return;
		this.$inboxStopping = true;
		for (const [event, list] of localRegistry(this.broker))
			localRegistry(this.broker).set(
				event,
				list.filter(c => !this.$inboxLocal.includes(c))
			);
		clearInterval(this.$inboxLagTimer);
		for (const sub of this.$inboxSubs) sub.stop();
		await Promise.allSettled([...this.$inboxInFlight]);
		await Promise.allSettled(this.$inboxLoops);
		if (this.$inboxBusUrl) await releaseBus(this.$inboxBusUrl);
	}

	return {
		merged(schema: ServiceSchema): void {
			runStoppedFirst(schema, stopConsumers);
			runStoppedFirst(schema, stopRetention);
		},

		hooks: {
			after: {
				/**
				 * The service's readiness answer (DbMixin's) gains `events`: its consumers' lag;
				 * a consumer behind its stream's retention is reported, not made unready.
				 */
				async readiness(this: any, _ctx: unknown, res: object): Promise<object> {
					return { ...res, events: await this.eventsReadiness() };
				}
			}
		},

		created(this: any): void {
			this.$inboxStopping = false;
			this.$inboxSubs = [] as { stop(): void }[];
			this.$inboxLoops = [] as Promise<void>[];
			this.$inboxInFlight = new Set<Promise<unknown>>();
			this.$inboxLocal = [] as LocalConsumer[];
			this.$inboxBusUrl = null;
			this.$inboxStats = { processed: 0, duplicates: 0, redeliveries: 0, deadLettered: 0 };
			this.$inboxDurables = [] as string[];
			this.$inboxBus = null;
			this.$inboxLagTimer = null;
			const retention = config().retention;
			addRetentionTask(this, {
				table: "inbox",
				sql: `DELETE FROM inbox WHERE (consumer, event_id) IN (SELECT consumer, event_id
					FROM inbox WHERE processed_at < ${CUTOFF} ORDER BY processed_at LIMIT $1)`,
				windowMs: retention.inboxMs
			});
			addRetentionTask(this, {
				table: "dead_letters",
				sql: `DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters
					WHERE replayed_at < ${CUTOFF} LIMIT $1)`,
				windowMs: retention.deadLetterMs
			});
			register(
				this.broker,
				"counter",
				"shop.events.processed.total",
				"Durable events applied"
			);
			register(
				this.broker,
				"counter",
				"shop.events.duplicates.total",
				"Redelivered events suppressed by the inbox"
			);
			register(
				this.broker,
				"counter",
				"shop.events.redeliveries.total",
				"Failed deliveries that were retried"
			);
			register(
				this.broker,
				"counter",
				"shop.events.dead_letters.total",
				"Events dead-lettered"
			);
		},

		async started(this: any): Promise<void> {
			const handlers = (this.schema.durableEvents ?? {}) as Record<
				string,
				DurableEventHandler
			>;
			const url = busUrl();
			if (!url) {
				for (const event of Object.keys(handlers)) {
					const consumer = `${this.name}.${event}`;
					const local: LocalConsumer = {
						consumer,
						deliver: async e => {
							for (let n = 1, held = 0; ;) {
								if (this.$inboxStopping) throw new Error(`${consumer} is stopping`);
								const outcome = await this.track(
									this.applyEvent(consumer, e, n, null)
								);
								// The database is away: wait for it without spending a delivery.
								if (outcome === "unavailable") {
									await delay(holdDelayMs(++held));
									continue;
								}
								if (outcome !== "failed") return;
								await delay(redeliveryDelayMs(n++));
							}
						}
					};
					const list = localRegistry(this.broker).get(event) ?? [];
					localRegistry(this.broker).set(event, [...list, local]);
					this.$inboxLocal.push(local);
				}
				startRetention.call(this);
				return;
			}
			const bus: JetStreamBus = await acquireBus(url, `${this.broker.nodeID}-events`);
			this.$inboxBusUrl = url;
			for (const event of Object.keys(handlers)) {
				const durable = await ensureConsumer(bus.jsm, this.name, event, {
					maxDeliver,
					ackWaitMs
				});
				this.$inboxDurables.push(durable);
				const consumer = await bus.js.consumers.get(EVENTS_STREAM, durable);
				const messages = await consumer.consume({ max_messages: 64 });
				this.$inboxSubs.push(messages);
				this.$inboxLoops.push(
					(async () => {
						for await (const m of messages) {
							if (this.$inboxStopping) {
								m.nak();
								continue;
							}
							await this.track(this.onMessage(durable, m, bus));
						}
					})().catch((err: unknown) => {
						if (!this.$inboxStopping)
							this.logger.error(`Consumer ${durable} stopped`, err);
					})
				);
			}
			this.$inboxBus = bus;
			registerMetrics(this.broker, [
				"eventsConsumerBehind",
				"eventsConsumerPending",
				"eventsConsumerOldestPendingAge"
			]);
			this.$inboxLagTimer = setInterval(
				() => void this.checkConsumerLag().catch(() => undefined),
				LAG_CHECK_INTERVAL_MS
			);
			this.$inboxLagTimer.unref?.();
			startRetention.call(this);
		},

		stopped: stopConsumers,

		actions: {
			...retentionActions(),
			/**
			 * Dead letters of this service's consumers, newest first (admin).
			 * @param pending - only those not replayed yet (default true)
			 * @returns `{ rows: DeadLetter[], total, page, pageSize, totalPages }`
			 */
			listDeadLetters: {
				visibility: "published",
				params: {
					$$strict: true,
					page: {
						type: "number",
						integer: true,
						min: 1,
						max: 10_000,
						optional: true,
						convert: true
					},
					pageSize: {
						type: "number",
						integer: true,
						min: 1,
						max: 100,
						optional: true,
						convert: true
					},
					pending: { type: "boolean", optional: true, convert: true }
				},
				async handler(this: any, ctx: any) {
					if (ctx.meta.user && ctx.meta.user.role !== "admin")
						throw shopError("AUTH_FORBIDDEN");
					const page = ctx.params.page ?? 1;
					const pageSize = ctx.params.pageSize ?? 20;
					const where = ctx.params.pending === false ? "" : "WHERE replayed_at IS NULL";
					const rows = (await fastQuery(
						this.sequelize,
						`SELECT * FROM dead_letters ${where} ORDER BY created_at DESC LIMIT $1 OFFSET $2`,
						{ bind: [pageSize, (page - 1) * pageSize], type: QueryTypes.SELECT }
					)) as DeadLetterRow[];
					const [c] = (await fastQuery(
						this.sequelize,
						`SELECT count(*)::int AS n FROM dead_letters ${where}`,
						{ type: QueryTypes.SELECT }
					)) as { n: number }[];
					return {
						rows: rows.map(toDeadLetter),
						total: c!.n,
						page,
						pageSize,
						totalPages: Math.ceil(c!.n / pageSize)
					};
				}
			},

			/**
			 * Applies a dead-lettered event again (admin), once its cause is fixed.
			 * @returns the DeadLetter with `replayedAt` set
			 * @throws EVENTS_DEAD_LETTER_NOT_FOUND (404), EVENTS_REPLAY_FAILED (409, `data.error`)
			 */
			replayDeadLetter: {
				visibility: "published",
				params: { $$strict: true, id: { type: "uuid" } },
				async handler(this: any, ctx: any): Promise<DeadLetter> {
					if (ctx.meta.user && ctx.meta.user.role !== "admin")
						throw shopError("AUTH_FORBIDDEN");
					const [row] = (await fastQuery(
						this.sequelize,
						"SELECT * FROM dead_letters WHERE id = $1",
						{
							bind: [ctx.params.id],
							type: QueryTypes.SELECT
						}
					)) as DeadLetterRow[];
					if (!row) throw shopError("EVENTS_DEAD_LETTER_NOT_FOUND");
					if (!row.replayed_at) {
						if (!isDomainEvent(row.event))
							throw shopError("EVENTS_REPLAY_FAILED", undefined, {
								error: "The message is not a domain event"
							});
						try {
							await this.applyEvent(row.consumer, row.event, 1, null, true);
						} catch (err) {
							throw shopError("EVENTS_REPLAY_FAILED", undefined, {
								error: (err as Error).message
							});
						}
						await fastQuery(
							this.sequelize,
							"UPDATE dead_letters SET replayed_at = now() WHERE id = $1",
							{
								bind: [row.id]
							}
						);
					}
					const [after] = (await fastQuery(
						this.sequelize,
						"SELECT * FROM dead_letters WHERE id = $1",
						{
							bind: [row.id],
							type: QueryTypes.SELECT
						}
					)) as DeadLetterRow[];
					return toDeadLetter(after!);
				}
			},

			/**
			 * What this node's consumers did since it started, and the database's totals.
			 * @returns `{ processed, duplicates, redeliveries, deadLettered, inbox, deadLetters }`
			 */
			inboxStatus: {
				visibility: "public",
				params: {},
				async handler(this: any) {
					const [row] = (await fastQuery(
						this.sequelize,
						`SELECT (SELECT count(*)::int FROM inbox) AS inbox,
							(SELECT count(*)::int FROM dead_letters WHERE replayed_at IS NULL) AS dead`,
						{ type: QueryTypes.SELECT }
					)) as { inbox: number; dead: number }[];
					return { ...this.$inboxStats, inbox: row!.inbox, deadLetters: row!.dead };
				}
			}
		},

		methods: {
			/**
			 * Where each of this node's durable consumers stands against the stream's retention
			 * (platform/events/jetstream.ts `consumerLag`); sets the `shop_events_consumer_*` gauges and logs
			 * an error for each consumer behind. @returns one ConsumerLag per consumer ([] locally)
			 */
			async checkConsumerLag(this: any): Promise<ConsumerLag[]> {
				const bus = this.$inboxBus as JetStreamBus | null;
				if (!bus) return [];
				const alertMs = config().eventsConsumerLagAlertMs;
				const lags: ConsumerLag[] = await Promise.all(
					(this.$inboxDurables as string[]).map(d => consumerLag(bus.jsm, d, alertMs))
				);
				for (const l of lags) {
					const labels = { service: this.name, consumer: l.consumer };
					setMetric(this.broker, "eventsConsumerBehind", l.behind ? 1 : 0, labels);
					setMetric(this.broker, "eventsConsumerPending", l.pending, labels);
					setMetric(
						this.broker,
						"eventsConsumerOldestPendingAge",
						l.oldestPendingAgeMs,
						labels
					);
					if (l.behind)
						this.logger.error(
							`${l.consumer} is behind its stream's retention: ${l.pending} events pending, the oldest ${l.oldestPendingAgeMs} ms old${l.lost ? "; the stream dropped events it had not acknowledged" : ""}`
						);
				}
				return lags;
			},

			/**
			 * The `events` detail of the readiness answer.
			 * @returns `{ mode: "jetstream" | "local", behind: string[], consumers: ConsumerLag[] }`;
			 *   with `error` instead of consumers when JetStream did not answer
			 */
			async eventsReadiness(this: any): Promise<object> {
				if (!this.$inboxBus) return { mode: "local", behind: [], consumers: [] };
				try {
					const consumers: ConsumerLag[] = await this.checkConsumerLag();
					return {
						mode: "jetstream",
						behind: consumers.filter(c => c.behind).map(c => c.consumer),
						consumers
					};
				} catch (err) {
					return {
						mode: "jetstream",
						behind: [],
						error: err instanceof Error ? err.message : String(err)
					};
				}
			},

			track<T>(this: any, p: Promise<T>): Promise<T> {
				this.$inboxInFlight.add(p);
				return p.finally(() => this.$inboxInFlight.delete(p));
			},

			metric(this: any, name: string): void {
				if (this.broker.isMetricsEnabled())
					this.broker.metrics.increment(name, { service: this.name });
			},

			/**
			 * One delivery (`applyEventNow`) with the event's `requestId` current: the consumer's log
			 * lines carry the id of the request that caused the event.
			 */
			applyEvent(
				this: any,
				consumer: string,
				event: DomainEvent,
				delivery: number,
				bus: JetStreamBus | null,
				rethrow = false
			): Promise<ApplyOutcome> {
				return withRequestId(event.requestId, () =>
					this.applyEventNow(consumer, event, delivery, bus, rethrow)
				);
			},

			/**
			 * One delivery: inbox row + handler in one transaction. Returns what happened; on the
			 * last allowed delivery a failure is dead-lettered (and reported as "deadLettered").
			 * With `rethrow` (replay), a failure throws instead.
			 */
			async applyEventNow(
				this: any,
				consumer: string,
				event: DomainEvent,
				delivery: number,
				bus: JetStreamBus | null,
				rethrow = false
			): Promise<ApplyOutcome> {
				const handler = (this.schema.durableEvents ?? {})[event.name] as
					DurableEventHandler | undefined;
				try {
					if (!handler) throw new Error(`No durable handler for ${event.name}`);
					const applied = await (this.sequelize as Sequelize).transaction(async t => {
						const ins = (await fastQuery(
							this.sequelize,
							`INSERT INTO inbox (consumer, event_id, event_name) VALUES ($1, $2, $3)
							 ON CONFLICT DO NOTHING RETURNING event_id`,
							{
								bind: [consumer, event.id, event.name],
								type: QueryTypes.SELECT,
								transaction: t
							}
						)) as unknown[];
						if (ins.length === 0) return false;
						await handler.call(this, event, t);
						return true;
					});
					if (applied) {
						this.$inboxStats.processed++;
						this.metric("shop.events.processed.total");
						this.logger.info(
							`${consumer}: applied ${event.name} ${event.id} from ${event.source}`
						);
						return "applied";
					}
					this.$inboxStats.duplicates++;
					this.metric("shop.events.duplicates.total");
					return "duplicate";
				} catch (err) {
					if (rethrow) throw err;
					// Not the event's fault: its deliveries are not spent on the outage.
					if (isDatabaseUnavailable(err)) return "unavailable";
					if (delivery < maxDeliver) {
						this.$inboxStats.redeliveries++;
						this.metric("shop.events.redeliveries.total");
						this.logger.warn(
							`${consumer}: delivery ${delivery} of ${event.id} failed`,
							err
						);
						return "failed";
					}
					await this.deadLetter(
						consumer,
						event.id,
						event.name,
						event,
						err,
						delivery,
						bus
					);
					return "deadLettered";
				}
			},

			/** Records a dead letter (idempotently) and, with NATS, puts it on the DLQ stream. */
			async deadLetter(
				this: any,
				consumer: string,
				eventId: string,
				eventName: string,
				event: unknown,
				err: unknown,
				deliveries: number,
				bus: JetStreamBus | null
			): Promise<void> {
				const error = err instanceof Error ? err.message : String(err);
				this.logger.error(
					`${consumer}: ${eventName} ${eventId} dead-lettered after ${deliveries} deliveries: ${error}`
				);
				await fastQuery(
					this.sequelize as Sequelize,
					`INSERT INTO dead_letters (id, consumer, event_id, event_name, event, error, deliveries)
					 VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) ON CONFLICT (consumer, event_id) DO NOTHING`,
					{
						bind: [
							crypto.randomUUID(),
							consumer,
							eventId,
							eventName,
							JSON.stringify(event),
							error,
							deliveries
						]
					}
				);
				if (bus)
					await bus.js.publish(
						deadLetterSubject(consumer),
						Buffer.from(JSON.stringify(event)),
						{
							msgID: `${consumer}:${eventId}`,
							headers: toHeaders({
								"Shop-Error": error.slice(0, 1000),
								"Shop-Deliveries": String(deliveries),
								"Shop-Event-Name": eventName
							})
						}
					);
				this.$inboxStats.deadLettered++;
				this.metric("shop.events.dead_letters.total");
			},

			/** A JetStream delivery: apply, then ack (after the commit) / nak with backoff / term. */
			async onMessage(
				this: any,
				durable: string,
				m: JsMsg,
				bus: JetStreamBus
			): Promise<void> {
				const delivery = m.info.redeliveryCount;
				let event: unknown;
				try {
					event = JSON.parse(Buffer.from(m.data).toString("utf8"));
				} catch {
					event = undefined;
				}
				if (!isDomainEvent(event)) {
					// Poison: no retry can fix it.
					const raw = Buffer.from(m.data).toString("utf8").slice(0, 10_000);
					await this.deadLetter(
						durable,
						`stream-seq:${m.info.streamSequence}`,
						m.subject.replace(/^shop\.events\./, ""),
						{ raw },
						new Error("The message is not a domain event"),
						delivery,
						bus
					);
					m.term();
					return;
				}
				let outcome: ApplyOutcome;
				for (let held = 0; ;) {
					try {
						outcome = await this.applyEvent(durable, event, delivery, bus);
					} catch (err) {
						if (!isDatabaseUnavailable(err)) {
							// Dead-lettering itself failed: let JetStream redeliver.
							this.logger.warn(`${durable}: could not settle ${event.id}`, err);
							m.nak(redeliveryDelayMs(delivery));
							return;
						}
						outcome = "unavailable";
					}
					if (outcome !== "unavailable") break;
					// The database is away. A nak would spend one of the message's `max_deliver`
					// deliveries per try, and an outage longer than their backoffs would
					// dead-letter the event, or lose it when dead-lettering fails too. Keep the
					// message instead (`working()` restarts the server's ack wait) and try again
					// when the database answers; the messages behind it wait, as they would fail.
					if (this.$inboxStopping) {
						m.nak();
						return;
					}
					if (held++ % 20 === 0)
						this.logger.warn(
							`${durable}: the database does not answer; holding ${event.name} ${event.id} until it does`
						);
					m.working();
					await delay(holdDelayMs(held));
				}
				if (outcome === "failed") m.nak(redeliveryDelayMs(delivery));
				else await m.ackAck().catch(() => undefined);
			}
		}
	};
}

export { DLQ_STREAM, EVENTS_STREAM };
