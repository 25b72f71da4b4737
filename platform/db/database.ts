/**
 * Postgres bootstrap shared by every service that stores data: which database a service uses,
 * creating it when missing, a Sequelize instance for it, and versioned migrations (umzug).
 *
 * One Postgres server, one database per service (`users`, `products`, ...), as CONTRACT.md says.
 */
import crypto from "node:crypto";
import * as pg from "pg";
import { Client } from "pg";
import { Sequelize, type Options as SequelizeOptions } from "sequelize";
import { SequelizeStorage, Umzug } from "umzug";
import { config, type DatabaseService } from "../config";

/** One versioned schema change. `up` runs inside a transaction with the others of its batch. */
export interface Migration {
	/** Sortable, unique within the service: `001-create-users`. */
	readonly name: string;
	/** Plain SQL run on the service's database. */
	readonly up: string;
	/** SQL undoing `up` (used by `migrateDown` in tests and by operators). */
	readonly down: string;
}

/** The database name of a service: `DATABASE_PREFIX` + service name. */
export function databaseName(service: DatabaseService): string {
	return `${config().databasePrefix}${service}`;
}

/**
 * The full connection URL of a service's database: `<SERVICE>_DATABASE_URL` when set, else
 * `DATABASE_URL` with the service's database name as its path.
 * @throws Error when neither is set (the start script sets DATABASE_URL for the embedded server).
 */
export function databaseUrl(service: DatabaseService): string {
	const c = config();
	const override = c.serviceDatabaseUrls[service];
	if (override) return override;
	if (!c.databaseUrl)
		throw new Error(
			`No database for "${service}": set DATABASE_URL (npm run db prints one) or ${service.toUpperCase()}_DATABASE_URL`
		);
	const u = new URL(c.databaseUrl);
	u.pathname = "/" + databaseName(service);
	return u.toString();
}

/**
 * Creates the database named in `url` when it does not exist, connecting to the server's
 * `postgres` maintenance database. Safe when several nodes race (duplicate_database is ignored).
 */
export async function ensureDatabase(url: string): Promise<void> {
	const target = new URL(url);
	const name = decodeURIComponent(target.pathname.replace(/^\//, ""));
	if (!/^[A-Za-z0-9_]+$/.test(name)) throw new Error(`Unsafe database name "${name}"`);
	const admin = new URL(url);
	admin.pathname = "/postgres";
	const client = new Client({
		connectionString: admin.toString(),
		connectionTimeoutMillis: 5000
	});
	await client.connect();
	try {
		const found = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
		if (found.rowCount === 0) {
			try {
				await client.query(`CREATE DATABASE "${name}"`);
			} catch (err) {
				// 42P04 duplicate_database: another node created it meanwhile.
				if ((err as { code?: string }).code !== "42P04") throw err;
			}
		}
	} finally {
		await client.end();
	}
}

/** Distinct statement texts given a name; past this, new texts run unnamed (as before). */
const MAX_PREPARED_TEXTS = 2_000;
const statementNames = new Map<string, string>();

/**
 * The name of a parameterised statement text: the same text always gets the same name, so each
 * connection parses it once (node-postgres keeps a connection's parsed statements by name) and
 * Postgres can reuse its plan. @returns null when the cache of names is full
 */
export function preparedName(text: string): string | null {
	let name = statementNames.get(text);
	if (name) return name;
	if (statementNames.size >= MAX_PREPARED_TEXTS) return null;
	name = `shop_${crypto.createHash("sha1").update(text).digest("hex").slice(0, 24)}`;
	statementNames.set(text, name);
	return name;
}

/**
 * node-postgres' Client, running every query that has bind parameters as a named (prepared)
 * statement. Sequelize sends its queries as `query(text, values, callback)`; texts without
 * parameters (DDL, `BEGIN`, Sequelize's inlined model queries) run as before. Off with
 * `DATABASE_PREPARED_STATEMENTS=false` (e.g. behind a pooler that does not keep them).
 * The pattern is the automatic prepared-statement cache of drivers such as pgx and Npgsql.
 */
class PreparingClient extends pg.Client {
	override query(...args: unknown[]): any {
		const [text, values, callback] = args;
		if (typeof text === "string" && Array.isArray(values) && values.length > 0) {
			const name = preparedName(text);
			if (name)
				return (super.query as (...a: unknown[]) => unknown)(
					{ name, text, values },
					callback
				);
		}
		return (super.query as (...a: unknown[]) => unknown)(...args);
	}
}

/** The `pg` module Sequelize loads, with `Client` replaced by `PreparingClient`. */
const preparingPg: typeof pg = Object.create(pg, { Client: { value: PreparingClient } });

/** A Sequelize instance for a service's database, with the shop's pool and logging settings. */
export function createSequelize(url: string, opts: Partial<SequelizeOptions> = {}): Sequelize {
	return new Sequelize(url, {
		dialect: "postgres",
		...(config().databasePreparedStatements ? { dialectModule: preparingPg } : {}),
		logging: false,
		pool: { max: 10, min: 0, idle: 10_000, acquire: 10_000 },
		define: { underscored: true, timestamps: true },
		retry: { max: 0 },
		...opts
	});
}

/**
 * Applies the pending migrations of one service, in name order, under a Postgres advisory lock so
 * two nodes starting together never run them twice.
 * @returns the names of the migrations applied now.
 */
export async function migrate(
	sequelize: Sequelize,
	migrations: readonly Migration[]
): Promise<string[]> {
	const umzug = new Umzug({
		migrations: [...migrations]
			.sort((a, b) => a.name.localeCompare(b.name))
			.map(m => ({
				name: m.name,
				up: async () => {
					await sequelize.transaction(async transaction => {
						await sequelize.query(m.up, { transaction });
					});
				},
				down: async () => {
					await sequelize.transaction(async transaction => {
						await sequelize.query(m.down, { transaction });
					});
				}
			})),
		storage: new SequelizeStorage({ sequelize, tableName: "schema_migrations" }),
		logger: undefined
	});
	// Session-level advisory lock held on one dedicated connection for the whole run.
	const lockKey = 0x5ec0de; // any constant: one lock per database
	const lockConn = await sequelize.connectionManager.getConnection({ type: "write" });
	const raw = lockConn as unknown as { query(sql: string): Promise<unknown> };
	try {
		await raw.query(`SELECT pg_advisory_lock(${lockKey})`);
		const applied = await umzug.up();
		return applied.map(m => m.name);
	} finally {
		await raw.query(`SELECT pg_advisory_unlock(${lockKey})`).catch(() => undefined);
		sequelize.connectionManager.releaseConnection(lockConn);
	}
}

/** Names of the migrations not yet applied (readiness checks use it). */
export async function pendingMigrations(
	sequelize: Sequelize,
	migrations: readonly Migration[]
): Promise<string[]> {
	const storage = new SequelizeStorage({ sequelize, tableName: "schema_migrations" });
	const done = new Set(await storage.executed());
	return migrations.map(m => m.name).filter(n => !done.has(n));
}
