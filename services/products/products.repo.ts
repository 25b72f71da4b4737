/**
 * The products database as moleculer-db's Sequelize adapter sees it: the `Product` model
 * (DbMixin's `mainModel`, whose timestamps read as ISO 8601 strings, so the adapter's entities are
 * the API's `Product` as they are), the fields the service answers (moleculer-db's `fields`
 * setting) and the catalog's query in the adapter's terms (`query`, `sort`, `iSearch`,
 * `searchFields`), the typings of the moleculer-db methods the service calls, and the row lock
 * its changes take first. The service reads and writes through moleculer-db's public API
 * (`_list`, `_get`, `this.adapter.*`, `entityChanged`); no statement is written by hand here.
 */
import type { Context } from "moleculer";
import {
	DataTypes,
	type FindOptions,
	type Model,
	type ModelAttributeColumnOptions,
	type ModelStatic,
	type Sequelize,
	type Transaction
} from "sequelize";
import { shopError } from "../../platform/errors";
import type { Page } from "../../platform/paging";
import type { Product } from "./products.model";

/** A product as stored (the model's attributes). */
export interface ProductRow {
	id: string;
	sku: string;
	name: string;
	description: string;
	price: number;
	currency: string;
	active: boolean;
	createdAt: Date;
	updatedAt: Date;
}

/** What a product's creation sets (the rest comes from the database). */
export type NewProduct = Omit<ProductRow, "createdAt" | "updatedAt">;
/** What `update` may change. */
export type ProductChanges = Partial<Pick<ProductRow, "name" | "description" | "price" | "active">>;

/** The fields of a `Product` answer, in moleculer-db's `fields` setting. */
export const PRODUCT_FIELDS: readonly (keyof Product)[] = [
	"id",
	"sku",
	"name",
	"description",
	"price",
	"currency",
	"active",
	"createdAt",
	"updatedAt"
];

/** A timestamp attribute that reads as an ISO 8601 string (stored as `timestamptz`). */
function isoTimestamp(
	attribute: "createdAt" | "updatedAt"
): ModelAttributeColumnOptions<Model<ProductRow>> {
	return {
		type: DataTypes.DATE,
		get(this: Model<ProductRow>): string | null {
			const value = this.getDataValue(attribute) as Date | string | null | undefined;
			return value === null || value === undefined ? null : new Date(value).toISOString();
		}
	};
}

export function defineModels(sequelize: Sequelize): { Product: ModelStatic<Model<ProductRow>> } {
	const Product = sequelize.define<Model<ProductRow>>(
		"Product",
		{
			id: { type: DataTypes.UUID, primaryKey: true },
			sku: { type: DataTypes.TEXT, allowNull: false },
			name: { type: DataTypes.TEXT, allowNull: false },
			description: { type: DataTypes.TEXT, allowNull: false },
			price: { type: DataTypes.INTEGER, allowNull: false },
			currency: { type: DataTypes.CHAR(3), allowNull: false },
			active: { type: DataTypes.BOOLEAN, allowNull: false },
			createdAt: isoTimestamp("createdAt"),
			updatedAt: isoTimestamp("updatedAt")
		},
		{ tableName: "products" }
	);
	return { Product };
}
export type ProductsModels = ReturnType<typeof defineModels>;

/** A product entity of the adapter (a Sequelize instance of `Product`). */
export type ProductEntity = Model<ProductRow>;

/**
 * moleculer-db-adapter-sequelize's methods the catalog uses, typed for `Product` (moleculer-db's
 * own typings declare some of these results without their Promise).
 */
export interface ProductsAdapter {
	insert(entity: NewProduct): Promise<ProductEntity>;
	insertMany(entities: NewProduct[], opts: object): Promise<ProductEntity[]>;
	findOne(query: FindOptions<ProductRow>): Promise<ProductEntity | null>;
	updateById(id: string, update: { $set: ProductChanges }): Promise<ProductEntity | null>;
	removeById(id: string): Promise<ProductEntity | null>;
	entityToObject(entity: ProductEntity): Product;
}

/** The lifecycle of an entity, moleculer-db's `entityChanged` types. */
export type EntityChange = "created" | "updated" | "removed";

/** moleculer-db's service methods the catalog uses (src/index.js of moleculer-db 0.9). */
export interface CatalogDb {
	adapter: ProductsAdapter;
	sanitizeParams(ctx: Context, params: object): object;
	_list(ctx: Context, params: object): Promise<Page<Product>>;
	_get(ctx: Context, params: { id: string | string[] }): Promise<Product | Product[]>;
	transformDocuments(ctx: Context, params: object, doc: ProductEntity): Promise<Product>;
	entityChanged(
		type: EntityChange,
		json: Product,
		ctx: Context,
		raw: ProductEntity
	): Promise<void>;
}

declare module "moleculer" {
	interface ServiceSchema {
		/** moleculer-db's entity lifecycle hooks, called by `entityChanged` after the cache clean. */
		entityCreated?(json: unknown, ctx: Context, raw: unknown): void | Promise<void>;
		entityUpdated?(json: unknown, ctx: Context, raw: unknown): void | Promise<void>;
		entityRemoved?(json: unknown, ctx: Context, raw: unknown): void | Promise<void>;
	}
}

/**
 * The product `id`, locked (`SELECT ... FOR UPDATE`) in `t`, or PRODUCTS_NOT_FOUND.
 * moleculer-db's `updateById` and `removeById` read the row without a lock; taken first, this one
 * makes the row they change the one a concurrent change cannot move meanwhile (so
 * `product.priceChanged`'s `oldPrice` is the price this change replaced).
 */
export async function lockProduct(
	adapter: ProductsAdapter,
	t: Transaction,
	id: string
): Promise<Product> {
	const row = await adapter.findOne({ where: { id }, transaction: t, lock: t.LOCK.UPDATE });
	if (!row) throw shopError("PRODUCTS_NOT_FOUND", undefined, { id });
	return adapter.entityToObject(row);
}

/** Escapes LIKE wildcards (`\` is Postgres' LIKE escape) so `50%` matches the text `50%`. */
function literalLike(search: string): string {
	return search.replace(/[\\%_]/g, m => "\\" + m);
}

/**
 * The active products by name (then id), optionally those whose name, SKU or description
 * contains `search` (case-insensitively, literally), as moleculer-db `list` params: the adapter
 * turns `iSearch` into `lower(column) LIKE '%<search lower-cased>%'` over `searchFields`, ANDed
 * with `query`.
 */
export function catalogQuery(search: string | undefined): {
	query: { active: true };
	sort: string[];
	iSearch?: string;
	searchFields?: string[];
} {
	const q = { query: { active: true as const }, sort: ["name", "id"] };
	return search
		? { ...q, iSearch: literalLike(search), searchFields: ["name", "sku", "description"] }
		: q;
}
