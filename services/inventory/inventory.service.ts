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
import { config } from "../../platform/config";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import { registerMetrics } from "../../platform/metrics";
import { addRetentionTask } from "../../platform/retention";
import { DbMixin, type DbMixinMethods } from "../../mixins/db.mixin";
import { OutboxMixin, outboxMigrations, type OutboxMethods } from "../../mixins/events.mixin";
import {
	IdempotencyMixin,
	idempotencyMigrations,
	type IdempotencyMixinMethods
} from "../../mixins/idempotency.mixin";
import { DEMO_CATALOG } from "../products/products.model";
import type { ReservationItem, ReservationView, StockLevel } from "./inventory.model";
import { InventoryRepo, RESERVATION_RETENTION_SQL } from "./inventory.repo";
import { inventoryMigrations } from "./migrations";
import { ReservationSweeper } from "./reservation-sweeper";
import { reservationView, reserve, restock, transition } from "./reservations";
import { enqueueStockChanged, stockView } from "./stock-levels";

/** What the service adds to `this` (set in `created`). */
interface InventoryState {
	/** The inventory database's statements. */
	repo: InventoryRepo;
	/** RESERVATION_TTL_MS. */
	reservationTtlMs: number;
	/** Expires due reservations (reservation-sweeper.ts). */
	sweeper: ReservationSweeper;
}
type InventoryThis = Service &
	DbMixinMethods &
	IdempotencyMixinMethods &
	OutboxMethods &
	InventoryState;

const orderIdParams = { $$strict: true, orderId: { type: "uuid" } } as const;

const InventoryService: ShopServiceSchema<InventoryThis> = {
	name: "inventory",
	mixins: [
		DbMixin({
			service: "inventory",
			migrations: [...inventoryMigrations, ...idempotencyMigrations, ...outboxMigrations]
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
				const row = await this.repo.findStock(ctx.params.productId);
				if (!row)
					throw shopError("INVENTORY_NOT_FOUND", undefined, {
						productId: ctx.params.productId
					});
				return stockView(row);
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
				if (ctx.meta.user && !(await this.repo.findStock(productId)))
					await ctx.call("products.get", { id: productId });
				const result = await this.repo.transaction(async t => {
					const locked = await this.repo.lockStock([productId], t);
					const current = locked.get(productId);
					if (current && onHand < current.reserved)
						throw shopError("INVENTORY_BELOW_RESERVED", undefined, {
							reserved: current.reserved,
							onHand
						});
					await this.repo.upsertOnHand(t, productId, onHand);
					await enqueueStockChanged(this, t, [productId], ctx.requestID ?? null);
					return { productId, onHand, reserved: current?.reserved ?? 0 };
				});
				return stockView(result);
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
			handler(
				this: InventoryThis,
				ctx: ShopContext<{ orderId: string; items: ReservationItem[] }>
			): Promise<ReservationView> {
				return reserve(this, ctx);
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
				return transition(this, ctx, "RELEASED");
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
				return transition(this, ctx, "COMMITTED");
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
			handler(
				this: InventoryThis,
				ctx: ShopContext<{ orderId: string }>
			): Promise<ReservationView> {
				return restock(this, ctx);
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
				return { released: await this.sweeper.runOnce() };
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
				const r = await this.repo.transaction(t =>
					this.repo.findReservation(ctx.params.orderId, t, false)
				);
				return r && reservationView(r);
			}
		}
	},

	created(this: InventoryThis): void {
		registerMetrics(this.broker, ["reservations"]);
		const c = config();
		this.repo = new InventoryRepo(this.db);
		this.reservationTtlMs = c.reservationTtlMs;
		this.sweeper = new ReservationSweeper(this, c.reservationSweepIntervalMs);
		// Retention (platform/retention.ts, run by the mixins' job): reservations in a final status,
		// RESERVATION_RETENTION_MS after their last change. RESERVED ones, also those kept past
		// their pivot (`expires_at` NULL), are never purged.
		addRetentionTask(this, {
			table: "reservations",
			sql: RESERVATION_RETENTION_SQL,
			windowMs: c.retention.reservationMs
		});
	},

	/** Starts the sweeper (after DbMixin's `started` connected the database). */
	started(this: InventoryThis): void {
		this.sweeper.start();
	},

	/**
	 * Stops the sweeper and waits for a sweep in flight, before DbMixin's `stopped` closes the
	 * database (Moleculer runs the schema's own `stopped` before its mixins').
	 */
	async stopped(this: InventoryThis): Promise<void> {
		await this.sweeper.stop();
	},

	/** Seeds the demo catalog's initial stock; existing records are left as they are. */
	async afterConnected(this: InventoryThis): Promise<void> {
		await this.repo.seedStock(
			DEMO_CATALOG.map(p => ({ productId: p.id, onHand: p.stock, reserved: 0 }))
		);
	}
};

export default InventoryService;
