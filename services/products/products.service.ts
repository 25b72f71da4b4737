/**
 * `products`: the catalog. Reads are cached by the broker's cacher (memory, or Redis with
 * `CACHER`) and the cache is cleared on every node when a product changes: moleculer-db's
 * `clearCache` cleans the writing node's cacher (with Redis: the one shared by every node) and
 * broadcasts `cache.clean.products`, on which every other node cleans its own memory cacher (see
 * `events`). The demo catalog (`services/products/demo-catalog.ts`, 24 products) is seeded on first start,
 * idempotently (by SKU).
 *
 * Money: `price` in integer cents of `currency` (ISO 4217).
 * Events emitted, durably (transactional outbox, mixins/events.mixin.ts: written in the same
 * transaction as the change): `product.created` and `product.updated` with the product, and
 * `product.priceChanged` `{ productId, oldPrice, newPrice, currency }` (cents) when the price moves.
 */
import crypto from "node:crypto";
import { Cachers, Errors, type ActionCacheOptions, type Context, type Service } from "moleculer";
import { UniqueConstraintError } from "sequelize";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import { pageParams, toPage, type Page } from "../../platform/paging";
import { DbMixin, type DbMixinMethods } from "../../mixins/db.mixin";
import { OutboxMixin, outboxMigrations, type OutboxMethods } from "../../mixins/events.mixin";
import { DEMO_CATALOG } from "./demo-catalog";
import { productsMigrations } from "./migrations";
import type { Product } from "./products.model";
import {
	defineModels,
	ProductsRepo,
	type NewProduct,
	type ProductChanges,
	type ProductsModels
} from "./products.repo";

type ProductsThis = Service &
	DbMixinMethods<ProductsModels> &
	OutboxMethods & {
		/** The catalog's queries. */
		repo: ProductsRepo;
	};
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

	created(this: ProductsThis): void {
		this.repo = new ProductsRepo(this.sequelize, this.models);
	},

	actions: {
		/**
		 * Active products, paged, optionally filtered by a case-insensitive search of name,
		 * SKU and description. Cached.
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
				const { search, ...q } = ctx.params;
				const { rows, total } = await this.repo.listActive(q, search);
				return toPage(rows, total, q);
			}
		},

		/**
		 * One product (active or not). Cached.
		 * @returns Product
		 * @throws PRODUCTS_NOT_FOUND (404)
		 */
		get: {
			cache: strictCache(["id"], 300),
			params: { $$strict: true, id: { type: "uuid" } },
			async handler(this: ProductsThis, ctx: ShopContext<{ id: string }>): Promise<Product> {
				const product = await this.repo.findById(ctx.params.id);
				if (!product)
					throw shopError("PRODUCTS_NOT_FOUND", undefined, { id: ctx.params.id });
				return product;
			}
		},

		/**
		 * Several products by id, for pricing an order (not published over REST).
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
				return this.repo.findByIds(ctx.params.ids);
			}
		},

		/**
		 * Adds a product (admin). With `stock`, also sets its units on hand in `inventory`.
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
				let product: Product;
				try {
					product = await this.repo.transaction(async t => {
						const view = await this.repo.create(t, {
							id: crypto.randomUUID(),
							...fields
						});
						await this.enqueueEvent(t, "product.created", view, {
							aggregateId: view.id,
							requestId: ctx.requestID ?? null
						});
						return view;
					});
				} catch (err) {
					if (err instanceof UniqueConstraintError) throw shopError("PRODUCTS_SKU_TAKEN");
					throw err;
				}
				await this.clearCache();
				// `stock: null` is no stock, like any optional field given as null (the validator lets
				// null through): passing it on would fail in inventory after the product is stored.
				if (stock !== undefined && stock !== null)
					await ctx.call("inventory.setStock", { productId: product.id, onHand: stock });
				ctx.meta.$statusCode = 201;
				return stock === undefined || stock === null ? product : { ...product, stock };
			}
		},

		/**
		 * Changes a product (admin): any of name, description, price, active.
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
				const product = await this.repo.transaction(async t => {
					const changed = await this.repo.update(t, id, changes);
					if (!changed) throw shopError("PRODUCTS_NOT_FOUND", undefined, { id });
					const { before, after } = changed;
					const opts = { aggregateId: id, requestId: ctx.requestID ?? null };
					await this.enqueueEvent(t, "product.updated", after, opts);
					if (after.price !== before.price)
						await this.enqueueEvent(
							t,
							"product.priceChanged",
							{
								productId: id,
								oldPrice: before.price,
								newPrice: after.price,
								currency: after.currency
							},
							opts
						);
					return after;
				});
				await this.clearCache();
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

	/** Seeds the demo catalog; products already there (by SKU) are left as they are. */
	async afterConnected(this: ProductsThis): Promise<void> {
		const inserted = await this.repo.seed(DEMO_CATALOG);
		if (inserted > 0)
			this.logger.info(`Demo catalog: ${DEMO_CATALOG.length} products present.`);
		await this.clearCache();
	}
};

export default ProductsService;
