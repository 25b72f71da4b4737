/**
 * Postgres bootstrap shared by every service that stores data: which database a service uses,
 * creating it when missing, and a Sequelize instance for the services that keep moleculer-db's
 * Sequelize adapter (users, products). The pg pool every service queries is platform/db/pool.ts;
 * migrations are platform/db/migrations.ts.
 *
 * One Postgres server, one database per service (`users`, `products`, ...), as CONTRACT.md says.
 */
import { Client } from "pg";
import { Sequelize, type Options as SequelizeOptions } from "sequelize";
import { config, type DatabaseService } from "../config";
import { ShopDatabase, type ShopDatabaseOptions } from "./pool";
import { preparingPg } from "./prepared-statements";

export type { Migration } from "./migrations";
export { preparedName } from "./prepared-statements";

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

/** The pg pool of a service's database (platform/db/pool.ts), with the shop's settings. */
export function createDatabase(url: string, opts: ShopDatabaseOptions = {}): ShopDatabase {
	return new ShopDatabase(url, {
		preparedStatements: config().databasePreparedStatements,
		...opts
	});
}
