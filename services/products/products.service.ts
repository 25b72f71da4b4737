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
import {
	DataTypes,
	Op,
	type Model,
	type ModelStatic,
	type Sequelize,
	UniqueConstraintError
} from "sequelize";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { DEMO_CATALOG } from "./demo-catalog";
import { shopError } from "../../platform/errors";
import { productsMigrations } from "./migrations";
import { DbMixin, type DbMixinMethods } from "../../mixins/db.mixin";
import { OutboxMixin, outboxMigrations, type OutboxMethods } from "../../mixins/events.mixin";
import type { Product, Page } from "./products.model";

interface ProductRow {
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

function defineModels(sequelize: Sequelize): { Product: ModelStatic<Model<ProductRow>> } {
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
			createdAt: { type: DataTypes.DATE },
			updatedAt: { type: DataTypes.DATE }
		},
		{ tableName: "products" }
	);
	return { Product };
}
type Models = ReturnType<typeof defineModels>;
type ProductsThis = Service &
	DbMixinMethods<Models> &
	OutboxMethods & { toView(row: ProductRow): Product };

/** Escapes LIKE wildcards so a search for `50%` matches the text `50%`. */
function likePattern(search: string): string {
	return `%${search.replace(/[\\%_]/g, m => "\\" + m)}%`;
}

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
				page: {
					type: "number",
					integer: true,
					min: 1,
					max: 100_000,
					convert: true,
					default: 1
				},
				pageSize: {
					type: "number",
					integer: true,
					min: 1,
					max: 100,
					convert: true,
					default: 20
				},
				search: { type: "string", trim: true, max: 100, optional: true }
			},
			async handler(
				this: ProductsThis,
				ctx: ShopContext<{ page: number; pageSize: number; search?: string }>
			): Promise<Page<Product>> {
				const { page, pageSize, search } = ctx.params;
				const where: Record<string | symbol, unknown> = { active: true };
				if (search) {
					const p = likePattern(search);
					where[Op.or] = [
						{ name: { [Op.iLike]: p } },
						{ sku: { [Op.iLike]: p } },
						{ description: { [Op.iLike]: p } }
					];
				}
				const { rows, count } = await this.models.Product.findAndCountAll({
					where,
					order: [
						["name", "ASC"],
						["id", "ASC"]
					],
					limit: pageSize,
					offset: (page - 1) * pageSize
				});
				return {
					rows: rows.map(r => this.toView(r.get({ plain: true }))),
					total: count,
					page,
					pageSize,
					totalPages: Math.ceil(count / pageSize)
				};
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
				const row = await this.models.Product.findByPk(ctx.params.id);
				if (!row) throw shopError("PRODUCTS_NOT_FOUND", undefined, { id: ctx.params.id });
				return this.toView(row.get({ plain: true }));
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
				const rows = await this.models.Product.findAll({
					where: { id: { [Op.in]: ctx.params.ids } }
				});
				return rows.map(r => this.toView(r.get({ plain: true })));
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
				ctx: ShopContext<
					Omit<ProductRow, "id" | "createdAt" | "updatedAt"> & { stock?: number | null }
				>
			): Promise<Product & { stock?: number }> {
				requireAdmin(ctx);
				const { stock, ...fields } = ctx.params;
				let product: Product;
				try {
					product = await this.sequelize.transaction(async t => {
						const row: Model<ProductRow> = await this.models.Product.create(
							{ id: crypto.randomUUID(), ...fields } as ProductRow,
							{ transaction: t }
						);
						const view = this.toView(row.get({ plain: true }));
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
				ctx: ShopContext<
					{ id: string } & Partial<
						Pick<ProductRow, "name" | "description" | "price" | "active">
					>
				>
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
				const product = await this.sequelize.transaction(async t => {
					const row = await this.models.Product.findByPk(id, {
						transaction: t,
						lock: t.LOCK.UPDATE
					});
					if (!row) throw shopError("PRODUCTS_NOT_FOUND", undefined, { id });
					const before = this.toView(row.get({ plain: true }));
					await row.update(changes, { transaction: t });
					const after = this.toView(row.get({ plain: true }));
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

	methods: {
		toView(row: ProductRow): Product {
			return {
				id: row.id,
				sku: row.sku,
				name: row.name,
				description: row.description,
				price: row.price,
				currency: row.currency,
				active: row.active,
				createdAt: new Date(row.createdAt).toISOString(),
				updatedAt: new Date(row.updatedAt).toISOString()
			};
		}
	},

	/** Seeds the demo catalog; products already there (by SKU) are left as they are. */
	async afterConnected(this: ProductsThis): Promise<void> {
		const created = await this.models.Product.bulkCreate(
			DEMO_CATALOG.map(p => ({
				id: p.id,
				sku: p.sku,
				name: p.name,
				description: p.description,
				price: p.price,
				currency: p.currency,
				active: true
			})) as ProductRow[],
			{ ignoreDuplicates: true, returning: ["id"] }
		);
		const inserted = created.filter(
			r => r.get("id") !== null && r.get("id") !== undefined
		).length;
		if (inserted > 0)
			this.logger.info(`Demo catalog: ${DEMO_CATALOG.length} products present.`);
		await this.clearCache();
	}
};

export default ProductsService;
