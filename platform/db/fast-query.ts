/**
 * `fastQuery(db, sql, { bind, type, transaction })`: a parameterised statement sent straight to
 * node-postgres on the service's pg pool (`ShopDatabase`, platform/db/pool.ts), without
 * Sequelize's per-query work (option cloning, bind rewriting, result post-processing, its own
 * promise and logging wrappers). That work was about a sixth of the shop's CPU on the order path
 * (`PROF=1 npm run bench:saga`), for statements whose text and parameters we write ourselves.
 *
 * Result shapes are those of `sequelize.query`: `type: "SELECT"` (`QueryTypes.SELECT`) → the rows;
 * otherwise `[rows, result]` (pg's result, with `rowCount`), like a RAW query. Errors are those
 * Sequelize threw (platform/db/query-error.ts). A finished transaction is refused.
 *
 * Also accepted, through Sequelize's public API (`sequelize.query`), for the services that keep
 * moleculer-db's Sequelize adapter: a `Sequelize` instance as `db`, and a Sequelize transaction
 * (e.g. products' model writes and its outbox insert in one transaction): the statement then runs
 * on that transaction's connection.
 *
 * Only `bind` (an array, `$1`…), `type`, `transaction` and `commit` are understood.
 */
import {
	QueryTypes as SequelizeQueryTypes,
	Sequelize,
	type Transaction as SequelizeTransaction
} from "sequelize";
import { DbTransaction, ShopDatabase } from "./pool";

/** The result shapes `fastQuery` knows, by Sequelize's names (`QueryTypes.SELECT`). */
export enum QueryTypes {
	/** The rows. */
	SELECT = "SELECT",
	/** `[rows, result]`. */
	RAW = "RAW"
}

/** `type: SELECT` in any of its spellings. */
type Select = QueryTypes.SELECT | SequelizeQueryTypes.SELECT | "SELECT";

/** A transaction `fastQuery` can run in: the pg pool's, or (users, products) Sequelize's. */
export type Transaction = DbTransaction | SequelizeTransaction;

/** Either database handle: the pg pool, or a Sequelize instance (users, products). */
export type Database = ShopDatabase | Sequelize;

export interface FastQueryOptions {
	bind?: readonly unknown[];
	/** `QueryTypes.SELECT` (this module's or Sequelize's): the rows; else `[rows, result]`. */
	type?: Select | QueryTypes.RAW | SequelizeQueryTypes.RAW | "RAW";
	transaction?: Transaction | null;
	/**
	 * The transaction's last statement: with the pg pool's transaction, `COMMIT` is sent right
	 * behind it (DbTransaction.query); a Sequelize transaction commits when its callback ends.
	 */
	commit?: boolean;
}

/** Runs `sql`; see the module comment. @returns the rows (`type: SELECT`), else `[rows, result]` */
export function fastQuery(
	db: Database,
	sql: string,
	options: FastQueryOptions & { type: Select }
): Promise<object[]>;
export function fastQuery(
	db: Database,
	sql: string,
	options?: FastQueryOptions
): Promise<[object[], unknown]>;
export async function fastQuery(
	db: Database,
	sql: string,
	options: FastQueryOptions = {}
): Promise<object[] | [object[], unknown]> {
	const values = options.bind ?? [];
	const t = options.transaction;
	const select = (options.type as string | undefined) === "SELECT";
	if (t && !(t instanceof DbTransaction)) {
		// Sequelize refuses a finished transaction too; its connection may be another's now.
		const finished = (t as { finished?: string }).finished;
		if (finished) throw new Error(`The transaction is ${finished}: no statement may use it`);
		return sequelizeOf(db, t).query(sql, {
			bind: values as unknown[],
			transaction: t,
			type: select ? SequelizeQueryTypes.SELECT : SequelizeQueryTypes.RAW
		}) as Promise<object[] | [object[], unknown]>;
	}
	if (db instanceof Sequelize && !t)
		return db.query(sql, {
			bind: values as unknown[],
			type: select ? SequelizeQueryTypes.SELECT : SequelizeQueryTypes.RAW
		}) as Promise<object[] | [object[], unknown]>;
	if (!t && !(db instanceof ShopDatabase))
		throw new TypeError("fastQuery: no database handle (DbMixin's this.db)");
	const result = t
		? await t.query(sql, values, { commit: options.commit })
		: await (db as ShopDatabase).query(sql, values);
	return select ? result.rows : [result.rows, result];
}

/** The Sequelize instance a Sequelize transaction belongs to. */
function sequelizeOf(db: Database, t: SequelizeTransaction): Sequelize {
	if (db instanceof Sequelize) return db;
	const own = db.sequelize ?? (t as { sequelize?: unknown }).sequelize;
	if (own instanceof Sequelize) return own;
	throw new TypeError("fastQuery: a Sequelize transaction, and no Sequelize instance");
}
