/**
 * The ONE list of the shop's services: their names, their start order and which own a database.
 * Only app/ names every service (docs/architecture.md's floors): the one-process shop
 * (app/shop.ts), the cluster supervisor (tools/cluster.ts, bin/cluster.ts) and the tests read
 * them here. platform/ knows none of them; a service's database and its `<SERVICE>_DATABASE_URL`
 * are named after it (platform/config.ts, platform/db/database.ts).
 */

/** One service: `services/<name>/<name>.service.ts`. */
export interface ShopServiceEntry {
	/** The Moleculer service name, also its folder and its database's name. */
	readonly name: string;
	/** Whether it owns a database (its own, on the one Postgres server: CONTRACT.md). */
	readonly database: boolean;
}

/** Every service of the shop, in start order: the gateway last, once every service answers. */
export const SERVICES = [
	{ name: "users", database: true },
	{ name: "products", database: true },
	{ name: "inventory", database: true },
	{ name: "payments", database: true },
	{ name: "orders", database: true },
	{ name: "notifications", database: true },
	{ name: "api", database: false }
] as const satisfies readonly ShopServiceEntry[];

/** A service's name. */
export type ShopService = (typeof SERVICES)[number]["name"];

/** The services' names, in start order (the gateway last). */
export const SHOP_SERVICES: readonly ShopService[] = Object.freeze(SERVICES.map(s => s.name));

/** A service that owns a database. */
export type DatabaseService = Extract<(typeof SERVICES)[number], { database: true }>["name"];

/** The services that own a database, each its own database on one Postgres server. */
export const DATABASE_SERVICES: readonly DatabaseService[] = Object.freeze(
	SERVICES.filter((s): s is Extract<typeof s, { database: true }> => s.database).map(s => s.name)
);
