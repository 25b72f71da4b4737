/**
 * Versioned migrations of one service's database, on its pg pool (platform/db/pool.ts): umzug
 * runs them in name order, each in its own transaction, under a session-level advisory lock held
 * on one dedicated connection, so two nodes starting together never run them twice. Applied
 * names are kept in `schema_migrations` (`name`), the table umzug's SequelizeStorage kept them
 * in before (same DDL), through umzug's public storage interface (`UmzugStorage`).
 */
import { Umzug, type UmzugStorage } from "umzug";
import type { DbTransaction, ShopDatabase } from "./pool";

/** One versioned schema change. `up` runs inside a transaction with the others of its batch. */
export interface Migration {
	/** Sortable, unique within the service: `001-create-users`. */
	readonly name: string;
	/**
	 * Plain SQL run on the service's database, or a function given the migration's transaction,
	 * for data only the service's code can compute (e.g. users' e-mail identity keys).
	 */
	readonly up: string | ((t: DbTransaction) => Promise<void>);
	/** SQL undoing `up` (used by `migrateDown` in tests and by operators). */
	readonly down: string;
}

/** Any constant: one lock per database. */
const LOCK_KEY = 0x5ec0de;

/** The table SequelizeStorage created (a Sequelize `STRING` primary key, no timestamps). */
const CREATE_TABLE =
	'CREATE TABLE IF NOT EXISTS "schema_migrations" ("name" VARCHAR(255) NOT NULL UNIQUE , PRIMARY KEY ("name"));';

/** umzug's storage of applied migrations in `schema_migrations`. */
class PgStorage implements UmzugStorage {
	constructor(private readonly db: ShopDatabase) {}

	async logMigration({ name }: { name: string }): Promise<void> {
		await this.db.query(CREATE_TABLE);
		await this.db.query('INSERT INTO "schema_migrations" ("name") VALUES ($1)', [name]);
	}

	async unlogMigration({ name }: { name: string }): Promise<void> {
		await this.db.query(CREATE_TABLE);
		await this.db.query('DELETE FROM "schema_migrations" WHERE "name" = $1', [name]);
	}

	/** The applied names, in name order; none while the table does not exist yet. */
	async executed(): Promise<string[]> {
		try {
			const { rows } = await this.db.query(
				'SELECT "name" FROM "schema_migrations" ORDER BY "name" ASC'
			);
			return rows.map(r => (r as { name: string }).name);
		} catch (err) {
			// 42P01 undefined_table: nothing applied yet.
			const code = (err as { parent?: { code?: unknown } }).parent?.code;
			if (code === "42P01") return [];
			throw err;
		}
	}
}

/** umzug over `migrations`, each applied (or undone) in a transaction of its own. */
function umzugOf(db: ShopDatabase, migrations: readonly Migration[]): Umzug {
	return new Umzug({
		migrations: [...migrations]
			.sort((a, b) => a.name.localeCompare(b.name))
			.map(m => ({
				name: m.name,
				up: async () => {
					await db.transaction(async t => {
						if (typeof m.up === "function") await m.up(t);
						else await t.query(m.up);
					});
				},
				down: async () => {
					await db.transaction(async t => {
						await t.query(m.down);
					});
				}
			})),
		storage: new PgStorage(db),
		logger: undefined
	});
}

/**
 * Applies the pending migrations of one service, in name order, under a Postgres advisory lock so
 * two nodes starting together never run them twice.
 *
 * Every start after the first finds nothing pending: that is one query on one pooled connection
 * (the list of applied names), without the lock, which guards applying only: a name is listed
 * once its migration committed, and leaves the list only through `migrateDown`, after which it is
 * pending again. Otherwise the lock is taken on a dedicated connection and umzug applies what is
 * still pending once it is held.
 * @returns the names of the migrations applied now.
 */
export async function migrate(
	db: ShopDatabase,
	migrations: readonly Migration[]
): Promise<string[]> {
	if ((await pendingMigrations(db, migrations)).length === 0) return [];
	const umzug = umzugOf(db, migrations);
	// Session-level advisory lock held on one dedicated connection for the whole run.
	const lock = await db.connect();
	let broken: Error | undefined;
	try {
		await lock.query(`SELECT pg_advisory_lock(${LOCK_KEY})`);
		const applied = await umzug.up();
		return applied.map(m => m.name);
	} finally {
		await lock.query(`SELECT pg_advisory_unlock(${LOCK_KEY})`).catch((e: unknown) => {
			// Not unlocked: the session must end, or it would keep the lock.
			broken = e as Error;
		});
		lock.release(broken);
	}
}

/** Undoes the last `steps` applied migrations (tests, operators). @returns the names undone */
export async function migrateDown(
	db: ShopDatabase,
	migrations: readonly Migration[],
	steps = 1
): Promise<string[]> {
	const undone = await umzugOf(db, migrations).down({ step: steps });
	return undone.map(m => m.name);
}

/** Names of the migrations not yet applied (readiness checks use it). */
export async function pendingMigrations(
	db: ShopDatabase,
	migrations: readonly Migration[]
): Promise<string[]> {
	const done = new Set(await new PgStorage(db).executed());
	return migrations.map(m => m.name).filter(n => !done.has(n));
}
