/**
 * `IdempotencyMixin()`: a participant applies an idempotency key at most once and answers every
 * repeat of that key with the first outcome, success or business error.
 *
 * Sources: Stripe's idempotent requests (https://docs.stripe.com/api/idempotent_requests), which
 * save the status and body of the first request made with a key once the endpoint started
 * executing, success or failure, and answer retries with it; and the IETF HTTPAPI draft "The
 * Idempotency-Key HTTP Header Field" (draft-ietf-httpapi-idempotency-key-header), where one key
 * names one request and a key reused for a different request is an error. Deliberate differences:
 * a repeat that arrives while the first call is running waits for it (on the key's row) instead
 * of being refused with 409; transient and 5xx failures are NOT saved (Stripe saves 500s), so the
 * saga's retry with the same key runs again; a key reused for another ACTION is refused with
 * `IDEMPOTENCY_KEY_CONFLICT` (409), but the params of a repeat are not compared (no fingerprint:
 * the saga derives a step's params from its stored data, so they never differ); records are
 * purged `IDEMPOTENCY_KEY_RETENTION_MS` (7 d; never below the saga's deadline nor the reservation
 * TTL) after they were written, by the service's retention job (platform/retention.ts): a repeat
 * inside that window gets the first outcome, a key older than it is forgotten (the participants
 * also refuse a second effect by their own keys: one payment and one reservation per order).
 *
 * The key is `ctx.meta.idempotencyKey` (the order saga sends `<sagaId>:<stepName>` and, for a
 * compensation, `<sagaId>:<stepName>:compensate`). Its record lives in the service's own database,
 * table `idempotency_keys`, and is written in the SAME transaction as the effect it guards (the
 * transactional habit of eShop's request idempotency): either both commit or neither does, so a
 * crash between "did it" and "remembered it" cannot happen.
 *
 * What is stored:
 * - success: `outcome = 'OK'`, `response` = the action's answer (it must be JSON-safe: a replay
 *   answers the stored JSON, and so does the first call, so both are identical);
 * - a non-transient 4xx shop error (e.g. `INVENTORY_OUT_OF_STOCK`, `PAYMENTS_CARD_DECLINED`):
 *   `outcome = 'ERROR'`, `response = { type, code, message, data }`; a repeat rebuilds it with
 *   `shopError(type, message, data)`;
 * - nothing for transient errors (`isTransientError`: retryable, timeouts, the processor being
 *   down), 5xx and unexpected errors: the transaction rolls back and a retry with the same key
 *   runs again.
 *
 * Caveat: Moleculer copies `ctx.meta` into nested calls, so an action running under a key that
 * calls ANOTHER participant must give that call its own key.
 *
 * Needs `DbMixin` (for `this.db`) and `idempotencyMigrations` in the service's migrations.
 */
import type { Service, ServiceSchema } from "moleculer";
import { Errors } from "moleculer";
import type { ShopContext, ShopServiceSchema } from "../platform/context";
import type { Migration } from "../platform/db/database";
import {
	ERRORS,
	isTransientError,
	shopError,
	type ErrorData,
	type ErrorType
} from "../platform/errors";
import { fastQuery, QueryTypes, type Transaction } from "../platform/db/fast-query";
import { DbTransaction, type ShopDatabase } from "../platform/db/pool";
import { acceptDeferredWrites, withDeferredWrites } from "../platform/db/deferred-writes";
import { config } from "../platform/config";
import { runStoppedFirst } from "../platform/lifecycle";
import {
	addRetentionTask,
	retentionActions,
	startRetention,
	stopRetention
} from "../platform/retention";

/** The `idempotency_keys` table, to include in the service's migrations. */
export const idempotencyMigrations: readonly Migration[] = [
	{
		name: "910-create-idempotency-keys",
		up: `
CREATE TABLE idempotency_keys (
	key text PRIMARY KEY,
	action text NOT NULL,
	outcome text NOT NULL CHECK (outcome IN ('OK', 'ERROR')),
	response jsonb,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);`,
		down: "DROP TABLE idempotency_keys;"
	}
];

/**
 * What `work` decides, inside the transaction:
 * - `{ response }`: success; the transaction commits and `response` is the action's answer;
 * - `{ error }`: a business failure whose effects must be kept (the `REJECTED` reservation, the
 *   `DECLINED` payment); the transaction commits, then `error` is thrown. It must be a
 *   non-transient 4xx shop error; anything else rolls the transaction back and is thrown as is.
 *
 * `afterCommit` runs once the transaction committed, and only when `work` ran (never on a replay):
 * the place to emit events. Its failure is logged, not thrown (the outcome is already decided).
 */
export type IdempotentOutcome<R> =
	| { response: R; afterCommit?: () => Promise<void> }
	| { error: Error; afterCommit?: () => Promise<void> };

/** Options of `withIdempotency`. */
export interface IdempotencyOptions {
	/**
	 * Serialise with every other call holding the same lock name (a Postgres advisory
	 * transaction lock on `hashtext(lock)`, e.g. the order id), taken by the key's claim
	 * statement before the key's row (one round trip less); `work`'s statements come after it,
	 * so they see whatever the previous holder committed.
	 */
	lock?: string;
	/**
	 * The read `work` starts from (e.g. the order's reservation row, `FOR UPDATE`): sent right
	 * behind the key's claim, in the same flight (DbTransaction.follow), and run by the server
	 * after it (so after the lock); its rows are `work`'s second argument. A replay ignores them.
	 */
	read?: { sql: string; bind: readonly unknown[] };
}

/** What the mixin adds to `this`. */
export interface IdempotencyMixinMethods {
	/**
	 * Runs `work` at most once per `ctx.meta.idempotencyKey`, in one transaction with its record.
	 *
	 * Without a key it just runs `work` in a transaction (with the same `{ response } | { error }`
	 * handling). With a key, in ONE transaction: claims the key by inserting its record
	 * (`ON CONFLICT DO NOTHING`; a concurrent call with the key waits on that row until this
	 * transaction ends), and
	 * - already recorded for the same action: answers the stored response, or throws the stored
	 *   error;
	 * - recorded for another action: throws `IDEMPOTENCY_KEY_CONFLICT` (409), nothing runs;
	 * - claimed: runs `work`, completes the record with its outcome, commits, answers it.
	 *   A non-transient 4xx shop error THROWN by `work` rolls the transaction back (its partial
	 *   effects are undone); a second transaction stores it alone (unless a concurrent call with
	 *   the key committed first: its answer is the key's) and it is rethrown like a returned
	 *   `{ error }`. Two statements for the key on the common path (claim, complete), no lock or
	 *   savepoint round trips; the transaction's START TRANSACTION rides with the claim and its
	 *   COMMIT with the completion (platform/db/pool.ts, DbTransaction).
	 *
	 * @param ctx - the action's context; `ctx.meta.idempotencyKey` is the key (a non-empty string)
	 * @param action - the action's full name, e.g. `payments.charge`: a key belongs to one action
	 * @param work - the effect; runs with the transaction to use for every query, and
	 *   `opts.read`'s rows (undefined without it)
	 * @param opts - `lock` and `read` (IdempotencyOptions)
	 * @returns the first outcome's response (JSON-safe; as stored)
	 * @throws the first outcome's business error (rebuilt with `shopError`), IDEMPOTENCY_KEY_CONFLICT
	 *   (409), REQUEST_INVALID_ID (400) for a key that is not a non-empty string, and whatever
	 *   transient or unexpected error `work` throws (nothing stored)
	 */
	withIdempotency<R>(
		ctx: ShopContext<unknown>,
		action: string,
		work: (t: Transaction, read: object[] | undefined) => Promise<IdempotentOutcome<R>>,
		opts?: IdempotencyOptions
	): Promise<R>;
}

/** `this` of the mixin's handlers: the service, DbMixin's database and the mixin's method. */
type IdempotencyThis = Service &
	IdempotencyMixinMethods & {
		db: ShopDatabase;
		/** DbMixin's flag: migrated and connected. */
		$dbReady?: boolean;
	};

interface KeyRecord {
	action: string;
	outcome: "OK" | "ERROR";
	response: unknown;
}

interface StoredError {
	type: string;
	code: number;
	message: string;
	data?: ErrorData;
}

/** A non-transient 4xx error of the shop's table: a business outcome worth remembering. */
export function isStorableError(err: unknown): err is Error & { type: ErrorType } {
	if (typeof err !== "object" || err === null) return false;
	const type = (err as { type?: unknown }).type;
	if (typeof type !== "string" || !Object.prototype.hasOwnProperty.call(ERRORS, type))
		return false;
	return ERRORS[type as ErrorType].code < 500 && !isTransientError(err);
}

function storedError(err: Error & { type: ErrorType }): StoredError {
	const e = err as Error & { type: ErrorType; data?: ErrorData };
	return {
		type: e.type,
		code: ERRORS[e.type].code,
		message: e.message,
		...(e.data === undefined ? {} : { data: e.data })
	};
}

function rebuildError(stored: StoredError): Error {
	if (Object.prototype.hasOwnProperty.call(ERRORS, stored.type))
		return shopError(stored.type as ErrorType, stored.message, stored.data);
	// A type no longer in the table (stored by an older version): keep its wire form.
	return new Errors.MoleculerClientError(stored.message, stored.code, stored.type, stored.data);
}

/** A JSON-safe copy: what a replay will answer. */
const asStored = <R>(response: R): R =>
	response === undefined ? response : (JSON.parse(JSON.stringify(response)) as R);

/**
 * The mixin (see the file's doc comment); needs DbMixin and `idempotencyMigrations`. Adds
 * `withIdempotency` (IdempotencyMixinMethods) and the retention actions.
 */
export function IdempotencyMixin(): Partial<ServiceSchema> {
	const schema: Partial<ShopServiceSchema<IdempotencyThis>> = {
		merged(schema: ServiceSchema): void {
			runStoppedFirst(schema, stopRetention);
		},

		created(this: IdempotencyThis): void {
			addRetentionTask(this, {
				table: "idempotency_keys",
				sql: `DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys
					WHERE created_at < now() - $2::float8 * interval '1 millisecond'
					ORDER BY created_at LIMIT $1)`,
				windowMs: config().retention.idempotencyKeyMs
			});
		},

		started(this: IdempotencyThis): void {
			startRetention.call(this);
		},

		actions: retentionActions(),

		methods: {
			async withIdempotency<R>(
				this: IdempotencyThis,
				ctx: ShopContext<unknown>,
				action: string,
				work: (t: Transaction, read: object[] | undefined) => Promise<IdempotentOutcome<R>>,
				opts: IdempotencyOptions = {}
			): Promise<R> {
				const seq = this.db;
				const key: unknown = ctx.meta?.idempotencyKey;
				if (key !== undefined && key !== null && (typeof key !== "string" || key === ""))
					throw shopError("REQUEST_INVALID_ID", "The idempotency key must be a string", {
						action
					});

				type Decided =
					{ replay: KeyRecord } | { replay: null; outcome: IdempotentOutcome<R> };
				/** The stored record of a key another call committed: its answer is the key's. */
				const stored = async (t: Transaction): Promise<Decided> => {
					const found = (await fastQuery(
						seq,
						"SELECT action, outcome, response FROM idempotency_keys WHERE key = $1",
						{ bind: [key], type: QueryTypes.SELECT, transaction: t }
					)) as KeyRecord[];
					const rec = found[0]!;
					if (rec.action !== action)
						throw shopError(
							"IDEMPOTENCY_KEY_CONFLICT",
							`The idempotency key was used for ${rec.action}`,
							{ key, action, firstAction: rec.action }
						);
					return { replay: rec };
				};
				/**
				 * Claims the key: inserts its record (completed before the commit). A concurrent
				 * claim of the same key waits on this row until the first transaction ends: then
				 * it finds the committed record, or, if that rolled back, claims it itself.
				 */
				const claim = async (
					t: Transaction,
					outcome: "OK" | "ERROR",
					response: unknown
				): Promise<boolean> => {
					const bind = [key, action, outcome, JSON.stringify(response)];
					const rows = (await fastQuery(
						seq,
						opts.lock === undefined
							? `INSERT INTO idempotency_keys (key, action, outcome, response) VALUES ($1, $2, $3, $4::jsonb)
							 ON CONFLICT (key) DO NOTHING RETURNING key`
							: `WITH l AS (SELECT pg_advisory_xact_lock(hashtext($5)))
							 INSERT INTO idempotency_keys (key, action, outcome, response)
							 SELECT $1, $2, $3, $4::jsonb FROM l
							 ON CONFLICT (key) DO NOTHING RETURNING key`,
						{
							bind: opts.lock === undefined ? bind : [...bind, opts.lock],
							type: QueryTypes.SELECT,
							transaction: t
						}
					)) as { key: string }[];
					return rows.length > 0;
				};
				/** `opts.read`'s rows, read now in `t` (undefined without one). */
				const readFirst = async (t: Transaction): Promise<object[] | undefined> =>
					opts.read
						? fastQuery(seq, opts.read.sql, {
								bind: opts.read.bind,
								type: QueryTypes.SELECT,
								transaction: t
							})
						: undefined;
				let thrown: (Error & { type: ErrorType }) | null = null;
				const decided: Decided = await seq
					.transaction(async (t): Promise<Decided> => {
						if (typeof key !== "string") {
							if (opts.lock !== undefined)
								await fastQuery(seq, "SELECT pg_advisory_xact_lock(hashtext($1))", {
									bind: [opts.lock],
									transaction: t
								});
							const outcome = await work(t, await readFirst(t));
							if ("error" in outcome && !isStorableError(outcome.error))
								throw outcome.error;
							return { replay: null, outcome };
						}
						// The work's first read goes right behind the claim (one flight).
						const read =
							opts.read && t instanceof DbTransaction
								? t.follow(opts.read.sql, opts.read.bind)
								: null;
						if (!(await claim(t, "OK", null))) return stored(t);
						// The record's completion ends the transaction: writes that need no answer
						// (outbox rows) ride along with it (platform/db/deferred-writes.ts).
						acceptDeferredWrites(t);
						let outcome: IdempotentOutcome<R>;
						try {
							outcome = await work(t, read ? (await read).rows : await readFirst(t));
						} catch (err) {
							// Its partial effects must go: the whole transaction rolls back, and
							// the error is stored on its own below.
							if (isStorableError(err)) thrown = err;
							throw err;
						}
						if ("error" in outcome) {
							if (!isStorableError(outcome.error)) throw outcome.error;
							const last = withDeferredWrites(
								t,
								`UPDATE idempotency_keys SET outcome = 'ERROR', response = $2::jsonb WHERE key = $1`,
								[key, JSON.stringify(storedError(outcome.error))]
							);
							await fastQuery(seq, last.sql, {
								bind: last.bind,
								transaction: t,
								commit: true
							});
							return { replay: null, outcome };
						}
						const response = asStored(outcome.response);
						const last = withDeferredWrites(
							t,
							`UPDATE idempotency_keys SET response = $2::jsonb WHERE key = $1`,
							[key, JSON.stringify(response ?? null)]
						);
						await fastQuery(seq, last.sql, {
							bind: last.bind,
							transaction: t,
							commit: true
						});
						return { replay: null, outcome: { ...outcome, response } };
					})
					.catch(async (err: unknown): Promise<Decided> => {
						if (err !== thrown || thrown === null) throw err;
						const error: Error & { type: ErrorType } = thrown;
						// A business error thrown by `work`, its effects rolled back: store it
						// alone, unless another call with the key committed first (its answer wins).
						return seq.transaction(async t =>
							(await claim(t, "ERROR", storedError(error)))
								? { replay: null, outcome: { error } }
								: stored(t)
						);
					});

				if (decided.replay) {
					const rec = decided.replay;
					if (rec.outcome === "ERROR") throw rebuildError(rec.response as StoredError);
					return rec.response as R;
				}
				const { outcome } = decided;
				if (outcome.afterCommit) {
					try {
						await outcome.afterCommit();
					} catch (err) {
						this.logger.warn(`${action}: after-commit work failed`, err);
					}
				}
				if ("error" in outcome) throw outcome.error;
				return outcome.response;
			}
		}
	};
	return schema as Partial<ServiceSchema>;
}
