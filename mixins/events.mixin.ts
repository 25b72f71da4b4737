/**
 * Durable domain events wired into a service: `OutboxMixin` on the emitting side, `InboxMixin`
 * on the consuming side. The engines live in platform/events/ (one concern per file); these
 * mixins only give them the service's database, name and lifecycle.
 *
 * Emitting (`OutboxMixin`, needs DbMixin and `outboxMigrations`):
 * - `this.enqueueEvent(t, name, data, { aggregateId })` writes the event in the SAME transaction as
 *   the state change (platform/events/outbox.ts); after the commit the relay is woken.
 * - The relay (platform/events/relay.ts: one per service database at a time) publishes unsent rows
 *   in `seq` order to JetStream with `Nats-Msg-Id` = the row id (at-least-once, re-sends dropped
 *   by the server's duplicate window), or in-process without a transporter, then emits each as a
 *   plain Moleculer event (best effort) for live, non-durable listeners. It also runs every
 *   `OUTBOX_POLL_MS`.
 *
 * Consuming (`InboxMixin`, needs DbMixin and `inboxMigrations`): the schema's `durableEvents`
 * `{ "<entity>.<pastTenseVerb>": async function (event, t) {...} }`. Each delivery runs in one
 * database transaction with its inbox record (platform/events/inbox.ts): a redelivery has no
 * second effect; the message is acknowledged only after that transaction commits
 * (platform/events/consumers.ts). A handler that keeps failing is retried with backoff up to
 * `EVENT_MAX_DELIVER` deliveries, then dead-lettered (platform/events/dead-letters.ts: a row in
 * `dead_letters` admins list and replay, and with NATS a message on `SHOP_DLQ`); the events
 * behind it keep flowing. An outage of the consumer's own database spends no delivery.
 *
 * Retention (platform/retention.ts, docs/retention.md): published outbox rows are purged
 * `OUTBOX_RETENTION_MS` after publication (unpublished ones never), inbox records
 * `INBOX_RETENTION_MS` after processing (never below the stream's `EVENTS_MAX_AGE_MS`, so an event
 * the stream may still redeliver is still deduplicated), dead letters `DEAD_LETTER_RETENTION_MS`
 * after their replay (pending ones are kept for an operator). A consumer that falls behind the
 * stream's retention is reported: `shop_events_consumer_behind` and the `events` detail of the
 * service's `readiness` answer.
 *
 * Metrics (with METRICS_PORT; platform/events/metrics.ts): `shop_outbox_pending`,
 * `shop_outbox_lag_ms`, `shop_outbox_published_total`, `shop_events_processed_total`,
 * `shop_events_duplicates_total`, `shop_events_redeliveries_total`,
 * `shop_events_dead_letters_total`, `shop_events_consumer_behind`,
 * `shop_events_consumer_pending`, `shop_events_consumer_oldest_pending_age`.
 *
 * Typed as the official Moleculer TypeScript template types its mixins: a `ServiceSchema` whose
 * handlers see the service plus the mixin (`OutboxThis`, `InboxThis`), and the exported method
 * interfaces (`OutboxMethods`, `InboxMethods`) a service adds to its own `this` type.
 */
import type { Service, ServiceSchema } from "moleculer";
import { config } from "../platform/config";
import type { ShopContext, ShopServiceSchema } from "../platform/context";
import type { DeferredWrite } from "../platform/db/deferred-writes";
import { shopError } from "../platform/errors";
import { runStoppedFirst } from "../platform/lifecycle";
import {
	addRetentionTask,
	retentionActions,
	startRetention,
	stopRetention
} from "../platform/retention";
import { DurableConsumers, type EventsReadiness } from "../platform/events/consumers";
import {
	deadLetterRetentionTask,
	listDeadLetters,
	replayDeadLetter,
	type DeadLetter,
	type DeadLetterPage
} from "../platform/events/dead-letters";
import type { DomainEvent } from "../platform/events/domain-event";
import { Inbox, inboxRetentionTask, type InboxStats } from "../platform/events/inbox";
import { registerInboxMetrics, registerOutboxMetrics } from "../platform/events/metrics";
import {
	outboxRetentionTask,
	outboxWrite,
	saveEvents,
	type OutboxEvent
} from "../platform/events/outbox";
import { OutboxRelay, type OutboxStatus, type RelayFault } from "../platform/events/relay";
import type { Transaction } from "../platform/db/fast-query";
import type { ShopDatabase } from "../platform/db/pool";

export type { DomainEvent } from "../platform/events/domain-event";
export type { DeadLetter } from "../platform/events/dead-letters";
export { outboxMigrations, inboxMigrations } from "../platform/events/migrations";
export { deliverLocally } from "../platform/events/bus";
export { holdDelayMs, redeliveryDelayMs } from "../platform/events/consumers";
export { DLQ_STREAM, EVENTS_STREAM } from "../platform/events/jetstream";

/**
 * A durable event handler: runs inside the consumer's transaction `t`, with the service as
 * `this`; throw to be redelivered. Its last statement may be sent with `commit: true`
 * (fastQuery): the transaction's COMMIT goes in the same flight, and no statement may follow. (Declared as a method, so that a handler may name its own
 * service's `this` type and its event's payload type.)
 */
export type DurableEventHandler = {
	handle(this: Service, event: DomainEvent, t: Transaction): Promise<void>;
}["handle"];

declare module "moleculer" {
	interface ServiceSchema {
		/** InboxMixin: durable event handlers by event name. */
		durableEvents?: Record<string, DurableEventHandler>;
	}
}

/** What the engines need of the service beyond Moleculer's own: DbMixin's database. */
interface DbHost {
	db: ShopDatabase;
	/** DbMixin's flag: migrated and connected. */
	$dbReady?: boolean;
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
	readonly faults?: readonly RelayFault[];
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
		events: readonly OutboxEvent[],
		requestId: string | null
	): Promise<string[]>;
	/**
	 * The outbox insert of `events` as a write to put in a statement of one's own
	 * (`prependWrites`, platform/db/deferred-writes.ts); once that statement committed, call `kickRelay`.
	 */
	outboxWrite(events: readonly OutboxEvent[], requestId: string | null): DeferredWrite;
	/** Runs the relay now (coalesced with a run in progress). */
	kickRelay(): void;
}

/** `this` of OutboxMixin's handlers: the service, its database, the mixin and its relay. */
type OutboxThis = Service & DbHost & OutboxMethods & { $outbox: OutboxRelay };

/**
 * The transactional outbox of an emitting service (see the file's doc comment).
 * Adds the action `<service>.outboxStatus` (internal/admin):
 * `{ pending, oldestPendingAgeMs, published, serverDuplicates, mode: "jetstream" | "local" }`.
 */
export function OutboxMixin(opts: OutboxMixinOptions = {}): Partial<ServiceSchema> {
	const relayOptions = {
		pollIntervalMs: opts.pollIntervalMs ?? config().outboxPollMs,
		batchSize: opts.batchSize ?? 200,
		batchDelayMs: opts.batchDelayMs ?? config().outboxBatchDelayMs,
		faults: opts.faults ?? config().outboxFaults,
		crash: opts.crash ?? ((): void => void process.kill(process.pid, "SIGKILL"))
	};

	async function stopRelay(this: OutboxThis): Promise<void> {
		// A last pass sends what the service committed while stopping.
		await this.$outbox.stop();
	}

	const schema: Partial<ShopServiceSchema<OutboxThis>> = {
		merged(schema: ServiceSchema): void {
			// Runs before DbMixin's stopped (Moleculer runs them in reverse): the DB is still open.
			runStoppedFirst(schema, stopRelay);
			runStoppedFirst(schema, stopRetention);
		},

		created(this: OutboxThis): void {
			this.$outbox = new OutboxRelay(this, relayOptions);
			registerOutboxMetrics(this.broker);
			addRetentionTask(this, outboxRetentionTask(config().retention.outboxMs));
		},

		async started(this: OutboxThis): Promise<void> {
			await this.$outbox.start();
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
				async handler(this: OutboxThis): Promise<OutboxStatus> {
					return this.$outbox.status();
				}
			}
		},

		methods: {
			async enqueueEvent(
				this: OutboxThis,
				t: Transaction,
				name: string,
				data: unknown,
				o: { aggregateId: string; requestId?: string | null }
			): Promise<string> {
				const [id] = await this.enqueueEvents(
					t,
					[{ name, data, aggregateId: o.aggregateId }],
					o.requestId ?? null
				);
				return id!;
			},

			enqueueEvents(
				this: OutboxThis,
				t: Transaction,
				events: readonly OutboxEvent[],
				requestId: string | null
			): Promise<string[]> {
				return saveEvents(this.db, t, events, requestId, () => this.kickRelay());
			},

			outboxWrite(
				this: OutboxThis,
				events: readonly OutboxEvent[],
				requestId: string | null
			): DeferredWrite {
				return outboxWrite(events, requestId);
			},

			kickRelay(this: OutboxThis): void {
				this.$outbox.kick();
			}
		}
	};
	return schema as Partial<ServiceSchema>;
}

// ---------------------------------------------------------------------------------------------
// Inbox

export interface InboxMixinOptions {
	/** Deliveries before dead-lettering (default `EVENT_MAX_DELIVER`). */
	readonly maxDeliver?: number;
	/** JetStream ack wait, in ms (default `EVENT_ACK_WAIT_MS`). */
	readonly ackWaitMs?: number;
}

/** What InboxMixin adds to `this`. */
export interface InboxMethods {
	/**
	 * The `events` detail of the readiness answer: each consumer's lag against the stream's
	 * retention (`{ mode, behind, consumers }`, or `error` when JetStream did not answer).
	 */
	eventsReadiness(): Promise<EventsReadiness>;
}

/** `this` of InboxMixin's handlers: the service, its database, the mixin and its engines. */
type InboxThis = Service &
	DbHost &
	InboxMethods & {
		$inbox: Inbox;
		$consumers: DurableConsumers;
	};

type DeadLetterListParams = { page?: number; pageSize?: number; pending?: boolean };

/** Refuses a caller that is not an admin (internal calls carry no user). */
function adminOnly(ctx: ShopContext<unknown>): void {
	if (ctx.meta.user && ctx.meta.user.role !== "admin") throw shopError("AUTH_FORBIDDEN");
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

	async function stopConsumers(this: InboxThis): Promise<void> {
		await this.$consumers.stop();
	}

	const schema: Partial<ShopServiceSchema<InboxThis>> = {
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
				async readiness(this: InboxThis, _ctx: unknown, res: object): Promise<object> {
					return { ...res, events: await this.eventsReadiness() };
				}
			}
		},

		created(this: InboxThis): void {
			// The handler of an event, looked up at each delivery, with the service as `this`.
			const handlerFor = (name: string) => {
				const h = this.schema.durableEvents?.[name];
				return h && ((e: DomainEvent, t: Transaction) => h.call(this, e, t));
			};
			this.$inbox = new Inbox(this, handlerFor, maxDeliver);
			this.$consumers = new DurableConsumers(this, this.$inbox, { maxDeliver, ackWaitMs });
			const retention = config().retention;
			addRetentionTask(this, inboxRetentionTask(retention.inboxMs));
			addRetentionTask(this, deadLetterRetentionTask(retention.deadLetterMs));
			registerInboxMetrics(this.broker);
		},

		async started(this: InboxThis): Promise<void> {
			await this.$consumers.start(Object.keys(this.schema.durableEvents ?? {}));
			startRetention.call(this);
		},

		stopped: stopConsumers,

		actions: {
			...retentionActions(),
			/**
			 * Dead letters of this service's consumers, newest first (admin).
			 * @param pending - only those not replayed yet (default true)
			 * @returns `{ rows: DeadLetter[], total, page, pageSize, totalPages }`
			 * @throws AUTH_FORBIDDEN (403) for a caller who is not an admin
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
				async handler(
					this: InboxThis,
					ctx: ShopContext<DeadLetterListParams>
				): Promise<DeadLetterPage> {
					adminOnly(ctx);
					const { page = 1, pageSize = 20, pending } = ctx.params;
					return listDeadLetters(this.db, page, pageSize, pending);
				}
			},

			/**
			 * Applies a dead-lettered event again (admin), once its cause is fixed.
			 * @returns the DeadLetter with `replayedAt` set
			 * @throws AUTH_FORBIDDEN (403), EVENTS_DEAD_LETTER_NOT_FOUND (404),
			 *   EVENTS_REPLAY_FAILED (409, `data.error`)
			 */
			replayDeadLetter: {
				visibility: "published",
				params: { $$strict: true, id: { type: "uuid" } },
				async handler(
					this: InboxThis,
					ctx: ShopContext<{ id: string }>
				): Promise<DeadLetter> {
					adminOnly(ctx);
					return replayDeadLetter(this.db, ctx.params.id, (consumer, event) =>
						this.$inbox.apply(consumer, event, 1, null, true)
					);
				}
			},

			/**
			 * What this node's consumers did since it started, and the database's totals.
			 * @returns `{ processed, duplicates, redeliveries, deadLettered, inbox, deadLetters }`
			 */
			inboxStatus: {
				visibility: "public",
				params: {},
				async handler(
					this: InboxThis
				): Promise<InboxStats & { inbox: number; deadLetters: number }> {
					return this.$inbox.status();
				}
			}
		},

		methods: {
			eventsReadiness(this: InboxThis): Promise<EventsReadiness> {
				return this.$consumers.readiness();
			}
		}
	};
	return schema as Partial<ServiceSchema>;
}
