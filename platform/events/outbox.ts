/**
 * The transactional outbox's store: an event is written in the SAME transaction as the state
 * change it announces (both commit or neither does), read back in `seq` order by the relay
 * (platform/events/relay.ts) and marked once published. Its table: platform/events/migrations.ts.
 *
 * Patterns: Transactional Outbox (Chris Richardson,
 * microservices.io/patterns/data/transactional-outbox.html); the store side of eShop's
 * `IntegrationEventLogService` (dotnet/eShop src/IntegrationEventLogEF/Services/
 * IntegrationEventLogService.cs: `SaveEventAsync` in the caller's transaction,
 * `RetrieveEventLogsPendingToPublishAsync`, `MarkEventAsPublishedAsync`). Unlike eShop's outbox,
 * rows not confirmed as published are re-sent until they are.
 */
import crypto from "node:crypto";
import { fastQuery, QueryTypes, type Transaction } from "../db/fast-query";
import { writeOrDefer, type DeferredWrite } from "../db/deferred-writes";
import { RETENTION_CUTOFF, type RetentionTask } from "../retention";
import type { DomainEvent } from "./domain-event";
import { DbTransaction, type ShopDatabase } from "../db/pool";

/** An event to write: its name, payload and the entity it is about. */
export interface OutboxEvent {
	readonly name: string;
	readonly data: unknown;
	readonly aggregateId: string;
}

/** Unpublished rows and the age of the oldest, in ms (0 when none). */
export interface OutboxBacklog {
	pending: number;
	oldestPendingAgeMs: number;
}

/** An unpublished row as the relay reads it. */
export interface OutboxRow {
	seq: string;
	id: string;
	name: string;
	aggregate_id: string;
	data: unknown;
	request_id: string | null;
	created_at: Date;
}

/**
 * The outbox insert of `events` as a write to put in a statement of one's own (`prependWrites`,
 * platform/db/deferred-writes.ts), with the ids it gives them (UUIDs, in order).
 */
export function outboxWrite(
	events: readonly OutboxEvent[],
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
}

/**
 * Writes `events` in transaction `t` with one statement (sent with the transaction's last
 * statement when its owner takes deferred writes) and calls `committed` once `t` commits.
 * @returns their ids, in order
 */
export async function saveEvents(
	db: ShopDatabase,
	t: Transaction,
	events: readonly OutboxEvent[],
	requestId: string | null,
	committed: () => void
): Promise<string[]> {
	if (events.length === 0) return [];
	const write = outboxWrite(events, requestId);
	await writeOrDefer(db, t, write);
	t.afterCommit(committed);
	return write.ids;
}

/** Unpublished rows and the age of the oldest. */
export async function outboxBacklog(db: ShopDatabase): Promise<OutboxBacklog> {
	const [row] = (await fastQuery(
		db,
		`SELECT count(*)::int AS pending,
						COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)) * 1000, 0)::bigint AS age
					 FROM outbox WHERE published_at IS NULL`,
		{ type: QueryTypes.SELECT }
	)) as { pending: number; age: string }[];
	return { pending: row!.pending, oldestPendingAgeMs: Number(row!.age) };
}

/**
 * The database's outbox lock for this relay pass (a transaction-scoped advisory lock: one relay
 * per database at a time) and, when taken, at most `limit` unpublished rows in `seq` order. The
 * read goes in the lock's flight (DbTransaction.follow) and runs after it, so it sees the rows
 * the previous holder marked published; when the lock is not taken its rows are ignored.
 * @returns the rows, or null when another node holds the lock
 */
export async function lockPendingRows(
	db: ShopDatabase,
	t: Transaction,
	limit: number
): Promise<OutboxRow[] | null> {
	const read = {
		sql: `SELECT seq, id, name, aggregate_id, data, request_id, created_at FROM outbox
						 WHERE published_at IS NULL ORDER BY seq LIMIT $1`,
		bind: [limit]
	};
	const rows = t instanceof DbTransaction ? t.follow(read.sql, read.bind) : null;
	const [lock] = (await fastQuery(
		db,
		"SELECT pg_try_advisory_xact_lock(hashtext('shop.outbox')) AS locked",
		{ type: QueryTypes.SELECT, transaction: t }
	)) as { locked: boolean }[];
	if (!lock!.locked) return null;
	return (
		rows
			? (await rows).rows
			: await fastQuery(db, read.sql, {
					bind: read.bind,
					type: QueryTypes.SELECT,
					transaction: t
				})
	) as OutboxRow[];
}

/**
 * Marks the rows `ids` published: the relay pass's last statement, its COMMIT sent right behind
 * it (platform/db/pool.ts, DbTransaction).
 */
export async function markPublished(
	db: ShopDatabase,
	t: Transaction,
	ids: readonly string[]
): Promise<void> {
	await fastQuery(db, "UPDATE outbox SET published_at = now() WHERE id = ANY($1::uuid[])", {
		bind: [ids],
		transaction: t,
		commit: true
	});
}

/** The event a row holds, as emitted by service `source`. */
export function toDomainEvent(row: OutboxRow, source: string): DomainEvent {
	return {
		id: row.id,
		name: row.name,
		source,
		aggregateId: row.aggregate_id,
		occurredAt: new Date(row.created_at).toISOString(),
		requestId: row.request_id,
		data: row.data
	};
}

/** Retention of published rows, `windowMs` after their publication (unpublished ones never). */
export function outboxRetentionTask(windowMs: number): RetentionTask {
	return {
		table: "outbox",
		sql: `DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox
					WHERE published_at < ${RETENTION_CUTOFF} ORDER BY published_at LIMIT $1)`,
		windowMs
	};
}
