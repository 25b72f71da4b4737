/**
 * `DbMixin({ service, migrations, models?, mainModel? })`: the service's OWN Postgres database
 * (CONTRACT.md: one database per service on one server) as `this.db`, a pg pool
 * (`ShopDatabase`, platform/db/pool.ts) that the engines and the services query through
 * `fastQuery` (platform/db/fast-query.ts).
 *
 * With `models` and `mainModel` (users, products: moleculer-db's public API serves their catalog
 * and accounts), also moleculer-db with its Sequelize adapter on a Sequelize instance
 * (`this.sequelize`, `this.models`); without them, no Sequelize instance and no adapter.
 *
 * On start it creates the database if missing, applies the service's versioned migrations
 * (platform/db/migrations.ts: umzug, under an advisory lock; never `sync()`), connects the adapter
 * if any (retrying every second while Postgres is down, moleculer-db's behaviour, kept without
 * it) and then calls the schema's `afterConnected` (seeding). On stop it closes its pools.
 *
 * The pools and the models are built in `merged()`, not passed in the mixin schema: Moleculer
 * deep-clones mixin schemas, which would give every clone its own pool. Typed the way of the
 * official Moleculer TypeScript template: `ServiceSchema` with `this` typed by an interface.
 *
 * Adds the action `<service>.readiness` (not published over REST): answers
 * `{ database: "ok", pendingMigrations: 0 }` or throws `SERVICE_UNAVAILABLE`.
 */
import type { Service, ServiceSchema, ServiceSettingSchema } from "moleculer";
import DbServiceMixin from "moleculer-db";
import SequelizeDbAdapter from "moleculer-db-adapter-sequelize";
import type { ModelStatic, Sequelize } from "sequelize";
import { type DatabaseService } from "../platform/config";
import {
	createDatabase,
	createSequelize,
	databaseUrl,
	ensureDatabase,
	type Migration
} from "../platform/db/database";
import { migrate, pendingMigrations } from "../platform/db/migrations";
import type { ShopDatabase } from "../platform/db/pool";
import { shopError } from "../platform/errors";

/** The models of a service, by name; the one named by `mainModel` backs moleculer-db's adapter. */
export type ModelMap = Record<string, ModelStatic<any>>;

export interface DbMixinOptions<M extends ModelMap = ModelMap> {
	/** Whose database: also its name (with `DATABASE_PREFIX`). */
	readonly service: DatabaseService;
	readonly migrations: readonly Migration[];
	/**
	 * Defines the service's models on its Sequelize instance (no `sync()`: migrations own DDL).
	 * Only for a service served by moleculer-db's adapter; with `mainModel`.
	 */
	readonly models?: (sequelize: Sequelize) => M;
	/** The model moleculer-db's adapter wraps. */
	readonly mainModel?: keyof M & string;
}

/** What the mixin adds to `this` of the service. */
export interface DbMixinMethods<M extends ModelMap = ModelMap> {
	/** The service's database: `fastQuery(this.db, ...)`, `this.db.transaction(async t => ...)`. */
	db: ShopDatabase;
	/** The Sequelize instance of a service with models (users, products). */
	sequelize: Sequelize;
	/** The models of a service with models (users, products). */
	models: M;
	/** True once the database is migrated and connected (the outbox relay waits for it). */
	$dbReady: boolean;
	/** Clears this service's cached action results on every node (moleculer-db's clearCache). */
	clearCache(): Promise<void>;
}

/** The mixin's private wiring, built in `merged` (see the module comment). */
interface DbWiring {
	db: ShopDatabase;
	sequelize?: Sequelize;
	models?: ModelMap;
	url: string;
	migrations: readonly Migration[];
}

declare module "moleculer" {
	interface ServiceSchema {
		/** moleculer-db adapter (set by DbMixin in `merged`). */
		adapter?: unknown;
		/** moleculer-db model (set by DbMixin in `merged`). */
		model?: unknown;
		/** Called once the database is migrated and connected (seeding). */
		afterConnected?(): Promise<void> | void;
		/** Called with the merged schema before the service is created. */
		merged?: ((schema: ServiceSchema) => void) | ((schema: ServiceSchema) => void)[];
		/** DbMixin's private wiring. */
		$db?: DbWiring;
	}
}

/** The mixin's methods. */
interface DbOwnMethods {
	connect(): Promise<void>;
	clearCache(): Promise<void>;
}

/** The mixin's state on `this`. */
type DbVars = Omit<DbMixinMethods, keyof DbOwnMethods> & {
	/** Migrations applied by this start (for the start script's progress lines, app/shop.ts). */
	$migrationsApplied?: number;
	/** moleculer-db's adapter, with models. */
	adapter?: { connect(): Promise<void> };
};

/** `this` inside the mixin. */
type DbThis = Service<DbSettings> & DbVars & DbOwnMethods;

/** moleculer-db's settings (kept for the services with models). */
interface DbSettings extends ServiceSettingSchema {
	idField?: string;
	pageSize?: number;
	maxPageSize?: number;
}

/** The mixin's schema, typed the official template's way. */
type DbSchema = Partial<ServiceSchema<DbSettings, DbOwnMethods, DbVars>>;

/** Total connections one node opens to one database (platform/db/pool.ts: budget). */
const POOL_BUDGET = 10;

function wiring(svc: Service): DbWiring {
	const db = svc.schema.$db;
	if (!db) throw new Error("DbMixin: not wired (merged() did not run)");
	return db;
}

/**
 * Builds the mixin for one service.
 * @example mixins: [DbMixin({ service: "orders", migrations })]
 * @example mixins: [DbMixin({ service: "products", migrations, models: defineModels, mainModel: "Product" })]
 */
export function DbMixin<M extends ModelMap>(opts: DbMixinOptions<M>): Partial<ServiceSchema> {
	const withModels = opts.models !== undefined;
	if (withModels !== (opts.mainModel !== undefined))
		throw new Error("DbMixin: `models` and `mainModel` go together");

	const schema: DbSchema & ThisType<DbThis> = {
		settings: {
			idField: "id",
			pageSize: 20,
			maxPageSize: 100
		},

		merged(merged: ServiceSchema): void {
			const url = databaseUrl(opts.service);
			if (!opts.models || !opts.mainModel) {
				merged.$db = {
					db: createDatabase(url, { max: POOL_BUDGET }),
					url,
					migrations: opts.migrations
				};
				return;
			}
			// The budget split between the two pools (platform/db/pool.ts).
			const sequelize = createSequelize(url, {
				pool: { max: POOL_BUDGET / 2, min: 0, idle: 10_000, acquire: 10_000 }
			});
			const db = createDatabase(url, { max: POOL_BUDGET / 2 });
			db.sequelize = sequelize;
			const models = opts.models(sequelize);
			const main = models[opts.mainModel];
			if (!main) throw new Error(`DbMixin: no model "${opts.mainModel}"`);
			merged.$db = { db, sequelize, models, url, migrations: opts.migrations };
			// A defined Model class makes the adapter skip sync().
			merged.model = main;
			merged.adapter = new SequelizeDbAdapter(sequelize);
		},

		created(this: DbThis): void {
			const w = wiring(this);
			this.db = w.db;
			if (w.sequelize) this.sequelize = w.sequelize;
			if (w.models) this.models = w.models as never;
			this.$dbReady = false;
		},

		actions: {
			/**
			 * Readiness of this service's database: reachable and fully migrated.
			 * @returns `{ database: "ok", pendingMigrations: 0 }`
			 * @throws SERVICE_UNAVAILABLE with `data.reason`
			 */
			readiness: {
				visibility: "public",
				// Probed every few seconds (platform/node-health.ts, the gateway's /ready): no spans.
				tracing: false,
				params: {},
				async handler(
					this: DbThis
				): Promise<{ database: "ok"; pendingMigrations: number }> {
					const w = wiring(this);
					try {
						await w.db.query("SELECT 1");
						const pending = await pendingMigrations(w.db, w.migrations);
						if (pending.length > 0)
							throw shopError("SERVICE_UNAVAILABLE", "Migrations pending", {
								pending
							});
						return { database: "ok", pendingMigrations: 0 };
					} catch (err) {
						if ((err as { type?: string }).type === "SERVICE_UNAVAILABLE") throw err;
						throw shopError("SERVICE_UNAVAILABLE", "Database unreachable", {
							service: opts.service,
							// Not held against this node by circuit breakers (platform/db/database-unavailable.ts).
							dependency: "database",
							cause: err instanceof Error ? err.message : String(err)
						});
					}
				}
			}
		},

		methods: {
			/**
			 * Migrations (the database created first only when it does not exist yet: Postgres
			 * error 3D000), then moleculer-db's connect (with models). Sequelize is told the
			 * server's version (its `databaseVersion` option) from the migrations' connection,
			 * so its first `authenticate` opens no connection of its own to ask: start-up cost.
			 */
			async connect(this: DbThis): Promise<void> {
				const w = wiring(this);
				let applied: string[];
				try {
					applied = await migrate(w.db, w.migrations);
				} catch (err) {
					const e = err as { code?: string; parent?: { code?: string } };
					if (e.code !== "3D000" && e.parent?.code !== "3D000") throw err;
					await ensureDatabase(w.url);
					applied = await migrate(w.db, w.migrations);
				}
				const seqOptions = (
					w.sequelize as unknown as
						{ options: { databaseVersion: string | number } } | undefined
				)?.options;
				if (seqOptions && !seqOptions.databaseVersion) {
					const n = Number(
						(await w.db.query("SELECT current_setting('server_version_num') AS v"))
							.rows[0].v
					);
					seqOptions.databaseVersion = `${Math.floor(n / 10000)}.${n % 10000}.0`;
				}
				if (applied.length > 0)
					this.logger.info(`Applied migrations: ${applied.join(", ")}`);
				this.$migrationsApplied = applied.length;
				if (this.adapter) await this.adapter.connect();
				this.$dbReady = true;
				if (typeof this.schema.afterConnected === "function")
					await this.schema.afterConnected.call(this);
			},

			/** moleculer-db's `clearCache`: every node's cached results of this service. */
			async clearCache(this: DbThis): Promise<void> {
				void this.broker.broadcast(`cache.clean.${this.fullName}`);
				if (this.broker.cacher) await this.broker.cacher.clean(`${this.fullName}.**`);
			}
		},

		async stopped(this: DbThis): Promise<void> {
			const w = wiring(this);
			await w.db.close();
			// moleculer-db's adapter closes the Sequelize instance of a service with models.
		}
	};

	if (withModels) {
		// moleculer-db (its `started` connects, retrying; its `stopped` disconnects the adapter);
		// its generic CRUD actions are not part of the shop's API: each service declares its own.
		schema.mixins = [DbServiceMixin as unknown as ServiceSchema];
		Object.assign(schema.actions!, {
			find: false,
			count: false,
			list: false,
			create: false,
			insert: false,
			get: false,
			update: false,
			remove: false
		});
	} else {
		/** Connects, retrying every second while Postgres is down (moleculer-db's behaviour). */
		schema.started = function (this: DbThis): Promise<void> {
			return new Promise(resolve => {
				const connecting = (): void => {
					this.connect().then(resolve, (err: unknown) => {
						this.logger.error("Connection error!", err);
						setTimeout(() => {
							this.logger.warn("Reconnecting...");
							connecting();
						}, 1000);
					});
				};
				connecting();
			});
		};
	}
	return schema as Partial<ServiceSchema>;
}
