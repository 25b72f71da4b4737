/**
 * `products`: the catalog, on moleculer-db's public API with its Sequelize adapter: `list` is
 * moleculer-db's `_list` (paging, sort, case-insensitive search), `get` and `resolve` its `_get`,
 * and the writes `this.adapter.insert` / `updateById` / `removeById` in a managed Sequelize
 * transaction that the adapter's calls join (./transaction-scope.ts) together with the outbox
 * insert. Answers are the adapter's entities through `transformDocuments` and the `fields`
 * setting (./products.repo.ts: the model, whose timestamps read as ISO strings).
 *
 * Reads are cached by the broker's cacher (memory, or Redis with `CACHER`) and the cache is
 * cleared on every node through moleculer-db's entity lifecycle: after a change commits,
 * `entityChanged` calls `clearCache`, which cleans the writing node's cacher (with Redis: the one
 * shared by every node) and broadcasts `cache.clean.products`, on which every other node cleans
 * its own memory cacher (see `events`); then the `entityCreated` / `entityUpdated` /
 * `entityRemoved` hooks log the change. The demo catalog (`services/products/demo-catalog.ts`,
 * 24 products) is seeded on first start, idempotently (by SKU).
 *
 * Money: `price` in integer cents of `currency` (ISO 4217).
 * Events emitted, durably (transactional outbox, mixins/events.mixin.ts: written in the same
 * transaction as the change): `product.created`, `product.updated` and `product.removed` with the
 * product, and `product.priceChanged` `{ productId, oldPrice, newPrice, currency }` (cents) when
 * the price moves.
 */
import crypto from "node:crypto";
import { Cachers, Errors, type ActionCacheOptions, type Context, type Service } from "moleculer";
import { UniqueConstraintError } from "sequelize";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import { pageParams, type Page } from "../../platform/paging";
import { DbMixin, type DbMixinMethods } from "../../mixins/db.mixin";
import { OutboxMixin, outboxMigrations, type OutboxMethods } from "../../mixins/events.mixin";
import { DEMO_CATALOG } from "./demo-catalog";
import { productsMigrations } from "./migrations";
import type { Product } from "./products.model";
import {
	catalogQuery,
	defineModels,
	lockProduct,
	PRODUCT_FIELDS,
	type CatalogDb,
	type NewProduct,
	type ProductChanges,
	type ProductEntity,
	type ProductsModels
} from "./products.repo";
import { useTransactionScope } from "./transaction-scope";

type ProductsThis = Service & DbMixinMethods<ProductsModels> & OutboxMethods & CatalogDb;
/** Largest price accepted: 10 000 000.00 in the currency's minor unit. */
const MAX_PRICE = 1_000_000_000;

/**
 * Cache options of a read whose params are exactly `keys`. Moleculer's cacher runs before its
 * validator, so a cached answer would skip validation: `?foo=1` would be 200 from the cache and
 * 422 (`$$strict`) otherwise. Params with any other key bypass the cache and meet the validator.
 */
function strictCache(keys: string[], ttl: number): ActionCacheOptions {
	return {
		keys,
		ttl,
		enabled: (ctx: Context) => Object.keys(ctx.params ?? {}).every(k => keys.includes(k))
	};
}

function requireAdmin(ctx: ShopContext): void {
	// Internal calls (REPL, other services) carry no user; REST calls always do here.
	if (ctx.meta.user && ctx.meta.user.role !== "admin") throw shopError("AUTH_FORBIDDEN");
}

/** Who made a change, for the audit lines of the entity lifecycle hooks. */
function actor(ctx: ShopContext): string {
	return ctx.meta.user ? `user ${ctx.meta.user.id}` : "an internal call";
}

const ProductsService: ShopServiceSchema<ProductsThis> = {
	name: "products",
	mixins: [
		DbMixin({
			service: "products",
			migrations: [...productsMigrations, ...outboxMigrations],
			models: defineModels,
			mainModel: "Product"
		}),
		OutboxMixin()
	],

	settings: {
		/** moleculer-db: the fields of every answer (`transformDocuments`). */
		fields: [...PRODUCT_FIELDS]
	},

	created(this: ProductsThis): void {
		// moleculer-db's adapter calls take no transaction: they join the managed one around them.
		useTransactionScope();
	},

	actions: {
		/**
		 * Active products, paged, optionally filtered by a case-insensitive search of name,
		 * SKU and description. Cached. moleculer-db's `_list` (one find and one count).
		 * @param page - from 1 (default 1)
		 * @param pageSize - 1 to 100 (default 20)
		 * @param search - up to 100 characters; matched literally (no wildcards)
		 * @returns `{ rows: Product[], total, page, pageSize, totalPages }`, by name
		 */
		list: {
			cache: strictCache(["page", "pageSize", "search"], 60),
			params: {
				$$strict: true,
				...pageParams,
				search: { type: "string", trim: true, max: 100, optional: true }
			},
			async handler(
				this: ProductsThis,
				ctx: ShopContext<{ page: number; pageSize: number; search?: string }>
			): Promise<Page<Product>> {
				const { page, pageSize, search } = ctx.params;
				// sanitizeParams turns page and pageSize into the adapter's limit and offset.
				const params = this.sanitizeParams(ctx, {
					page,
					pageSize,
					...catalogQuery(search)
				});
				return this._list(ctx, params);
			}
		},

		/**
		 * One product (active or not). Cached. moleculer-db's `_get`.
		 * @returns Product
		 * @throws PRODUCTS_NOT_FOUND (404)
		 */
		get: {
			cache: strictCache(["id"], 300),
			params: { $$strict: true, id: { type: "uuid" } },
			async handler(this: ProductsThis, ctx: ShopContext<{ id: string }>): Promise<Product> {
				try {
					return (await this._get(ctx, { id: ctx.params.id })) as Product;
				} catch (err) {
					// moleculer-db's EntityNotFoundError (404, not exported by the package).
					if ((err as Error).name === "EntityNotFoundError")
						throw shopError("PRODUCTS_NOT_FOUND", undefined, { id: ctx.params.id });
					throw err;
				}
			}
		},

		/**
		 * Several products by id, for pricing an order (not published over REST). moleculer-db's
		 * `_get` with a list of ids (one `IN` query).
		 * @param ids - 1 to 100 UUIDs
		 * @returns the products found (unknown ids are simply absent)
		 */
		resolve: {
			visibility: "public",
			params: { ids: { type: "array", items: "uuid", min: 1, max: 100 } },
			async handler(
				this: ProductsThis,
				ctx: ShopContext<{ ids: string[] }>
			): Promise<Product[]> {
				return (await this._get(ctx, { id: ctx.params.ids })) as Product[];
			}
		},

		/**
		 * Adds a product (admin). With `stock`, also sets its units on hand in `inventory`.
		 * moleculer-db's `adapter.insert`, in one transaction with the outbox insert; then
		 * `entityChanged("created")`: every node's cached reads are cleaned.
		 * @param sku - 1 to 64 of `A-Z a-z 0-9 - _ .`
		 * @param price - integer cents, 0 to 1 000 000 000
		 * @param currency - ISO 4217, three capital letters (default USD)
		 * @param stock - optional initial units on hand
		 * @returns 201 Product (plus `stock` when given)
		 * @throws PRODUCTS_SKU_TAKEN (409), AUTH_FORBIDDEN (403), VALIDATION_ERROR (422)
		 * @emits product.created
		 */
		create: {
			// Not retried by a caller's broker: a retry after a lost answer would fail as a duplicate.
			retryPolicy: { enabled: false },
			params: {
				$$strict: true,
				sku: { type: "string", trim: true, min: 1, max: 64, pattern: /^[A-Za-z0-9._-]+$/ },
				name: { type: "string", trim: true, min: 1, max: 200 },
				description: { type: "string", trim: true, max: 5000, optional: true, default: "" },
				price: { type: "number", integer: true, min: 0, max: MAX_PRICE },
				currency: { type: "string", pattern: /^[A-Z]{3}$/, optional: true, default: "USD" },
				active: { type: "boolean", optional: true, default: true },
				stock: { type: "number", integer: true, min: 0, max: 1_000_000_000, optional: true }
			},
			async handler(
				this: ProductsThis,
				ctx: ShopContext<Omit<NewProduct, "id"> & { stock?: number | null }>
			): Promise<Product & { stock?: number }> {
				requireAdmin(ctx);
				const { stock, ...fields } = ctx.params;
				let created: { product: Product; doc: ProductEntity };
				try {
					created = await this.sequelize.transaction(async t => {
						const doc = await this.adapter.insert({
							id: crypto.randomUUID(),
							...fields
						});
						const product = await this.transformDocuments(ctx, {}, doc);
						await this.enqueueEvent(t, "product.created", product, {
							aggregateId: product.id,
							requestId: ctx.requestID ?? null
						});
						return { product, doc };
					});
				} catch (err) {
					if (err instanceof UniqueConstraintError) throw shopError("PRODUCTS_SKU_TAKEN");
					throw err;
				}
				const { product, doc } = created;
				// After the commit: a read between a clean and the commit would cache the old rows.
				await this.entityChanged("created", product, ctx, doc);
				// `stock: null` is no stock, like any optional field given as null (the validator lets
				// null through): passing it on would fail in inventory after the product is stored.
				if (stock !== undefined && stock !== null)
					await ctx.call("inventory.setStock", { productId: product.id, onHand: stock });
				ctx.meta.$statusCode = 201;
				return stock === undefined || stock === null ? product : { ...product, stock };
			}
		},

		/**
		 * Changes a product (admin): any of name, description, price, active. moleculer-db's
		 * `adapter.updateById` under the row's lock, in one transaction with the outbox insert;
		 * then `entityChanged("updated")`: every node's cached reads are cleaned.
		 * @returns Product
		 * @throws PRODUCTS_NOT_FOUND (404), AUTH_FORBIDDEN (403), VALIDATION_ERROR (422)
		 * @emits product.updated, product.priceChanged (when the price changes)
		 */
		update: {
			params: {
				$$strict: true,
				id: { type: "uuid" },
				name: { type: "string", trim: true, min: 1, max: 200, optional: true },
				description: { type: "string", trim: true, max: 5000, optional: true },
				price: { type: "number", integer: true, min: 0, max: MAX_PRICE, optional: true },
				active: { type: "boolean", optional: true }
			},
			async handler(
				this: ProductsThis,
				ctx: ShopContext<{ id: string } & ProductChanges>
			): Promise<Product> {
				requireAdmin(ctx);
				const { id, ...changes } = ctx.params;
				// The validator lets null through for optional fields; every column is NOT NULL.
				const nulls = Object.keys(changes).filter(
					k => (changes as Record<string, unknown>)[k] === null
				);
				if (nulls.length > 0)
					throw new Errors.ValidationError(
						"Parameters validation error!",
						"VALIDATION_ERROR",
						nulls.map(field => ({
							type: "required",
							field,
							message: `The '${field}' field cannot be null.`
						}))
					);
				const { product, doc } = await this.sequelize.transaction(async t => {
					const before = await lockProduct(this.adapter, t, id);
					const doc = await this.adapter.updateById(id, { $set: changes });
					if (!doc) throw shopError("PRODUCTS_NOT_FOUND", undefined, { id });
					const product = await this.transformDocuments(ctx, {}, doc);
					const opts = { aggregateId: id, requestId: ctx.requestID ?? null };
					await this.enqueueEvent(t, "product.updated", product, opts);
					if (product.price !== before.price)
						await this.enqueueEvent(
							t,
							"product.priceChanged",
							{
								productId: id,
								oldPrice: before.price,
								newPrice: product.price,
								currency: product.currency
							},
							opts
						);
					return { product, doc };
				});
				await this.entityChanged("updated", product, ctx, doc);
				return product;
			}
		},

		/**
		 * Deletes a product (admin; not published over REST: the REPL's, or another service's).
		 * Orders placed keep their lines (priced when placed); the product's stock row in
		 * `inventory` stays, and new orders for it are refused as for any unknown product.
		 * moleculer-db's `adapter.removeById` under the row's lock, in one transaction with the
		 * outbox insert; then `entityChanged("removed")`: every node's cached reads are cleaned.
		 * @returns the Product as it was
		 * @throws PRODUCTS_NOT_FOUND (404), AUTH_FORBIDDEN (403), VALIDATION_ERROR (422)
		 * @emits product.removed (the product as it was)
		 */
		remove: {
			visibility: "public",
			params: { $$strict: true, id: { type: "uuid" } },
			async handler(this: ProductsThis, ctx: ShopContext<{ id: string }>): Promise<Product> {
				requireAdmin(ctx);
				const { id } = ctx.params;
				const { product, doc } = await this.sequelize.transaction(async t => {
					await lockProduct(this.adapter, t, id);
					const doc = await this.adapter.removeById(id);
					if (!doc) throw shopError("PRODUCTS_NOT_FOUND", undefined, { id });
					const product = await this.transformDocuments(ctx, {}, doc);
					await this.enqueueEvent(t, "product.removed", product, {
						aggregateId: id,
						requestId: ctx.requestID ?? null
					});
					return { product, doc };
				});
				await this.entityChanged("removed", product, ctx, doc);
				return product;
			}
		}
	},

	events: {
		/**
		 * moleculer-db's `clearCache` broadcasts this to every products node after a write; it
		 * already cleaned the sender's own cacher. A memory cacher is per node, so each other
		 * node cleans its copy here. A Redis cacher is one store shared by every node and the
		 * sender cleaned it already: nothing to do. Cleaning never broadcasts again (no loop).
		 */
		"cache.clean.products"(this: ProductsThis, ctx: ShopContext): Promise<void> | void {
			const cacher = this.broker.cacher;
			if (!cacher || ctx.nodeID === this.broker.nodeID) return;
			if (!(cacher instanceof Cachers.Memory || cacher instanceof Cachers.MemoryLRU)) return;
			return cacher.clean(`${this.fullName}.**`);
		}
	},

	/**
	 * moleculer-db's entity lifecycle hooks: `entityChanged` calls them after the change committed
	 * and every node's cache was cleaned. They write the audit line of a catalog change.
	 */
	entityCreated(this: ProductsThis, product: Product, ctx: ShopContext): void {
		this.logger.info(`Product ${product.id} (${product.sku}) created by ${actor(ctx)}.`);
	},
	entityUpdated(this: ProductsThis, product: Product, ctx: ShopContext): void {
		const fields = Object.keys(ctx.params as object).filter(k => k !== "id");
		this.logger.info(
			`Product ${product.id} (${product.sku}) updated by ${actor(ctx)}: ${fields.join(", ") || "nothing"}.`
		);
	},
	entityRemoved(this: ProductsThis, product: Product, ctx: ShopContext): void {
		this.logger.info(`Product ${product.id} (${product.sku}) removed by ${actor(ctx)}.`);
	},

	/**
	 * Seeds the demo catalog with moleculer-db's `adapter.insertMany` (one multi-row INSERT ... ON
	 * CONFLICT DO NOTHING): products already there (by SKU) are left as they are.
	 */
	async afterConnected(this: ProductsThis): Promise<void> {
		const inserted = await this.adapter.insertMany(
			DEMO_CATALOG.map(p => ({
				id: p.id,
				sku: p.sku,
				name: p.name,
				description: p.description,
				price: p.price,
				currency: p.currency,
				active: true
			})),
			{ ignoreDuplicates: true, returning: ["id"] }
		);
		if (inserted.some(r => r.get("id") !== null && r.get("id") !== undefined))
			this.logger.info(`Demo catalog: ${DEMO_CATALOG.length} products present.`);
		await this.clearCache();
	}
};

export default ProductsService;
