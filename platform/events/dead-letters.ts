/**
 * Dead letters: the events a consumer gave up on after its last allowed delivery (or that were
 * poison: not a domain event at all). Each is a row in the consumer's `dead_letters` table
 * (idempotently, per consumer and event) and, with NATS, a message on the `SHOP_DLQ` stream with
 * the error in headers; admins list them and replay one once its cause is fixed. Replayed ones
 * are purged `DEAD_LETTER_RETENTION_MS` after their replay; pending ones are kept for an operator.
 * Table: platform/events/migrations.ts.
 *
 * Pattern: Dead Letter Channel (Hohpe & Woolf, Enterprise Integration Patterns,
 * enterpriseintegrationpatterns.com/patterns/messaging/DeadLetterChannel.html).
 */
import crypto from "node:crypto";
import { fastQuery, QueryTypes } from "../db/fast-query";
import { shopError } from "../errors";
import { RETENTION_CUTOFF, type RetentionTask } from "../retention";
import { isDomainEvent, type DomainEvent } from "./domain-event";
import { deadLetterSubject, toHeaders, type JetStreamBus } from "./jetstream";
import type { ShopDatabase } from "../db/pool";

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

/** One page of dead letters. */
export interface DeadLetterPage {
	rows: DeadLetter[];
	total: number;
	page: number;
	pageSize: number;
	totalPages: number;
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

/** What one dead letter records. */
export interface DeadLetterInput {
	readonly consumer: string;
	readonly eventId: string;
	readonly eventName: string;
	/** The event, or `{ raw }` for a message that is not one. */
	readonly event: unknown;
	/** Why the last delivery failed. */
	readonly error: string;
	readonly deliveries: number;
}

/** Records a dead letter (idempotently) and, with NATS, puts it on the DLQ stream. */
export async function recordDeadLetter(
	db: ShopDatabase,
	bus: JetStreamBus | null,
	d: DeadLetterInput
): Promise<void> {
	await fastQuery(
		db,
		`INSERT INTO dead_letters (id, consumer, event_id, event_name, event, error, deliveries)
					 VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) ON CONFLICT (consumer, event_id) DO NOTHING`,
		{
			bind: [
				crypto.randomUUID(),
				d.consumer,
				d.eventId,
				d.eventName,
				JSON.stringify(d.event),
				d.error,
				d.deliveries
			]
		}
	);
	if (bus)
		await bus.js.publish(deadLetterSubject(d.consumer), Buffer.from(JSON.stringify(d.event)), {
			msgID: `${d.consumer}:${d.eventId}`,
			headers: toHeaders({
				"Shop-Error": d.error.slice(0, 1000),
				"Shop-Deliveries": String(d.deliveries),
				"Shop-Event-Name": d.eventName
			})
		});
}

/**
 * Dead letters, newest first.
 * @param pending - only those not replayed yet (unless false)
 */
export async function listDeadLetters(
	db: ShopDatabase,
	page: number,
	pageSize: number,
	pending: boolean | undefined
): Promise<DeadLetterPage> {
	const where = pending === false ? "" : "WHERE replayed_at IS NULL";
	const rows = (await fastQuery(
		db,
		`SELECT * FROM dead_letters ${where} ORDER BY created_at DESC LIMIT $1 OFFSET $2`,
		{ bind: [pageSize, (page - 1) * pageSize], type: QueryTypes.SELECT }
	)) as DeadLetterRow[];
	const [c] = (await fastQuery(db, `SELECT count(*)::int AS n FROM dead_letters ${where}`, {
		type: QueryTypes.SELECT
	})) as { n: number }[];
	return {
		rows: rows.map(toDeadLetter),
		total: c!.n,
		page,
		pageSize,
		totalPages: Math.ceil(c!.n / pageSize)
	};
}

/**
 * Applies dead letter `id` again with `apply` (the consumer's delivery, throwing on failure) and
 * marks it replayed; one already replayed is answered as it is.
 * @returns the DeadLetter with `replayedAt` set
 * @throws EVENTS_DEAD_LETTER_NOT_FOUND (404), EVENTS_REPLAY_FAILED (409, `data.error`)
 */
export async function replayDeadLetter(
	db: ShopDatabase,
	id: string,
	apply: (consumer: string, event: DomainEvent) => Promise<unknown>
): Promise<DeadLetter> {
	const [row] = (await fastQuery(db, "SELECT * FROM dead_letters WHERE id = $1", {
		bind: [id],
		type: QueryTypes.SELECT
	})) as DeadLetterRow[];
	if (!row) throw shopError("EVENTS_DEAD_LETTER_NOT_FOUND");
	if (!row.replayed_at) {
		if (!isDomainEvent(row.event))
			throw shopError("EVENTS_REPLAY_FAILED", undefined, {
				error: "The message is not a domain event"
			});
		try {
			await apply(row.consumer, row.event);
		} catch (err) {
			throw shopError("EVENTS_REPLAY_FAILED", undefined, {
				error: (err as Error).message
			});
		}
		await fastQuery(db, "UPDATE dead_letters SET replayed_at = now() WHERE id = $1", {
			bind: [row.id]
		});
	}
	const [after] = (await fastQuery(db, "SELECT * FROM dead_letters WHERE id = $1", {
		bind: [row.id],
		type: QueryTypes.SELECT
	})) as DeadLetterRow[];
	return toDeadLetter(after!);
}

/** Retention of replayed dead letters, `windowMs` after their replay (pending ones never). */
export function deadLetterRetentionTask(windowMs: number): RetentionTask {
	return {
		table: "dead_letters",
		sql: `DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters
					WHERE replayed_at < ${RETENTION_CUTOFF} LIMIT $1)`,
		windowMs
	};
}
