/**
 * `ShopDatabase`: a service's handle on its OWN Postgres database, on node-postgres' public API
 * (`pg.Pool`, `PoolClient`): `query(sql, values)` and `transaction(fn)` (BEGIN, COMMIT or
 * ROLLBACK on one pooled connection, `afterCommit` hooks as Sequelize's transactions have). The
 * engines (saga, outbox and inbox, idempotency, retention) and the services' hot paths run on it
 * through `fastQuery` (platform/db/fast-query.ts).
 *
 * The same connections as the Sequelize instance of platform/db/database.ts gave them: the URL
 * (and with it SSL, a Unix socket's `host=`, any `options=`) from `databaseUrl(service)`, the
 * named prepared statements of platform/db/prepared-statements.ts, Sequelize's type parsers (pg's,
 * except `date`, which stays the `YYYY-MM-DD` text), and Sequelize's session settings
 * (`client_min_messages=warning`, the time zone `+00:00`), sent as start-up options: no extra
 * round trip.
 * A failed statement is turned into the error Sequelize threw for it (platform/db/query-error.ts).
 * A connection that broke (reset, terminated) is destroyed (`release(err)`), not returned to the
 * pool; a statement's own error (a constraint, a bad query) keeps the connection.
 *
 * Connection budget. Each pool opens at most `max` connections (default 10, as Sequelize's pool
 * did), lazily, and closes those idle for 10 s. One node holds one pool per database of its
 * services; users and products keep moleculer-db's Sequelize adapter for their catalog and
 * accounts, so their budget of 10 is split: 5 for Sequelize, 5 for this pool (mixins/db.mixin.ts).
 * So every node opens at most 10 connections per database it uses, as before:
 *   connections ≤ 10 × (database nodes) + 10 × (nodes a rollout adds) + a few for migrations'
 *   advisory lock and `ensureDatabase` (one each, while a node starts),
 * which must stay below the server's `max_connections`: 200 for the embedded Postgres
 * (tools/embedded-postgres.ts) and the k8s Postgres (deploy/k8s/postgres.yaml: 10 database nodes,
 * 100, plus a surge of 6 nodes, 60), `npm start` (one node, 6 databases: 60).
 */
import type { Writable } from "node:stream";
import * as pg from "pg";
import type { Sequelize } from "sequelize";
import { PreparingClient } from "./prepared-statements";
import { isBrokenConnection, toQueryError } from "./query-error";

/** Pool settings; the defaults are those of the Sequelize pool the shop used. */
export interface ShopDatabaseOptions {
	/** Most connections open at once (Sequelize's `pool.max`). */
	readonly max?: number;
	/** A connection idle this long (ms) is closed (Sequelize's `pool.idle`). */
	readonly idleTimeoutMillis?: number;
	/** Longest wait (ms) for a connection, pool slot and connect together (`pool.acquire`). */
	readonly connectionTimeoutMillis?: number;
	/** Named prepared statements (config `DATABASE_PREPARED_STATEMENTS`). */
	readonly preparedStatements?: boolean;
}

/** SQL isolation levels (`SET TRANSACTION ISOLATION LEVEL ...`). */
export type IsolationLevel = "READ COMMITTED" | "REPEATABLE READ" | "SERIALIZABLE";

/** Sequelize's `date` parser: the text as it is (pg's default would make a local-time Date). */
const parseDate = (value: string): string | number =>
	value === "infinity" ? Infinity : value === "-infinity" ? -Infinity : value;
const DATE_OID = 1082;
const DATE_ARRAY_OID = 1182;

/** pg-types' array parser (its typings omit it); Sequelize builds its array parsers with it. */
const arrayParser = (
	pg.types as unknown as {
		arrayParser: { create(v: string, p: (s: string) => unknown): { parse(): unknown[] } };
	}
).arrayParser;

/** Type parsers: pg's, except Sequelize's for `date` and `date[]`. */
const types: pg.CustomTypesConfig = {
	getTypeParser: ((oid: number, format?: string) => {
		if (oid === DATE_OID) return parseDate;
		if (oid === DATE_ARRAY_OID)
			return (value: string) => arrayParser.create(value, parseDate).parse();
		return pg.types.getTypeParser(oid, format as "text");
	}) as pg.CustomTypesConfig["getTypeParser"]
};

/**
 * Sequelize's session settings (its postgres connection manager runs `SET client_min_messages TO
 * warning; SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE`, which Postgres shows as `<+00>-00`).
 */
const SESSION_OPTIONS = "-c client_min_messages=warning -c TimeZone=<+00>-00";

/** A statement sent behind another (`DbTransaction.follow`), and its promise's ends. */
interface Follower {
	sql: string;
	values: readonly unknown[];
	resolve(result: pg.QueryResult): void;
	reject(err: unknown): void;
}

/**
 * One transaction: its statements run on `client`, one after the other.
 *
 * Its ends ride with its statements (node-postgres' pipelining, the pool's clients run with
 * `pipeline: true`): `START TRANSACTION` is sent with the first statement and `COMMIT` with a
 * statement sent `{ commit: true }`, each without waiting for the other's answer, so a
 * transaction of n statements costs n round trips instead of n + 2. The server runs them in
 * order, each answered on its own (PostgreSQL manual, "Pipeline Mode", and the protocol's
 * "Pipelining"). Safe because:
 * - a statement sent behind `START TRANSACTION` runs inside the transaction: that command fails
 *   only on a broken connection (inside a transaction it only warns; the pool never lends a
 *   connection with a transaction open), and if it ever failed the connection is destroyed and
 *   the statement's error raised, as for a broken connection (the outcome unknown);
 * - a `COMMIT` sent behind a statement that fails ends the transaction as a `ROLLBACK` (the
 *   server's answer to `COMMIT` in an aborted transaction): nothing of it is kept, and the
 *   statement's error is raised.
 */
export class DbTransaction {
	/** How it ended, once it did (statements on it are refused then). */
	finished: "commit" | "rollback" | undefined;
	/** The connection must not be reused (a failed `START TRANSACTION`): the error. */
	unusable: Error | undefined;
	private readonly hooks: ((t: DbTransaction) => void | Promise<void>)[] = [];
	/** `START TRANSACTION ...`, until the first statement carried it. */
	private begin: string | null;
	/** Statements to send right behind the next one (`follow`). */
	private followers: Follower[] = [];

	constructor(
		private readonly client: pg.PoolClient,
		begin = "START TRANSACTION"
	) {
		this.begin = begin;
	}

	/** True until a statement carried `START TRANSACTION` to the server. */
	get unsent(): boolean {
		return this.begin !== null;
	}

	/**
	 * Sends `sql` right behind this transaction's next statement, in the same flight, without
	 * waiting for that statement's answer: a read the caller needs next (e.g. the row a
	 * participant's work starts from, behind its idempotency key's claim). The server runs it
	 * after that statement, with a snapshot of its own, so it sees what a lock that statement
	 * waited for protected. It fails when that statement failed (the transaction is aborted),
	 * and when the transaction ends without another statement.
	 * @returns its result, once it answered
	 */
	follow(sql: string, values: readonly unknown[] = []): Promise<pg.QueryResult> {
		if (this.finished)
			return Promise.reject(
				new Error(`The transaction is ${this.finished}: no statement may use it`)
			);
		const answer = new Promise<pg.QueryResult>((resolve, reject) =>
			this.followers.push({ sql, values, resolve, reject })
		);
		// Handled here too: one never sent is refused when the transaction ends.
		answer.catch(() => undefined);
		return answer;
	}

	/** @internal ShopDatabase's end of the transaction: refuses followers never sent. */
	dropFollowers(): void {
		for (const f of this.followers.splice(0))
			f.reject(new Error("The transaction ended before the statement it followed"));
	}

	/**
	 * Runs `sql` in this transaction (the first statement carries `START TRANSACTION`).
	 * @param opts.commit - the transaction's last statement: `COMMIT` is sent right behind it;
	 *   when both succeed the transaction is committed (`finished = "commit"`, no statement
	 *   may follow; ShopDatabase.transaction sends no COMMIT of its own), when the statement
	 *   fails nothing of the transaction is kept
	 * @throws the normalised error (platform/db/query-error.ts)
	 */
	async query(
		sql: string,
		values: readonly unknown[] = [],
		opts: { commit?: boolean } = {}
	): Promise<pg.QueryResult> {
		if (this.finished)
			throw new Error(`The transaction is ${this.finished}: no statement may use it`);
		const begin = this.begin;
		const commit = opts.commit === true;
		const followers = this.followers.splice(0);
		if (commit && followers.length > 0) {
			for (const f of followers) f.reject(new Error("A follower may not precede a COMMIT"));
			throw new Error("A statement sent with commit may not carry followers");
		}
		if (begin === null && !commit && followers.length === 0) {
			try {
				return await this.client.query(sql, values as unknown[]);
			} catch (err) {
				throw toQueryError(err);
			}
		}
		this.begin = null;
		// Sent in this order before any answer, in one write (node-postgres sends a pipelined
		// query at once; corking its socket, as it does for one query's messages, joins them);
		// each settles on its own.
		const socket = (this.client as unknown as { connection?: { stream?: Partial<Writable> } })
			.connection?.stream;
		socket?.cork?.();
		const none = Promise.resolve(null);
		let sent: [Promise<unknown>, Promise<pg.QueryResult>, Promise<unknown>];
		try {
			sent = [
				begin === null ? none : this.client.query(begin),
				this.client.query(sql, values as unknown[]),
				commit ? this.client.query("COMMIT") : none
			];
			for (const f of followers)
				this.client
					.query(f.sql, f.values as unknown[])
					.then(f.resolve, (err: unknown) => f.reject(toQueryError(err)));
		} finally {
			socket?.uncork?.();
		}
		const [began, ran, committed] = await Promise.allSettled(sent);
		if (began.status === "rejected") {
			this.unusable = began.reason as Error;
			throw toQueryError(began.reason);
		}
		if (ran.status === "rejected") throw toQueryError(ran.reason);
		if (committed.status === "rejected") throw toQueryError(committed.reason);
		if (commit) this.finished = "commit";
		return ran.value;
	}

	/** Runs `fn` once the transaction committed (awaited in order, as Sequelize does). */
	afterCommit(fn: (t: DbTransaction) => void | Promise<void>): void {
		this.hooks.push(fn);
	}

	/** @internal ShopDatabase's end of the transaction: its hooks. */
	async committed(): Promise<void> {
		this.finished = "commit";
		for (const hook of this.hooks) await hook(this);
	}
}

/** A service's database: a pg pool with the shop's settings (see the module comment). */
export class ShopDatabase {
	readonly pool: pg.Pool;
	/**
	 * The service's Sequelize instance when it keeps moleculer-db's adapter (users, products):
	 * `fastQuery` runs statements of its transactions there (platform/db/fast-query.ts).
	 */
	sequelize?: Sequelize;

	constructor(url: string, opts: ShopDatabaseOptions = {}) {
		const parsed = new URL(url);
		const own = parsed.searchParams.get("options");
		this.pool = new pg.Pool({
			connectionString: url,
			...(opts.preparedStatements === false
				? {}
				: { Client: PreparingClient as unknown as pg.PoolConfig["Client"] }),
			types,
			options: own ? `${own} ${SESSION_OPTIONS}` : SESSION_OPTIONS,
			max: opts.max ?? 10,
			min: 0,
			// A transaction's START TRANSACTION and COMMIT ride with its statements (DbTransaction).
			pipeline: true,
			idleTimeoutMillis: opts.idleTimeoutMillis ?? 10_000,
			connectionTimeoutMillis: opts.connectionTimeoutMillis ?? 10_000
		});
		// An idle connection that breaks is dropped by the pool; one that breaks while checked
		// out is marked, and destroyed when released. Without listeners, the connection's error
		// event would be an uncaught exception (Sequelize listens the same way).
		this.pool.on("error", () => undefined);
		this.pool.on("connect", client => {
			client.on("error", err => this.broken.set(client, err));
		});
	}

	/** Connections whose socket broke, with the error. */
	private readonly broken = new WeakMap<pg.PoolClient, Error>();

	/** Gives `client` back, or destroys it when it broke (`err`, or its own error event). */
	private release(client: pg.PoolClient, err?: Error): void {
		client.release(err ?? this.broken.get(client));
	}

	/** Runs `sql` on a pooled connection. @throws the normalised error */
	async query(sql: string, values: readonly unknown[] = []): Promise<pg.QueryResult> {
		const client = await this.pool.connect();
		let broken: Error | undefined;
		try {
			return await client.query(sql, values as unknown[]);
		} catch (err) {
			if (isBrokenConnection(err)) broken = err as Error;
			throw toQueryError(err);
		} finally {
			this.release(client, broken);
		}
	}

	/**
	 * Runs `fn` in a transaction on one connection: COMMIT when it resolves (then its
	 * `afterCommit` hooks), ROLLBACK when it throws (its error is rethrown).
	 * @returns what `fn` resolved to
	 */
	async transaction<T>(
		fn: (t: DbTransaction) => Promise<T>,
		opts: { isolationLevel?: IsolationLevel } = {}
	): Promise<T> {
		const client = await this.pool.connect();
		let released = false;
		/** Back to the pool, or destroyed when `err` says the connection is unusable. */
		const release = (err?: Error): void => {
			if (released) return;
			released = true;
			this.release(client, err);
		};
		const t = new DbTransaction(
			client,
			opts.isolationLevel
				? `START TRANSACTION ISOLATION LEVEL ${opts.isolationLevel}`
				: "START TRANSACTION"
		);
		try {
			let result: T;
			try {
				result = await fn(t);
			} catch (err) {
				if (t.unusable) {
					t.finished = "rollback";
					release(t.unusable);
					throw err;
				}
				if (t.finished === "commit") {
					// Its last statement committed it; `fn` failed afterwards.
					release();
					await t.committed();
					throw err;
				}
				t.finished = "rollback";
				if (t.unsent) {
					// Nothing reached the server.
					release();
					throw err;
				}
				// A connection that cannot roll back (it broke under `fn`) is not reused.
				await client.query("ROLLBACK").then(
					() => release(),
					(e: unknown) => release(e as Error)
				);
				throw err;
			}
			if (!t.finished && !t.unsent) {
				try {
					await client.query("COMMIT");
				} catch (err) {
					// Its outcome unknown: the connection is not reused (Sequelize does the same).
					t.finished = "commit";
					release(err as Error);
					throw toQueryError(err);
				}
			}
			release();
			await t.committed();
			return result;
		} finally {
			t.dropFollowers();
			release();
		}
	}

	/** A dedicated connection (e.g. for a session-level advisory lock); the caller releases it. */
	connect(): Promise<pg.PoolClient> {
		return this.pool.connect();
	}

	/** Closes every connection (a stopping service). */
	async close(): Promise<void> {
		if (!this.pool.ended && !this.pool.ending) await this.pool.end();
	}
}
