/**
 * Writes deferred to a transaction's last statement. Code that ends a transaction with a statement
 * of its own (`withIdempotency` completing the key's record) lets the transaction accept writes
 * (`acceptDeferredWrites`); a writer that does not need its write's answer (`enqueueEvents`, the
 * outbox insert) hands it over with `deferWrite` instead of sending it; the last statement then
 * carries the writes as data-modifying CTEs (`withDeferredWrites`): one round trip less per
 * write, and the rows the transaction locked are held for one round trip less.
 *
 * Sound because Postgres runs every data-modifying statement in `WITH` exactly once and to
 * completion, whether or not the main statement reads its result (PostgreSQL manual, "WITH
 * Queries", 7.8.4 "Data-Modifying Statements in WITH"), in the same transaction: the writes
 * commit or roll back with everything else. A transaction that never accepted deferred writes
 * gets none: `deferWrite` answers false and the writer sends its statement itself.
 *
 * Transactions are those `fastQuery` runs in (the pg pool's, or Sequelize's for users and
 * products: platform/db/fast-query.ts).
 *
 * An owner with no last statement of its own (the saga's final transaction, whose hooks write the
 * outbox) ends the transaction with `commitWithDeferredWrites`: the writes go as one statement with
 * the COMMIT right behind it (platform/db/pool.ts, DbTransaction), one round trip for both.
 *
 * The writes of one statement run in no defined order and see the same snapshot: they must not
 * touch the same rows as each other or as the last statement, nor depend on each other.
 */
import { fastQuery, type Database, type Transaction } from "./fast-query";

/** One deferred write: a data-modifying statement numbering its own parameters from `$1`. */
export interface DeferredWrite {
	readonly sql: string;
	readonly bind: readonly unknown[];
}

const pending = new WeakMap<Transaction, DeferredWrite[]>();

/** From now on, `t` takes deferred writes; its owner must end it with `withDeferredWrites`. */
export function acceptDeferredWrites(t: Transaction): void {
	pending.set(t, []);
}

/** Hands `write` to `t`'s last statement. @returns false when `t` does not take deferred writes */
export function deferWrite(t: Transaction | null | undefined, write: DeferredWrite): boolean {
	const writes = t ? pending.get(t) : undefined;
	if (!writes) return false;
	writes.push(write);
	return true;
}

/**
 * `sql` with `writes` in front of it as data-modifying CTEs, all in ONE statement (atomic: they
 * commit or fail together), the writes' parameters renumbered after `bind`'s. `sql` may have a
 * `WITH` of its own: the writes join its list (their names: `deferred_<n>`).
 */
export function prependWrites(
	sql: string,
	bind: readonly unknown[],
	writes: readonly DeferredWrite[]
): { sql: string; bind: unknown[] } {
	if (writes.length === 0) return { sql, bind: [...bind] };
	const all: unknown[] = [...bind];
	const ctes = writes.map((w, i) => {
		const offset = all.length;
		all.push(...w.bind);
		// Our writes' texts have no `$` but their parameters (no dollar quoting, no literals).
		const renumbered = w.sql.replace(/\$(\d+)/g, (_m, n: string) => `$${Number(n) + offset}`);
		return `deferred_${i} AS (${renumbered})`;
	});
	const own = /^\s*WITH\s+/i.exec(sql);
	return {
		sql: own
			? `WITH ${ctes.join(", ")}, ${sql.slice(own[0].length)}`
			: `WITH ${ctes.join(", ")} ${sql}`,
		bind: all
	};
}

/**
 * `sql` with `t`'s deferred writes in front of it (`prependWrites`); `t` takes no more deferred
 * writes.
 */
export function withDeferredWrites(
	t: Transaction,
	sql: string,
	bind: readonly unknown[]
): { sql: string; bind: unknown[] } {
	const writes = pending.get(t) ?? [];
	pending.delete(t);
	return prependWrites(sql, bind, writes);
}

/**
 * Makes `write` in transaction `t`: with its last statement when `t` takes deferred writes
 * (`deferWrite`), else now.
 */
export async function writeOrDefer(
	db: Database,
	t: Transaction,
	write: DeferredWrite
): Promise<void> {
	if (!deferWrite(t, write)) await fastQuery(db, write.sql, { bind: write.bind, transaction: t });
}

/**
 * Ends `t` with its deferred writes: one statement carrying them, sent with `COMMIT` right behind
 * it (fastQuery's `commit`); without any, nothing is sent and `t` commits as usual. `t` takes no
 * more deferred writes. It must be the transaction's last statement.
 */
export async function commitWithDeferredWrites(db: Database, t: Transaction): Promise<void> {
	const writes = pending.get(t) ?? [];
	pending.delete(t);
	if (writes.length === 0) return;
	const last = prependWrites("SELECT 1", [], writes);
	await fastQuery(db, last.sql, { bind: last.bind, transaction: t, commit: true });
}
