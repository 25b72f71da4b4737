/**
 * `fastQuery(sequelize, sql, { bind, type, transaction })`: a parameterised statement sent
 * straight to node-postgres, on the transaction's connection or on one from Sequelize's pool,
 * without Sequelize's per-query work (option cloning, bind rewriting, result post-processing,
 * its own promise and logging wrappers). That work was about a sixth of the shop's CPU on the
 * order path (`PROF=1 npm run bench:saga`), for statements whose text and parameters we write
 * ourselves anyway.
 *
 * What callers keep from Sequelize: the same pool and connections (so the same type parsers and
 * the named prepared statements of platform/db/database.ts), the same result shapes (`type:
 * QueryTypes.SELECT` → the rows; otherwise `[rows, result]`, like a RAW query), and the same
 * errors: a failed statement is turned into Sequelize's error class by the dialect's own
 * `formatError` (e.g. `SequelizeUniqueConstraintError` for SQLSTATE 23505, `DatabaseError` with
 * `parent`/`original` otherwise), and a reset connection is marked invalid so the pool drops it,
 * as Sequelize's postgres `Query.run` does.
 *
 * Only `bind` (an array, `$1`…), `type` and `transaction` are understood: anything else (models,
 * replacements, hooks) needs `sequelize.query`.
 */
import { QueryTypes, type Sequelize, type Transaction } from "sequelize";

interface PgResult {
	rows: object[];
	rowCount: number | null;
}
interface PgConnection {
	query(text: string, values: unknown[]): Promise<PgResult>;
	_invalid?: boolean;
}
interface DialectQuery {
	formatError(err: unknown, stack?: string): Error;
}
interface SequelizeInternals {
	dialect: {
		Query: new (connection: unknown, sequelize: Sequelize, options: object) => DialectQuery;
	};
	connectionManager: {
		getConnection(opts: { type: "read" | "write" }): Promise<PgConnection>;
		releaseConnection(connection: PgConnection): Promise<void> | void;
	};
}

export interface FastQueryOptions {
	bind?: readonly unknown[];
	type?: QueryTypes.SELECT | QueryTypes.RAW;
	transaction?: Transaction | null;
}

/** Runs `sql`; see the module comment. @returns the rows (`type: SELECT`), else `[rows, result]` */
export function fastQuery(
	sequelize: Sequelize,
	sql: string,
	options: FastQueryOptions & { type: QueryTypes.SELECT }
): Promise<object[]>;
export function fastQuery(
	sequelize: Sequelize,
	sql: string,
	options?: FastQueryOptions
): Promise<[object[], unknown]>;
export async function fastQuery(
	sequelize: Sequelize,
	sql: string,
	options: FastQueryOptions = {}
): Promise<object[] | [object[], unknown]> {
	const seq = sequelize as unknown as SequelizeInternals;
	const values = (options.bind ?? []) as unknown[];
	const t = options.transaction as
		(Transaction & { connection?: PgConnection; finished?: string }) | null | undefined;
	let result: PgResult;
	let connection: PgConnection | undefined;
	try {
		if (t) {
			// Sequelize refuses a finished transaction too; its connection may be another's now.
			if (t.finished || !t.connection)
				throw new Error(
					`The transaction is ${t.finished ?? "not started"}: no statement may use it`
				);
			connection = t.connection;
			result = await connection.query(sql, values);
		} else {
			connection = await seq.connectionManager.getConnection({ type: "write" });
			try {
				result = await connection.query(sql, values);
			} finally {
				await seq.connectionManager.releaseConnection(connection);
			}
		}
	} catch (err) {
		const e = err as { code?: unknown; message?: unknown; name?: unknown };
		// Not a database's answer (the pool, a finished transaction): as it is.
		if (!connection || (typeof e.name === "string" && e.name.startsWith("Sequelize")))
			throw err;
		if (e.code === "ECONNRESET") connection._invalid = true;
		throw new seq.dialect.Query(connection, sequelize, {}).formatError(err);
	}
	return options.type === QueryTypes.SELECT ? result.rows : [result.rows, result];
}
