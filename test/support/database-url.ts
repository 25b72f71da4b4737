import { createDatabase, ensureDatabase } from "../../platform/db/database";
import type { ShopDatabase } from "../../platform/db/pool";

/**
 * The URL of database `name` on the jest run's shared Postgres (global-setup.ts sets
 * `DATABASE_URL`), derived with `URL`: the embedded server's URL carries its socket directory as
 * a query, so string concatenation would break it.
 */
export function sharedDatabaseUrl(name = "postgres"): string {
	const u = new URL(process.env.DATABASE_URL!);
	u.pathname = `/${name}`;
	return u.toString();
}

/**
 * A database of its own for one `describe` block on the jest run's shared Postgres: created (if
 * missing) with a pool of `max` connections before its tests, the pool closed and the database
 * dropped after them.
 * @param name - the database's name (make it unique to the suite, e.g. with `process.pid`)
 * @returns its URL, and a getter for the pool (set once `beforeAll` has run)
 */
export function useScratchDatabase(name: string, max = 3): { url: string; db: () => ShopDatabase } {
	const url = sharedDatabaseUrl(name);
	let db: ShopDatabase | null = null;
	beforeAll(async () => {
		await ensureDatabase(url);
		db = createDatabase(url, { max });
	});
	afterAll(async () => {
		await db?.close();
		const admin = createDatabase(sharedDatabaseUrl(), { max: 1 });
		await admin.query(`DROP DATABASE IF EXISTS "${name}"`);
		await admin.close();
	});
	return {
		url,
		db: () => {
			if (!db) throw new Error(`the scratch database ${name} is not created yet`);
			return db;
		}
	};
}
