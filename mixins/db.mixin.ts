/**
 * `DbMixin({ service, migrations, models })`: moleculer-db with the Sequelize adapter on the
 * service's OWN Postgres database (CONTRACT.md: one database per service on one server).
 *
 * On start it creates the database if missing, applies the service's versioned migrations (umzug,
 * under an advisory lock; never `sync()`), connects the adapter (retrying every second while
 * Postgres is down, moleculer-db's behaviour) and then calls the schema's `afterConnected` (seeding).
 *
 * The Sequelize instance and the models are built in `merged()`, not passed in the mixin schema:
 * Moleculer deep-clones mixin schemas, which would give every clone its own pool.
 *
 * Adds the action `<service>.readiness` (not published over REST): answers
 * `{ database: "ok", pendingMigrations: 0 }` or throws `SERVICE_UNAVAILABLE`.
 */
import type { ServiceSchema } from "moleculer";
import DbServiceMixin from "moleculer-db";
import SequelizeDbAdapter from "moleculer-db-adapter-sequelize";
import type { ModelStatic, Sequelize } from "sequelize";
import { type DatabaseService } from "../platform/config";
import {
	createSequelize,
	databaseUrl,
	ensureDatabase,
	migrate,
	pendingMigrations,
	type Migration
} from "../platform/db/database";
import { shopError } from "../platform/errors";

/** The models of a service, by name; the one named by `mainModel` backs moleculer-db's adapter. */
export type ModelMap = Record<string, ModelStatic<any>>;

export interface DbMixinOptions<M extends ModelMap> {
	/** Whose database: also its name (with `DATABASE_PREFIX`). */
	readonly service: DatabaseService;
	readonly migrations: readonly Migration[];
	/** Defines the service's models on its Sequelize instance (no `sync()`: migrations own DDL). */
	readonly models: (sequelize: Sequelize) => M;
	/** The model moleculer-db's adapter wraps. */
	readonly mainModel: keyof M & string;
}

/** What the mixin adds to `this` of the service. */
export interface DbMixinMethods<M extends ModelMap> {
	/** The service's Sequelize instance (transactions: `this.sequelize.transaction(...)`). */
	sequelize: Sequelize;
	/** The service's models. */
	models: M;
	/** Clears this service's cached action results on every node (moleculer-db's clearCache). */
	clearCache(): Promise<void>;
}

declare module "moleculer" {
	interface ServiceSchema {
		/** moleculer-db adapter (set by DbMixin in `merged`). */
		adapter?: unknown;
		/** moleculer-db model (set by DbMixin in `merged`). */
		model?: unknown;
		/** Called by moleculer-db once the adapter is connected (seeding). */
		afterConnected?: (this: any) => Promise<void> | void;
		/** Called with the merged schema before the service is created. */
		merged?: ((schema: ServiceSchema) => void) | ((schema: ServiceSchema) => void)[];
		/** DbMixin's private wiring. */
		$db?: {
			sequelize: Sequelize;
			models: ModelMap;
			url: string;
			migrations: readonly Migration[];
		};
	}
}

/**
 * Builds the mixin for one service.
 * @example mixins: [DbMixin({ service: "products", migrations, models: defineModels, mainModel: "Product" })]
 */
export function DbMixin<M extends ModelMap>(opts: DbMixinOptions<M>): Partial<ServiceSchema> {
	return {
		mixins: [DbServiceMixin as unknown as Partial<ServiceSchema>],

		settings: {
			idField: "id",
			pageSize: 20,
			maxPageSize: 100
		} as ServiceSchema["settings"],

		merged(schema: ServiceSchema): void {
			const url = databaseUrl(opts.service);
			const sequelize = createSequelize(url);
			const models = opts.models(sequelize);
			const main = models[opts.mainModel];
			if (!main) throw new Error(`DbMixin: no model "${opts.mainModel}"`);
			schema.$db = { sequelize, models, url, migrations: opts.migrations };
			// A defined Model class makes the adapter skip sync().
			schema.model = main;
			schema.adapter = new SequelizeDbAdapter(sequelize);
		},

		created(this: any): void {
			const db = this.schema.$db as NonNullable<ServiceSchema["$db"]>;
			this.sequelize = db.sequelize;
			this.models = db.models;
			/** True once the database is migrated and connected (the outbox relay waits for it). */
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
				async handler(this: any): Promise<{ database: "ok"; pendingMigrations: number }> {
					const db = this.schema.$db as NonNullable<ServiceSchema["$db"]>;
					try {
						await db.sequelize.query("SELECT 1");
						const pending = await pendingMigrations(db.sequelize, db.migrations);
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
			},
			// moleculer-db's generic CRUD actions are not part of the shop's API: each service
			// declares its own validated actions.
			find: false,
			count: false,
			list: false,
			create: false,
			insert: false,
			get: false,
			update: false,
			remove: false
		},

		methods: {
			/** moleculer-db's connect, preceded by database creation and migrations. */
			async connect(this: any): Promise<void> {
				const db = this.schema.$db as NonNullable<ServiceSchema["$db"]>;
				await ensureDatabase(db.url);
				const applied = await migrate(db.sequelize, db.migrations);
				if (applied.length > 0)
					this.logger.info(`Applied migrations: ${applied.join(", ")}`);
				// For the start script's progress lines (app/shop.ts).
				this.$migrationsApplied = applied.length;
				await this.adapter.connect();
				this.$dbReady = true;
				if (typeof this.schema.afterConnected === "function")
					await this.schema.afterConnected.call(this);
			}
		}
	};
}
