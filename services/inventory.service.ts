/**
 * `inventory`: units on hand and reserved per product, and the reservations the order saga makes.
 *
 * `available = onHand - reserved`. A reservation is all-or-nothing, made in one transaction that
 * locks the products' stock rows (`SELECT ... FOR UPDATE`) in ascending product-id order, so two
 * reservations never wait on each other in a cycle (no deadlocks: a global lock order, as in
 * Coffman et al. 1971). Check constraints keep `0 <= reserved <= onHand` in the database itself:
 * stock can never go negative, whatever the code does.
 *
 * `reserve`, `release` and `commit` are idempotent by order id: a repeat answers the first
 * outcome. A `release` that arrives before its `reserve` (the saga's compensation overtook a lost
 * step) leaves a `RELEASED` tombstone, so the late `reserve` is refused instead of locking stock.
 *
 * Events emitted: `stock.reserved` `{ orderId, items }`, `stock.released` `{ orderId, items }`,
 * `stock.committed` `{ orderId, items }`, `stock.changed` `{ productId, onHand, reserved, available }`.
 */
import type { Service } from "moleculer";
import {
	DataTypes,
	QueryTypes,
	type Model,
	type ModelStatic,
	type Sequelize,
	type Transaction
} from "sequelize";
import type { ShopContext, ShopServiceSchema } from "../lib/context";
import { DEMO_CATALOG } from "../lib/demo-catalog";
import { shopError } from "../lib/errors";
import { inventoryMigrations } from "../migrations/inventory";
import { DbMixin, type DbMixinMethods } from "../mixins/db.mixin";

/** Stock of one product. Units are whole items. */
export interface StockLevel {
	productId: string;
	onHand: number;
	reserved: number;
	available: number;
}

export interface ReservationItem {
	productId: string;
	/** Whole units, >= 1. */
	quantity: number;
}

export type ReservationStatus = "RESERVED" | "COMMITTED" | "RELEASED" | "REJECTED";

/** The outcome of reserve/release/commit. */
export interface ReservationView {
	orderId: string;
	status: ReservationStatus;
	items: ReservationItem[];
}

/** A reservation as stored; `reason` lists the shortfall of a REJECTED one. */
interface ReservationRow extends ReservationView {
	reason?: unknown;
}

interface StockRow {
	productId: string;
	onHand: number;
	reserved: number;
}

function defineModels(sequelize: Sequelize): { Stock: ModelStatic<Model<StockRow>> } {
	const Stock = sequelize.define<Model<StockRow>>(
		"Stock",
		{
			productId: { type: DataTypes.UUID, primaryKey: true },
			onHand: { type: DataTypes.INTEGER, allowNull: false },
			reserved: { type: DataTypes.INTEGER, allowNull: false }
		},
		{ tableName: "stock" }
	);
	return { Stock };
}
type Models = ReturnType<typeof defineModels>;

interface InventoryMethods {
	lockStock(productIds: string[], t: Transaction): Promise<Map<string, StockRow>>;
	findReservation(orderId: string, t: Transaction, lock: boolean): Promise<ReservationRow | null>;
	emitStockChanged(ctx: ShopContext, productIds: string[]): Promise<void>;
	transition(
		ctx: ShopContext<{ orderId: string }>,
		to: "COMMITTED" | "RELEASED"
	): Promise<ReservationView>;
}
type InventoryThis = Service & DbMixinMethods<Models> & InventoryMethods;

const view = (r: StockRow): StockLevel => ({
	productId: r.productId,
	onHand: r.onHand,
	reserved: r.reserved,
	available: r.onHand - r.reserved
});

/** Merges duplicate product ids and sorts by product id (the lock order). */
export function normaliseItems(items: ReservationItem[]): ReservationItem[] {
	const byId = new Map<string, number>();
	for (const it of items) byId.set(it.productId, (byId.get(it.productId) ?? 0) + it.quantity);
	return [...byId.entries()]
		.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
		.map(([productId, quantity]) => ({ productId, quantity }));
}

const orderIdParams = { $$strict: true, orderId: { type: "uuid" } } as const;

const InventoryService: ShopServiceSchema<InventoryThis> = {
	name: "inventory",
	mixins: [
		DbMixin({
			service: "inventory",
			migrations: inventoryMigrations,
			models: defineModels,
			mainModel: "Stock"
		})
	],

	actions: {
		/**
		 * Stock of one product.
		 * @returns `{ productId, onHand, reserved, available }` (units)
		 * @throws INVENTORY_NOT_FOUND (404)
		 */
		get: {
			params: { $$strict: true, productId: { type: "uuid" } },
			async handler(
				this: InventoryThis,
				ctx: ShopContext<{ productId: string }>
			): Promise<StockLevel> {
				const row = await this.models.Stock.findByPk(ctx.params.productId);
				if (!row)
					throw shopError("INVENTORY_NOT_FOUND", undefined, {
						productId: ctx.params.productId
					});
				return view(row.get({ plain: true }));
			}
		},

		/**
		 * Sets the units on hand of a product (admin; creates the stock record if missing).
		 * @param onHand - whole units, 0 to 1 000 000 000; never below what is reserved
		 * @returns `{ productId, onHand, reserved, available }`
		 * @throws INVENTORY_BELOW_RESERVED (409), AUTH_FORBIDDEN (403)
		 * @emits stock.changed
		 */
		setStock: {
			params: {
				$$strict: true,
				productId: { type: "uuid" },
				onHand: { type: "number", integer: true, min: 0, max: 1_000_000_000 }
			},
			async handler(
				this: InventoryThis,
				ctx: ShopContext<{ productId: string; onHand: number }>
			): Promise<StockLevel> {
				if (ctx.meta.user && ctx.meta.user.role !== "admin")
					throw shopError("AUTH_FORBIDDEN");
				const { productId, onHand } = ctx.params;
				const result = await this.sequelize.transaction(async t => {
					const locked = await this.lockStock([productId], t);
					const current = locked.get(productId);
					if (current && onHand < current.reserved)
						throw shopError("INVENTORY_BELOW_RESERVED", undefined, {
							reserved: current.reserved,
							onHand
						});
					await this.sequelize.query(
						`INSERT INTO stock (product_id, on_hand, reserved) VALUES ($1, $2, 0)
						 ON CONFLICT (product_id) DO UPDATE SET on_hand = EXCLUDED.on_hand, updated_at = now()`,
						{ bind: [productId, onHand], transaction: t }
					);
					return { productId, onHand, reserved: current?.reserved ?? 0 };
				});
				const level = view(result);
				await ctx.emit("stock.changed", level);
				return level;
			}
		},

		/**
		 * Reserves all items for an order, or none. Idempotent by `orderId`.
		 * @param items - 1 to 100 `{ productId, quantity }`; duplicates are summed
		 * @returns `{ orderId, status: "RESERVED", items }`
		 * @throws INVENTORY_OUT_OF_STOCK (409, `data.items` lists `{ productId, requested, available }`),
		 *   INVENTORY_RESERVATION_CONFLICT (409) when the order's reservation was already released
		 * @emits stock.reserved
		 */
		reserve: {
			visibility: "public",
			params: {
				$$strict: true,
				orderId: { type: "uuid" },
				items: {
					type: "array",
					min: 1,
					max: 100,
					items: {
						type: "object",
						strict: true,
						props: {
							productId: { type: "uuid" },
							quantity: { type: "number", integer: true, min: 1, max: 1_000_000 }
						}
					}
				}
			},
			async handler(
				this: InventoryThis,
				ctx: ShopContext<{ orderId: string; items: ReservationItem[] }>
			): Promise<ReservationView> {
				const { orderId } = ctx.params;
				const items = normaliseItems(ctx.params.items);
				const outcome = await this.sequelize.transaction(async t => {
					// Serialise all calls for this order on its reservation row (or its absence).
					await this.sequelize.query("SELECT pg_advisory_xact_lock(hashtext($1))", {
						bind: [orderId],
						transaction: t
					});
					const existing = await this.findReservation(orderId, t, true);
					if (existing) return { existing, fresh: false };
					const locked = await this.lockStock(
						items.map(i => i.productId),
						t
					);
					const short = items
						.map(i => ({
							productId: i.productId,
							requested: i.quantity,
							available: locked.has(i.productId)
								? locked.get(i.productId)!.onHand -
									locked.get(i.productId)!.reserved
								: 0
						}))
						.filter(s => s.available < s.requested);
					if (short.length > 0) {
						await this.sequelize.query(
							`INSERT INTO reservations (order_id, status, items, reason) VALUES ($1, 'REJECTED', $2::jsonb, $3::jsonb)`,
							{
								bind: [orderId, JSON.stringify(items), JSON.stringify(short)],
								transaction: t
							}
						);
						const rejected: ReservationRow = {
							orderId,
							status: "REJECTED",
							items,
							reason: short
						};
						return { existing: rejected, fresh: true };
					}
					for (const i of items) {
						await this.sequelize.query(
							"UPDATE stock SET reserved = reserved + $2, updated_at = now() WHERE product_id = $1",
							{ bind: [i.productId, i.quantity], transaction: t }
						);
					}
					await this.sequelize.query(
						`INSERT INTO reservations (order_id, status, items) VALUES ($1, 'RESERVED', $2::jsonb)`,
						{ bind: [orderId, JSON.stringify(items)], transaction: t }
					);
					const reserved: ReservationRow = { orderId, status: "RESERVED", items };
					return { existing: reserved, fresh: true };
				});
				const r: ReservationRow = outcome.existing;
				if (r.status === "REJECTED")
					throw shopError("INVENTORY_OUT_OF_STOCK", "Not enough stock for this order", {
						orderId,
						items: r.reason ?? []
					});
				if (r.status === "RELEASED")
					throw shopError(
						"INVENTORY_RESERVATION_CONFLICT",
						"The order's reservation was released",
						{ orderId }
					);
				if (outcome.fresh) {
					await ctx.emit("stock.reserved", { orderId, items });
					await this.emitStockChanged(
						ctx,
						items.map(i => i.productId)
					);
				}
				return { orderId: r.orderId, status: r.status, items: r.items };
			}
		},

		/**
		 * Releases an order's reservation (saga compensation). Idempotent; releasing an order
		 * that reserved nothing is a no-op success that also blocks a later `reserve`.
		 * @returns `{ orderId, status, items }` (`RELEASED`, or `REJECTED` if nothing was reserved)
		 * @throws INVENTORY_RESERVATION_CONFLICT (409) if already committed
		 * @emits stock.released
		 */
		release: {
			visibility: "public",
			params: orderIdParams,
			async handler(
				this: InventoryThis,
				ctx: ShopContext<{ orderId: string }>
			): Promise<ReservationView> {
				return this.transition(ctx, "RELEASED");
			}
		},

		/**
		 * Commits an order's reservation: the units leave `onHand` and `reserved`. Idempotent.
		 * @returns `{ orderId, status: "COMMITTED", items }`
		 * @throws INVENTORY_RESERVATION_CONFLICT (409) if released, rejected or never made
		 * @emits stock.committed
		 */
		commit: {
			visibility: "public",
			params: orderIdParams,
			async handler(
				this: InventoryThis,
				ctx: ShopContext<{ orderId: string }>
			): Promise<ReservationView> {
				return this.transition(ctx, "COMMITTED");
			}
		},

		/**
		 * An order's reservation, for operators and tests (not published over REST).
		 * @returns `{ orderId, status, items }` or null
		 */
		getReservation: {
			visibility: "public",
			params: orderIdParams,
			async handler(
				this: InventoryThis,
				ctx: ShopContext<{ orderId: string }>
			): Promise<ReservationView | null> {
				const r = await this.sequelize.transaction(t =>
					this.findReservation(ctx.params.orderId, t, false)
				);
				return r && { orderId: r.orderId, status: r.status, items: r.items };
			}
		}
	},

	methods: {
		/** Locks the stock rows of `productIds` in ascending id order; returns those that exist. */
		async lockStock(
			this: InventoryThis,
			productIds: string[],
			t: Transaction
		): Promise<Map<string, StockRow>> {
			const ids = [...new Set(productIds)].sort();
			const rows = (await this.sequelize.query(
				`SELECT product_id AS "productId", on_hand AS "onHand", reserved FROM stock
				 WHERE product_id = ANY($1::uuid[]) ORDER BY product_id FOR UPDATE`,
				{ bind: [ids], type: QueryTypes.SELECT, transaction: t }
			)) as StockRow[];
			return new Map(rows.map(r => [r.productId, r]));
		},

		async findReservation(
			this: InventoryThis,
			orderId: string,
			t: Transaction,
			lock: boolean
		): Promise<ReservationRow | null> {
			const rows = (await this.sequelize.query(
				`SELECT order_id AS "orderId", status, items, reason FROM reservations WHERE order_id = $1${lock ? " FOR UPDATE" : ""}`,
				{ bind: [orderId], type: QueryTypes.SELECT, transaction: t }
			)) as ReservationRow[];
			return rows[0] ?? null;
		},

		/** RESERVED → COMMITTED or RELEASED, under the same locks as `reserve`. */
		async transition(
			this: InventoryThis,
			ctx: ShopContext<{ orderId: string }>,
			to: "COMMITTED" | "RELEASED"
		): Promise<ReservationView> {
			const { orderId } = ctx.params;
			const outcome = await this.sequelize.transaction(async t => {
				await this.sequelize.query("SELECT pg_advisory_xact_lock(hashtext($1))", {
					bind: [orderId],
					transaction: t
				});
				const r = await this.findReservation(orderId, t, true);
				if (!r) {
					if (to === "COMMITTED")
						throw shopError(
							"INVENTORY_RESERVATION_CONFLICT",
							"No reservation for this order",
							{ orderId }
						);
					// Compensation before (or instead of) the step: leave a tombstone.
					await this.sequelize.query(
						`INSERT INTO reservations (order_id, status, items) VALUES ($1, 'RELEASED', '[]'::jsonb)`,
						{ bind: [orderId], transaction: t }
					);
					return {
						view: { orderId, status: "RELEASED" as const, items: [] },
						changed: false
					};
				}
				const current: ReservationView = {
					orderId: r.orderId,
					status: r.status,
					items: r.items
				};
				if (r.status === to) return { view: current, changed: false };
				if (r.status === "REJECTED" && to === "RELEASED")
					return { view: current, changed: false };
				if (r.status !== "RESERVED")
					throw shopError(
						"INVENTORY_RESERVATION_CONFLICT",
						`The reservation is ${r.status}`,
						{ orderId, status: r.status }
					);
				await this.lockStock(
					r.items.map(i => i.productId),
					t
				);
				for (const i of normaliseItems(r.items)) {
					await this.sequelize.query(
						to === "COMMITTED"
							? "UPDATE stock SET on_hand = on_hand - $2, reserved = reserved - $2, updated_at = now() WHERE product_id = $1"
							: "UPDATE stock SET reserved = reserved - $2, updated_at = now() WHERE product_id = $1",
						{ bind: [i.productId, i.quantity], transaction: t }
					);
				}
				await this.sequelize.query(
					"UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1",
					{ bind: [orderId, to], transaction: t }
				);
				return { view: { ...current, status: to }, changed: true };
			});
			if (outcome.changed) {
				await ctx.emit(to === "COMMITTED" ? "stock.committed" : "stock.released", {
					orderId,
					items: outcome.view.items
				});
				await this.emitStockChanged(
					ctx,
					outcome.view.items.map(i => i.productId)
				);
			}
			return outcome.view;
		},

		async emitStockChanged(
			this: InventoryThis,
			ctx: ShopContext,
			productIds: string[]
		): Promise<void> {
			const rows = await this.models.Stock.findAll({ where: { productId: productIds } });
			for (const r of rows) await ctx.emit("stock.changed", view(r.get({ plain: true })));
		}
	},

	/** Seeds the demo catalog's initial stock; existing records are left as they are. */
	async afterConnected(this: InventoryThis): Promise<void> {
		await this.models.Stock.bulkCreate(
			DEMO_CATALOG.map(p => ({ productId: p.id, onHand: p.stock, reserved: 0 })),
			{ ignoreDuplicates: true }
		);
	}
};

export default InventoryService;
