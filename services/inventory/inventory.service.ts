/**
 * `inventory`: units on hand and reserved per product, and the reservations the order saga makes.
 *
 * `available = onHand - reserved`. A reservation is all-or-nothing, made in one transaction that
 * locks the products' stock rows (`SELECT ... FOR UPDATE`) in ascending product-id order, so two
 * reservations never wait on each other in a cycle (no deadlocks: a global lock order, as in
 * Coffman et al. 1971). Check constraints keep `0 <= reserved <= onHand` in the database itself:
 * stock can never go negative, whatever the code does.
 *
 * Idempotency, in two layers:
 * - by idempotency key (`ctx.meta.idempotencyKey`, see `IdempotencyMixin`): `reserve`, `release`
 *   and `commit` apply a key at most once, and its record commits in the same transaction as the
 *   effect; a repeat of the key answers the first outcome (even if the reservation moved on
 *   since), including a business error (`INVENTORY_OUT_OF_STOCK` replays as such); a key used
 *   for another action is refused with `IDEMPOTENCY_KEY_CONFLICT`;
 * - by order id, underneath: a repeat answers the reservation's current outcome. A `release` that
 *   arrives before its `reserve` (the saga's compensation overtook a lost step) leaves a
 *   `RELEASED` tombstone, so the late `reserve` is refused instead of locking stock.
 *
 * Reservations carry a TTL (a semantic lock, in the sense of Garcia-Molina & Salem's sagas: the
 * units are held for the order only so long): `reserve` sets `expires_at = now() +
 * RESERVATION_TTL_MS`, `now()` being the database's clock, the one the sweeper compares with. A
 * sweeper (every `RESERVATION_SWEEP_INTERVAL_MS`, one sweep at a time per node, none while
 * stopping; `releaseExpired` runs one on demand) first asks the orders service which of the due
 * reservations may lapse (`orders.lapseReservations`, which fences those orders off their pivot in
 * the same step): a reservation of an order past its pivot (its card charged) is kept, with
 * `expires_at` cleared, so its saga can always commit it; without an answer nothing expires. It
 * then claims the others, still `RESERVED` and due, with `FOR UPDATE SKIP LOCKED` (so nodes sweeping together never take the
 * same one, nor wait on a reservation a call is changing), locks their stock rows in ascending
 * product-id order like `reserve`, gives the units back (`reserved -= quantity`) and marks them
 * `EXPIRED`. Expiry takes effect when swept: until then a late `commit` still finds the units
 * held. After expiry:
 * - `release` is a no-op success answering status `EXPIRED`;
 * - `commit` takes the units again if they are still available (`onHand -= quantity`, status
 *   `COMMITTED`, answered and emitted as a commit), else fails with
 *   `INVENTORY_RESERVATION_EXPIRED` (409) and changes nothing;
 * - `reserve` of the same order fails with `INVENTORY_RESERVATION_EXPIRED`.
 *
 * Reservation statuses: `RESERVED` → `COMMITTED` (→ `RESTOCKED`, an admin's refund with
 * restock: `restock` puts the units back on hand) | `RELEASED` | `EXPIRED` (→ `COMMITTED`), or
 * `REJECTED` (out of stock), or a `RELEASED` tombstone.
 *
 * Events emitted (only when the effect happens, never on a replay): `stock.reserved`
 * `{ orderId, items }`, `stock.released` `{ orderId, items }` (`{ orderId, items, reason: "EXPIRED" }`
 * when the sweeper released it), `stock.committed` `{ orderId, items }` (plain Moleculer events,
 * best effort); and, durably (transactional outbox, mixins/events.mixin.ts: written in the same
 * transaction as the change), `stock.changed` `{ productId, onHand, reserved, available }`.
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
import { config } from "../../platform/config";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { DEMO_CATALOG } from "../products/products.model";
import { shopError } from "../../platform/errors";
import { countMetric, registerMetrics } from "../../platform/metrics";
import { inventoryMigrations } from "./migrations";
import { DbMixin, type DbMixinMethods } from "../../mixins/db.mixin";
import { OutboxMixin, outboxMigrations, type OutboxMethods } from "../../mixins/events.mixin";
import {
	IdempotencyMixin,
	idempotencyMigrations,
	type IdempotencyMixinMethods,
	type IdempotentOutcome
} from "../../mixins/idempotency.mixin";
import { fastQuery } from "../../platform/db/fast-query";
import { writeOrDefer } from "../../platform/db/deferred-writes";
import { addRetentionTask } from "../../platform/retention";

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

export type ReservationStatus =
	"RESERVED" | "COMMITTED" | "RELEASED" | "REJECTED" | "EXPIRED" | "RESTOCKED";

/** The outcome of reserve/release/commit. */
export interface ReservationView {
	orderId: string;
	status: ReservationStatus;
	items: ReservationItem[];
	/** ISO 8601: when a `RESERVED` reservation lapses; null for tombstones and rejections. */
	expiresAt: string | null;
}

/** A reservation as stored; `reason` lists the shortfall of a REJECTED one. */
interface ReservationRow {
	orderId: string;
	status: ReservationStatus;
	items: ReservationItem[];
	reason?: unknown;
	expiresAt: Date | null;
}

interface StockRow {
	productId: string;
	onHand: number;
	reserved: number;
}

/** The shortfall of one item: what `INVENTORY_OUT_OF_STOCK` / `_EXPIRED` list in `data.items`. */
interface Shortfall {
	productId: string;
	requested: number;
	available: number;
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
	adjustStock(
		t: Transaction,
		deltas: readonly { productId: string; onHand: number; reserved: number }[],
		requestId: string | null,
		opts?: { onlyIfAvailable?: boolean }
	): Promise<Date | null>;
	findReservation(orderId: string, t: Transaction, lock: boolean): Promise<ReservationRow | null>;
	enqueueStockChanged(
		t: Transaction,
		productIds: string[],
		requestId: string | null
	): Promise<void>;
	transition(
		ctx: ShopContext<{ orderId: string }>,
		to: "COMMITTED" | "RELEASED"
	): Promise<ReservationView>;
	releaseExpiredReservations(): Promise<number>;
	sweepExpired(): Promise<number>;
	sweepExpiredBatch(limit: number): Promise<{
		due: number;
		expired: { orderId: string; items: ReservationItem[] }[];
	} | null>;
	scheduleSweep(): void;
}
/** The sweeper's state on `this`. */
interface SweeperState {
	$reservationTtlMs: number;
	$sweepIntervalMs: number;
	$sweepTimer: NodeJS.Timeout | null;
	$sweepInFlight: Promise<number> | null;
	$sweepStopping: boolean;
}
type InventoryThis = Service &
	DbMixinMethods<Models> &
	IdempotencyMixinMethods &
	OutboxMethods &
	InventoryMethods &
	SweeperState;

/** How many expired reservations one sweep transaction claims. */
const SWEEP_BATCH = 100;

const view = (r: StockRow): StockLevel => ({
	productId: r.productId,
	onHand: r.onHand,
	reserved: r.reserved,
	available: r.onHand - r.reserved
});

const reservationView = (r: ReservationRow): ReservationView => ({
	orderId: r.orderId,
	status: r.status,
	items: r.items,
	expiresAt: r.expiresAt ? new Date(r.expiresAt).toISOString() : null
});

/** `2 x <productId>, 1 x <productId>` for log lines. */
const describeItems = (items: ReservationItem[]): string =>
	items.map(i => `${i.quantity} x ${i.productId}`).join(", ");

/** Merges duplicate product ids and sorts by product id (the lock order). */
export function normaliseItems(items: ReservationItem[]): ReservationItem[] {
	const byId = new Map<string, number>();
	for (const it of items) byId.set(it.productId, (byId.get(it.productId) ?? 0) + it.quantity);
	return [...byId.entries()]
		.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
		.map(([productId, quantity]) => ({ productId, quantity }));
}

/** The items that `locked` stock cannot cover from what is available. */
function shortfall(items: ReservationItem[], locked: Map<string, StockRow>): Shortfall[] {
	return items
		.map(i => {
			const s = locked.get(i.productId);
			return {
				productId: i.productId,
				requested: i.quantity,
				available: s ? s.onHand - s.reserved : 0
			};
		})
		.filter(s => s.available < s.requested);
}

/** What `reserve` answers for an order that already has a reservation row. */
function existingReservationOutcome(r: ReservationRow): IdempotentOutcome<ReservationView> {
	const { orderId } = r;
	switch (r.status) {
		case "REJECTED":
			return {
				error: shopError("INVENTORY_OUT_OF_STOCK", "Not enough stock for this order", {
					orderId,
					items: (r.reason ?? []) as unknown[]
				})
			};
		case "RELEASED":
			return {
				error: shopError(
					"INVENTORY_RESERVATION_CONFLICT",
					"The order's reservation was released",
					{ orderId }
				)
			};
		case "EXPIRED":
			return {
				error: shopError(
					"INVENTORY_RESERVATION_EXPIRED",
					"The order's reservation expired",
					{ orderId }
				)
			};
		default:
			return { response: reservationView(r) };
	}
}

const orderIdParams = { $$strict: true, orderId: { type: "uuid" } } as const;

const InventoryService: ShopServiceSchema<InventoryThis> = {
	name: "inventory",
	mixins: [
		DbMixin({
			service: "inventory",
			migrations: [...inventoryMigrations, ...idempotencyMigrations, ...outboxMigrations],
			models: defineModels,
			mainModel: "Stock"
		}),
		IdempotencyMixin(),
		OutboxMixin()
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
		 * @throws INVENTORY_BELOW_RESERVED (409), AUTH_FORBIDDEN (403), PRODUCTS_NOT_FOUND (404)
		 *   when a REST caller would create the stock record of a product the catalog lacks
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
				// Over REST (a user in meta) a new stock record needs a product of the catalog, or
				// `PUT /api/inventory/<any uuid>` would store stock for nothing. Internal callers
				// (products.create, the REPL) are trusted.
				if (ctx.meta.user && !(await this.models.Stock.findByPk(productId)))
					await ctx.call("products.get", { id: productId });
				const result = await this.sequelize.transaction(async t => {
					const locked = await this.lockStock([productId], t);
					const current = locked.get(productId);
					if (current && onHand < current.reserved)
						throw shopError("INVENTORY_BELOW_RESERVED", undefined, {
							reserved: current.reserved,
							onHand
						});
					await fastQuery(
						this.sequelize,
						`INSERT INTO stock (product_id, on_hand, reserved) VALUES ($1, $2, 0)
						 ON CONFLICT (product_id) DO UPDATE SET on_hand = EXCLUDED.on_hand, updated_at = now()`,
						{ bind: [productId, onHand], transaction: t }
					);
					await this.enqueueStockChanged(t, [productId], ctx.requestID ?? null);
					return { productId, onHand, reserved: current?.reserved ?? 0 };
				});
				return view(result);
			}
		},

		/**
		 * Reserves all items for an order, or none, for `RESERVATION_TTL_MS`. Idempotent by
		 * `ctx.meta.idempotencyKey` (first outcome replayed) and by `orderId`.
		 * @param items - 1 to 100 `{ productId, quantity }`; duplicates are summed
		 * @returns `{ orderId, status: "RESERVED", items, expiresAt }` (`expiresAt` ISO 8601)
		 * @throws INVENTORY_OUT_OF_STOCK (409, `data.items` lists `{ productId, requested, available }`;
		 *   the order's `REJECTED` reservation is kept, so a repeat answers the same),
		 *   INVENTORY_RESERVATION_CONFLICT (409) when the order's reservation was already released,
		 *   INVENTORY_RESERVATION_EXPIRED (409) when it expired, IDEMPOTENCY_KEY_CONFLICT (409)
		 * @emits stock.reserved, stock.changed
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
				return this.withIdempotency(
					ctx,
					"inventory.reserve",
					async t => {
						const existing = await this.findReservation(orderId, t, true);
						if (existing) return existingReservationOutcome(existing);
						// The stock rows are the contended ones (every order of a product waits on
						// its row): they are updated first, and the reservation row is written with
						// the key's record (platform/db/deferred-writes.ts), so a stock row is held for the
						// fewest round trips (its update, the record, the commit).
						const deltas = items.map(i => ({
							productId: i.productId,
							onHand: 0,
							reserved: i.quantity
						}));
						let short: Shortfall[] = [];
						// The database's clock (its `now()`, this transaction's start), from the
						// stock update: the TTL is counted on it.
						let dbNow: Date | null = null;
						if (items.length === 1) {
							// One row: its conditional update locks, checks and reserves at once.
							const applied = await this.adjustStock(
								t,
								deltas,
								ctx.requestID ?? null,
								{
									onlyIfAvailable: true
								}
							);
							dbNow = applied;
							if (!applied)
								short = shortfall(
									items,
									await this.lockStock(
										items.map(i => i.productId),
										t
									)
								);
						} else {
							// Several rows: locked in product-id order first (no deadlocks), then checked.
							short = shortfall(
								items,
								await this.lockStock(
									items.map(i => i.productId),
									t
								)
							);
							if (short.length === 0)
								dbNow = await this.adjustStock(t, deltas, ctx.requestID ?? null);
						}
						if (short.length > 0) {
							// Kept (committed with the key): a repeat answers the same refusal.
							await writeOrDefer(this.sequelize, t, {
								sql: `INSERT INTO reservations (order_id, status, items, reason) VALUES ($1, 'REJECTED', $2::jsonb, $3::jsonb)`,
								bind: [orderId, JSON.stringify(items), JSON.stringify(short)]
							});
							return {
								...existingReservationOutcome({
									orderId,
									status: "REJECTED",
									items,
									reason: short,
									expiresAt: null
								}),
								afterCommit: async () => {
									this.logger.info(
										`Reservation for order ${orderId} REJECTED: out of stock (${short.map(s => `${s.productId} ${s.available}/${s.requested}`).join(", ")})`
									);
									countMetric(this.broker, "reservations", {
										outcome: "out_of_stock"
									});
								}
							};
						}
						// The TTL is counted on the database's clock, the one the sweeper compares it
						// with: a node whose clock is off can neither shorten nor stretch it.
						const expiresAt = new Date(
							(dbNow ?? new Date()).getTime() + this.$reservationTtlMs
						);
						await writeOrDefer(this.sequelize, t, {
							sql: `INSERT INTO reservations (order_id, status, items, expires_at) VALUES ($1, 'RESERVED', $2::jsonb, $3)`,
							bind: [orderId, JSON.stringify(items), expiresAt]
						});
						return {
							response: reservationView({
								orderId,
								status: "RESERVED",
								items,
								expiresAt
							}),
							afterCommit: async () => {
								this.logger.info(
									`Reservation for order ${orderId} RESERVED: ${describeItems(items)}`
								);
								countMetric(this.broker, "reservations", { outcome: "reserved" });
								await ctx.emit("stock.reserved", { orderId, items });
							}
						};
					},
					// The order's calls (reserve, release, commit) take turns: the key's claim takes the
					// order's advisory lock, so they see each other's reservation row (or its absence).
					{ lock: orderId }
				);
			}
		},

		/**
		 * Releases an order's reservation (saga compensation). Idempotent (by key and by order);
		 * releasing an order that reserved nothing is a no-op success that also blocks a later
		 * `reserve`; releasing an expired reservation is a no-op success.
		 * @returns `{ orderId, status, items, expiresAt }` (`RELEASED`; `REJECTED` if nothing was
		 *   reserved; `EXPIRED` if the TTL had already given the units back)
		 * @throws INVENTORY_RESERVATION_CONFLICT (409) if already committed, IDEMPOTENCY_KEY_CONFLICT (409)
		 * @emits stock.released, stock.changed
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
		 * Commits an order's reservation: the units leave `onHand` and `reserved`. Idempotent (by
		 * key and by order). An EXPIRED reservation is committed if its units are still
		 * available (taken from `onHand` directly), else refused.
		 * @returns `{ orderId, status: "COMMITTED", items, expiresAt }`
		 * @throws INVENTORY_RESERVATION_CONFLICT (409) if released, rejected or never made,
		 *   INVENTORY_RESERVATION_EXPIRED (409, `data.items` lists the shortfall) if it expired and
		 *   its units are gone, IDEMPOTENCY_KEY_CONFLICT (409)
		 * @emits stock.committed, stock.changed
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
		 * Gives an order's committed units back on hand: an admin's refund with restock (the
		 * orders service's `order-refund` saga; not published over REST). The units come from
		 * the reservation itself, never from the caller: `onHand += quantity` per product, under
		 * the same locks as `commit`, and the reservation `COMMITTED` → `RESTOCKED`, at most once
		 * per order. Idempotent (by key and by order): a `RESTOCKED` reservation answers as it is.
		 * @returns `{ orderId, status: "RESTOCKED", items, expiresAt: null }`
		 * @throws INVENTORY_RESERVATION_CONFLICT (409) unless the order's stock was committed (no
		 *   reservation, or `RESERVED`, `RELEASED`, `REJECTED`, `EXPIRED`), IDEMPOTENCY_KEY_CONFLICT
		 *   (409)
		 * @emits stock.released (`{ orderId, items, reason: "RESTOCKED" }`), stock.changed
		 */
		restock: {
			visibility: "public",
			params: orderIdParams,
			async handler(
				this: InventoryThis,
				ctx: ShopContext<{ orderId: string }>
			): Promise<ReservationView> {
				const { orderId } = ctx.params;
				return this.withIdempotency(
					ctx,
					"inventory.restock",
					async t => {
						const r = await this.findReservation(orderId, t, true);
						if (!r)
							throw shopError(
								"INVENTORY_RESERVATION_CONFLICT",
								"No reservation for this order",
								{ orderId }
							);
						const current = reservationView(r);
						if (r.status === "RESTOCKED") return { response: current };
						if (r.status !== "COMMITTED")
							throw shopError(
								"INVENTORY_RESERVATION_CONFLICT",
								`Only committed stock can be restocked; the reservation is ${r.status}`,
								{ orderId, status: r.status }
							);
						const items = normaliseItems(r.items);
						await fastQuery(
							this.sequelize,
							"UPDATE reservations SET status = 'RESTOCKED', updated_at = now() WHERE order_id = $1",
							{ bind: [orderId], transaction: t }
						);
						if (items.length > 1)
							await this.lockStock(
								items.map(i => i.productId),
								t
							);
						await this.adjustStock(
							t,
							items.map(i => ({
								productId: i.productId,
								onHand: i.quantity,
								reserved: 0
							})),
							ctx.requestID ?? null
						);
						return {
							response: { ...current, status: "RESTOCKED", expiresAt: null },
							afterCommit: async () => {
								this.logger.info(
									`Reservation for order ${orderId} RESTOCKED: ${describeItems(items)}`
								);
								countMetric(this.broker, "reservations", { outcome: "restocked" });
								await ctx.emit("stock.released", {
									orderId,
									items: r.items,
									reason: "RESTOCKED"
								});
							}
						};
					},
					// Takes turns with the order's other calls (its advisory lock), like `commit`.
					{ lock: orderId }
				);
			}
		},

		/**
		 * Runs one sweep of expired reservations now (operators and tests; not published over
		 * REST). Waits for a sweep already running on this node, then runs its own.
		 * @returns `{ released }`: how many reservations this sweep expired
		 * @emits stock.released (`reason: "EXPIRED"`), stock.changed
		 */
		releaseExpired: {
			visibility: "public",
			params: { $$strict: true },
			async handler(this: InventoryThis): Promise<{ released: number }> {
				return { released: await this.releaseExpiredReservations() };
			}
		},

		/**
		 * An order's reservation, for operators and tests (not published over REST).
		 * @returns `{ orderId, status, items, expiresAt }` or null
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
				return r && reservationView(r);
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
			const rows = (await fastQuery(
				this.sequelize,
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
			const rows = (await fastQuery(
				this.sequelize,
				`SELECT order_id AS "orderId", status, items, reason, expires_at AS "expiresAt"
				 FROM reservations WHERE order_id = $1${lock ? " FOR UPDATE" : ""}`,
				{ bind: [orderId], type: QueryTypes.SELECT, transaction: t }
			)) as ReservationRow[];
			return rows[0] ?? null;
		},

		/**
		 * RESERVED → COMMITTED or RELEASED (and EXPIRED → COMMITTED when the units are still
		 * there), under the same locks as `reserve`, at most once per idempotency key.
		 */
		async transition(
			this: InventoryThis,
			ctx: ShopContext<{ orderId: string }>,
			to: "COMMITTED" | "RELEASED"
		): Promise<ReservationView> {
			const { orderId } = ctx.params;
			const action = to === "COMMITTED" ? "inventory.commit" : "inventory.release";
			return this.withIdempotency(
				ctx,
				action,
				async t => {
					const r = await this.findReservation(orderId, t, true);
					if (!r) {
						if (to === "COMMITTED")
							throw shopError(
								"INVENTORY_RESERVATION_CONFLICT",
								"No reservation for this order",
								{ orderId }
							);
						// Compensation before (or instead of) the step: leave a tombstone.
						await fastQuery(
							this.sequelize,
							`INSERT INTO reservations (order_id, status, items) VALUES ($1, 'RELEASED', '[]'::jsonb)`,
							{ bind: [orderId], transaction: t }
						);
						return {
							response: { orderId, status: "RELEASED", items: [], expiresAt: null }
						};
					}
					const current = reservationView(r);
					if (r.status === to) return { response: current };
					if ((r.status === "REJECTED" || r.status === "EXPIRED") && to === "RELEASED")
						return { response: current };
					const items = normaliseItems(r.items);
					const done = {
						response: { ...current, status: to },
						afterCommit: async () => {
							this.logger.info(
								`Reservation for order ${orderId} ${to}: ${describeItems(items)}`
							);
							countMetric(this.broker, "reservations", { outcome: to.toLowerCase() });
							await ctx.emit(
								to === "COMMITTED" ? "stock.committed" : "stock.released",
								{
									orderId,
									items: r.items
								}
							);
						}
					};
					if (r.status === "EXPIRED" && to === "COMMITTED") {
						// The TTL gave the units back: take them again if nobody else has.
						const locked = await this.lockStock(
							items.map(i => i.productId),
							t
						);
						const short = shortfall(items, locked);
						if (short.length > 0)
							throw shopError(
								"INVENTORY_RESERVATION_EXPIRED",
								"The reservation expired and its units are no longer available",
								{ orderId, items: short }
							);
						await this.adjustStock(
							t,
							items.map(i => ({
								productId: i.productId,
								onHand: -i.quantity,
								reserved: 0
							})),
							ctx.requestID ?? null
						);
						await fastQuery(
							this.sequelize,
							"UPDATE reservations SET status = 'COMMITTED', updated_at = now() WHERE order_id = $1",
							{ bind: [orderId], transaction: t }
						);
						return done;
					}
					if (r.status !== "RESERVED")
						throw shopError(
							"INVENTORY_RESERVATION_CONFLICT",
							`The reservation is ${r.status}`,
							{ orderId, status: r.status }
						);
					// The reservation's new status goes with the key's record (platform/db/deferred-writes.ts): the
					// contended stock rows are held for fewer round trips.
					await writeOrDefer(this.sequelize, t, {
						sql: "UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1",
						bind: [orderId, to]
					});
					// Several rows are locked in product-id order first; a single row is locked by its
					// own update (no ordering to keep).
					if (items.length > 1)
						await this.lockStock(
							items.map(i => i.productId),
							t
						);
					await this.adjustStock(
						t,
						items.map(i => ({
							productId: i.productId,
							onHand: to === "COMMITTED" ? -i.quantity : 0,
							reserved: -i.quantity
						})),
						ctx.requestID ?? null
					);
					return done;
				},
				// The order's calls (reserve, release, commit) take turns: the key's claim takes the
				// order's advisory lock, so they see each other's reservation row (or its absence).
				{ lock: orderId }
			);
		},

		/**
		 * One sweep, never two at once on this node: waits for a sweep in flight, then runs.
		 * @returns how many reservations this sweep expired
		 */
		async releaseExpiredReservations(this: InventoryThis): Promise<number> {
			while (this.$sweepInFlight) await this.$sweepInFlight.catch(() => undefined);
			const run = this.sweepExpired();
			this.$sweepInFlight = run;
			try {
				return await run;
			} finally {
				if (this.$sweepInFlight === run) this.$sweepInFlight = null;
			}
		},

		/** Expires due reservations batch by batch (one transaction each); emits after each commit. */
		async sweepExpired(this: InventoryThis): Promise<number> {
			let released = 0;
			for (;;) {
				const batch = await this.sweepExpiredBatch(SWEEP_BATCH);
				if (!batch) return released;
				released += batch.expired.length;
				if (batch.expired.length > 0)
					countMetric(
						this.broker,
						"reservations",
						{ outcome: "expired" },
						batch.expired.length
					);
				for (const r of batch.expired)
					await this.broker.emit("stock.released", {
						orderId: r.orderId,
						items: r.items,
						reason: "EXPIRED"
					});
				if (batch.due < SWEEP_BATCH || this.$sweepStopping) return released;
			}
		},

		/**
		 * One batch of the sweep: up to `limit` RESERVED reservations past their `expires_at` (on
		 * the database's clock). Their orders' saga decides first (`orders.lapseReservations`,
		 * which also fences those orders off their pivot): the reservations of orders past their
		 * pivot are kept (`expires_at` cleared: they no longer expire, their saga commits them or
		 * an operator resolves it); the others are claimed (`SKIP LOCKED`: those another
		 * transaction holds are left for the next sweep), their units given back and marked
		 * EXPIRED, in one transaction. Stock rows are locked in ascending product-id order, after
		 * the reservation rows, as `reserve` and `release`/`commit` do.
		 * @returns how many were due and the ones expired; null when the orders service did not
		 *   answer (nothing expires without its word: the next sweep asks again)
		 */
		async sweepExpiredBatch(
			this: InventoryThis,
			limit: number
		): Promise<{
			due: number;
			expired: { orderId: string; items: ReservationItem[] }[];
		} | null> {
			const candidates = (await fastQuery(
				this.sequelize,
				`SELECT order_id AS "orderId" FROM reservations
				 WHERE status = 'RESERVED' AND expires_at <= now()
				 ORDER BY expires_at LIMIT $1`,
				{ bind: [limit], type: QueryTypes.SELECT }
			)) as { orderId: string }[];
			if (candidates.length === 0) return { due: 0, expired: [] };
			const orderIds = candidates.map(c => c.orderId);
			let kept: string[];
			try {
				({ kept } = await this.broker.call<{ kept: string[] }, { orderIds: string[] }>(
					"orders.lapseReservations",
					{ orderIds },
					{ timeout: 10_000, retries: 0 }
				));
			} catch (err) {
				this.logger.warn(
					`Sweep: ${orderIds.length} reservation(s) due, but the orders service did not say which may lapse; kept for now`,
					err
				);
				return null;
			}
			if (kept.length > 0) {
				await fastQuery(
					this.sequelize,
					`UPDATE reservations SET expires_at = NULL, updated_at = now()
					 WHERE order_id = ANY($1::uuid[]) AND status = 'RESERVED'`,
					{ bind: [kept] }
				);
				this.logger.info(
					`Sweep: ${kept.length} reservation(s) of orders past their pivot kept past their TTL`
				);
			}
			const keep = new Set(kept);
			const lapse = orderIds.filter(id => !keep.has(id));
			if (lapse.length === 0) return { due: candidates.length, expired: [] };
			const expired = await this.sequelize.transaction(async t => {
				const due = (await fastQuery(
					this.sequelize,
					`SELECT order_id AS "orderId", items FROM reservations
					 WHERE status = 'RESERVED' AND expires_at <= now() AND order_id = ANY($2::uuid[])
					 ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED`,
					{ bind: [limit, lapse], type: QueryTypes.SELECT, transaction: t }
				)) as { orderId: string; items: ReservationItem[] }[];
				if (due.length === 0) return [];
				const totals = normaliseItems(due.flatMap(r => r.items));
				await this.lockStock(
					totals.map(i => i.productId),
					t
				);
				await this.adjustStock(
					t,
					totals.map(i => ({ productId: i.productId, onHand: 0, reserved: -i.quantity })),
					null
				);
				await fastQuery(
					this.sequelize,
					`UPDATE reservations SET status = 'EXPIRED', updated_at = now()
					 WHERE order_id = ANY($1::uuid[])`,
					{ bind: [due.map(r => r.orderId)], transaction: t }
				);
				return due;
			});
			return { due: candidates.length, expired };
		},

		/** Arms the sweeper's next run (a timeout re-armed after each sweep: runs never overlap). */
		scheduleSweep(this: InventoryThis): void {
			if (this.$sweepStopping) return;
			this.$sweepTimer = setTimeout(() => {
				this.$sweepTimer = null;
				if (this.$sweepStopping) return;
				void this.releaseExpiredReservations()
					.catch(err => this.logger.warn("Sweeping expired reservations failed", err))
					.finally(() => this.scheduleSweep());
			}, this.$sweepIntervalMs);
		},

		/**
		 * Adds `onHand` and `reserved` (signed unit counts) to each product's stock row, and writes
		 * one durable `stock.changed` event per product with its new level, in transaction `t`:
		 * two statements whatever the number of products (the update returns the levels). Rows
		 * of several products must already be locked in product-id order (`lockStock`).
		 * `onlyIfAvailable` (one product only): the update applies only if the product's
		 * available units stay >= 0, checked by the update itself under the row's lock.
		 * @returns the database's `now()` (this transaction's start) when the update applied, null
		 *   when it did not (`onlyIfAvailable`)
		 * @throws the database's check violation if a level would go negative or reserved exceed
		 *   on hand (callers check first, under the lock)
		 */
		async adjustStock(
			this: InventoryThis,
			t: Transaction,
			deltas: readonly { productId: string; onHand: number; reserved: number }[],
			requestId: string | null,
			opts: { onlyIfAvailable?: boolean } = {}
		): Promise<Date | null> {
			if (opts.onlyIfAvailable && deltas.length !== 1)
				throw new Error("adjustStock: onlyIfAvailable takes exactly one product");
			// Re-checked on the row's latest version under its lock (READ COMMITTED), so two
			// reservations can never both take the last units.
			const guard = opts.onlyIfAvailable
				? " AND s.on_hand + d.on_hand - s.reserved - d.reserved >= 0"
				: "";
			const rows = (await fastQuery(
				this.sequelize,
				`UPDATE stock AS s SET on_hand = s.on_hand + d.on_hand, reserved = s.reserved + d.reserved,
					updated_at = now()
				 FROM unnest($1::uuid[], $2::int[], $3::int[]) AS d(product_id, on_hand, reserved)
				 WHERE s.product_id = d.product_id${guard}
				 RETURNING s.product_id AS "productId", s.on_hand AS "onHand", s.reserved, now() AS "dbNow"`,
				{
					bind: [
						deltas.map(d => d.productId),
						deltas.map(d => d.onHand),
						deltas.map(d => d.reserved)
					],
					type: QueryTypes.SELECT,
					transaction: t
				}
			)) as (StockRow & { dbNow: Date })[];
			rows.sort((a, b) =>
				a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0
			);
			if (rows.length === 0) return null;
			await this.enqueueEvents(
				t,
				rows.map(r => ({ name: "stock.changed", data: view(r), aggregateId: r.productId })),
				requestId
			);
			return new Date(rows[0]!.dbNow);
		},

		/**
		 * Writes one durable `stock.changed` event per product (its level after this transaction's
		 * changes) to the outbox, in transaction `t`.
		 */
		async enqueueStockChanged(
			this: InventoryThis,
			t: Transaction,
			productIds: string[],
			requestId: string | null
		): Promise<void> {
			const ids = [...new Set(productIds)].sort();
			const rows = (await fastQuery(
				this.sequelize,
				`SELECT product_id AS "productId", on_hand AS "onHand", reserved FROM stock
				 WHERE product_id = ANY($1::uuid[]) ORDER BY product_id`,
				{ bind: [ids], type: QueryTypes.SELECT, transaction: t }
			)) as { productId: string; onHand: number; reserved: number }[];
			for (const r of rows)
				await this.enqueueEvent(t, "stock.changed", view(r), {
					aggregateId: r.productId,
					requestId
				});
		}
	},

	created(this: InventoryThis): void {
		registerMetrics(this.broker, ["reservations"]);
		const c = config();
		this.$reservationTtlMs = c.reservationTtlMs;
		this.$sweepIntervalMs = c.reservationSweepIntervalMs;
		this.$sweepTimer = null;
		this.$sweepInFlight = null;
		this.$sweepStopping = false;
		// Retention (platform/retention.ts, run by the mixins' job): reservations in a final status,
		// RESERVATION_RETENTION_MS after their last change. RESERVED ones, also those kept past
		// their pivot (`expires_at` NULL), are never purged.
		addRetentionTask(this, {
			table: "reservations",
			sql: `DELETE FROM reservations WHERE order_id IN (SELECT order_id FROM reservations
				WHERE status <> 'RESERVED' AND updated_at < now() - $2::float8 * interval '1 millisecond'
				ORDER BY updated_at LIMIT $1)`,
			windowMs: c.retention.reservationMs
		});
	},

	/** Starts the sweeper (after DbMixin's `started` connected the database). */
	started(this: InventoryThis): void {
		this.$sweepStopping = false;
		this.scheduleSweep();
	},

	/**
	 * Stops the sweeper and waits for a sweep in flight, before DbMixin's `stopped` closes the
	 * database (Moleculer runs the schema's own `stopped` before its mixins').
	 */
	async stopped(this: InventoryThis): Promise<void> {
		this.$sweepStopping = true;
		if (this.$sweepTimer) clearTimeout(this.$sweepTimer);
		this.$sweepTimer = null;
		await this.$sweepInFlight?.catch(() => undefined);
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
