/**
 * The inbox: consumer-side deduplication. Each delivery of an event runs in ONE database
 * transaction that first inserts (consumer, event id) into `inbox`, then runs the consumer's
 * handler: a redelivery finds the row and has no second effect. A handler that fails is retried
 * (the caller redelivers) until its last allowed delivery, which dead-letters the event
 * (platform/events/dead-letters.ts). A failure because the consumer's own database does not
 * answer (platform/db/database-unavailable.ts) is no fault of the event: it spends no delivery.
 * Inbox records are purged `INBOX_RETENTION_MS` after processing. Table:
 * platform/events/migrations.ts.
 *
 * Pattern: Idempotent Consumer (Chris Richardson,
 * microservices.io/patterns/communication-style/idempotent-consumer.html); the transaction
 * boundary around the handler as in eShop's `TransactionBehavior`
 * (dotnet/eShop src/Ordering.API/Application/Behaviors/TransactionBehavior.cs).
 */
import { fastQuery, QueryTypes, type Transaction } from "../db/fast-query";
import { isDatabaseUnavailable } from "../db/database-unavailable";
import { withRequestId } from "../request-context";
import { traceConsumption } from "../tracing/event-span";
import { RETENTION_CUTOFF, type RetentionTask } from "../retention";
import { recordDeadLetter } from "./dead-letters";
import type { DomainEvent, EventsHost } from "./domain-event";
import type { JetStreamBus } from "./jetstream";
import { INBOX_METRICS, countInboxMetric } from "./metrics";

/** What one delivery came to; "unavailable": the consumer's database did not answer. */
export type ApplyOutcome = "applied" | "duplicate" | "failed" | "deadLettered" | "unavailable";

/**
 * A consumer's handler of one event: runs inside the delivery's transaction `t`. Its last
 * statement may be sent with `commit: true` (fastQuery): the transaction's COMMIT goes in the
 * same flight, and no statement may follow it.
 */
export type InboxHandler = (event: DomainEvent, t: Transaction) => Promise<void>;

/** What this node's consumers did since it started. */
export interface InboxStats {
	processed: number;
	duplicates: number;
	redeliveries: number;
	deadLettered: number;
}

/** The inbox of one consuming service (see the module comment). */
export class Inbox {
	readonly stats: InboxStats = { processed: 0, duplicates: 0, redeliveries: 0, deadLettered: 0 };

	/**
	 * @param handlerFor - the service's handler of an event name, looked up at each delivery
	 * @param maxDeliver - deliveries before dead-lettering
	 */
	constructor(
		private readonly host: EventsHost,
		private readonly handlerFor: (name: string) => InboxHandler | undefined,
		private readonly maxDeliver: number
	) {}

	/**
	 * One delivery (`applyNow`) with the event's `requestId` current: the consumer's log
	 * lines carry the id of the request that caused the event, and its span (when tracing is on)
	 * joins that request's trace (platform/tracing/event-span.ts).
	 */
	apply(
		consumer: string,
		event: DomainEvent,
		delivery: number,
		bus: JetStreamBus | null,
		rethrow = false
	): Promise<ApplyOutcome> {
		return withRequestId(event.requestId, () =>
			traceConsumption(this.host.broker, this.host.name, consumer, event, delivery, () =>
				this.applyNow(consumer, event, delivery, bus, rethrow)
			)
		);
	}

	/**
	 * One delivery: inbox row + handler in one transaction. Returns what happened; on the
	 * last allowed delivery a failure is dead-lettered (and reported as "deadLettered").
	 * With `rethrow` (replay), a failure throws instead.
	 */
	private async applyNow(
		consumer: string,
		event: DomainEvent,
		delivery: number,
		bus: JetStreamBus | null,
		rethrow: boolean
	): Promise<ApplyOutcome> {
		const { db, logger } = this.host;
		const handler = this.handlerFor(event.name);
		try {
			if (!handler) throw new Error(`No durable handler for ${event.name}`);
			const applied = await db.transaction(async t => {
				const ins = (await fastQuery(
					db,
					`INSERT INTO inbox (consumer, event_id, event_name) VALUES ($1, $2, $3)
							 ON CONFLICT DO NOTHING RETURNING event_id`,
					{
						bind: [consumer, event.id, event.name],
						type: QueryTypes.SELECT,
						transaction: t
					}
				)) as unknown[];
				if (ins.length === 0) return false;
				await handler(event, t);
				return true;
			});
			if (applied) {
				this.stats.processed++;
				this.count(INBOX_METRICS.processed);
				logger.info(`${consumer}: applied ${event.name} ${event.id} from ${event.source}`);
				return "applied";
			}
			this.stats.duplicates++;
			this.count(INBOX_METRICS.duplicates);
			return "duplicate";
		} catch (err) {
			if (rethrow) throw err;
			// Not the event's fault: its deliveries are not spent on the outage.
			if (isDatabaseUnavailable(err)) return "unavailable";
			if (delivery < this.maxDeliver) {
				this.stats.redeliveries++;
				this.count(INBOX_METRICS.redeliveries);
				logger.warn(`${consumer}: delivery ${delivery} of ${event.id} failed`, err);
				return "failed";
			}
			await this.deadLetter(consumer, event.id, event.name, event, err, delivery, bus);
			return "deadLettered";
		}
	}

	/** Records a dead letter (idempotently) and, with NATS, puts it on the DLQ stream. */
	async deadLetter(
		consumer: string,
		eventId: string,
		eventName: string,
		event: unknown,
		err: unknown,
		deliveries: number,
		bus: JetStreamBus | null
	): Promise<void> {
		const error = err instanceof Error ? err.message : String(err);
		this.host.logger.error(
			`${consumer}: ${eventName} ${eventId} dead-lettered after ${deliveries} deliveries: ${error}`
		);
		await recordDeadLetter(this.host.db, bus, {
			consumer,
			eventId,
			eventName,
			event,
			error,
			deliveries
		});
		this.stats.deadLettered++;
		this.count(INBOX_METRICS.deadLetters);
	}

	/**
	 * The node's stats and the database's totals.
	 * @returns `{ processed, duplicates, redeliveries, deadLettered, inbox, deadLetters }`
	 */
	async status(): Promise<InboxStats & { inbox: number; deadLetters: number }> {
		const [row] = (await fastQuery(
			this.host.db,
			`SELECT (SELECT count(*)::int FROM inbox) AS inbox,
							(SELECT count(*)::int FROM dead_letters WHERE replayed_at IS NULL) AS dead`,
			{ type: QueryTypes.SELECT }
		)) as { inbox: number; dead: number }[];
		return { ...this.stats, inbox: row!.inbox, deadLetters: row!.dead };
	}

	private count(name: (typeof INBOX_METRICS)[keyof typeof INBOX_METRICS]): void {
		countInboxMetric(this.host.broker, name, this.host.name);
	}
}

/** Retention of inbox records, `windowMs` after processing. */
export function inboxRetentionTask(windowMs: number): RetentionTask {
	return {
		table: "inbox",
		sql: `DELETE FROM inbox WHERE (consumer, event_id) IN (SELECT consumer, event_id
					FROM inbox WHERE processed_at < ${RETENTION_CUTOFF} ORDER BY processed_at LIMIT $1)`,
		windowMs
	};
}
