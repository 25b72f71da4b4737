/**
 * The reservation's state machine, one guarded function per transition, each run inside the
 * idempotency key's transaction (mixins/idempotency.mixin.ts) under the order's advisory lock:
 * `reserve` (none → RESERVED, or REJECTED when short), `transition` (RESERVED → COMMITTED |
 * RELEASED, EXPIRED → COMMITTED, none → RELEASED tombstone) and `restock` (COMMITTED →
 * RESTOCKED). The sweeper's RESERVED → EXPIRED is in reservation-sweeper.ts. One owner per
 * state, as eShop's `Order.cs` guards its own transitions.
 *
 * Stock rows are locked in ascending product-id order (a global lock order: no deadlocks), after
 * the reservation row.
 */
import type { ServiceBroker } from "moleculer";
import type { ShopContext } from "../../platform/context";
import { shopError } from "../../platform/errors";
import { countMetric } from "../../platform/metrics";
import type { IdempotencyMixinMethods, IdempotentOutcome } from "../../mixins/idempotency.mixin";
import type { ReservationItem, ReservationView } from "./inventory.model";
import type { ReservationRow, Shortfall, StockRow } from "./inventory.repo";
import { adjustStock, type StockWriter } from "./stock-levels";
import type { Transaction } from "../../platform/db/fast-query";

/** What the transitions need of the service. */
export interface ReservationHost
	extends StockWriter, Pick<IdempotencyMixinMethods, "withIdempotency"> {
	readonly broker: ServiceBroker;
	readonly logger: { info(...args: unknown[]): void };
	/** RESERVATION_TTL_MS. */
	readonly reservationTtlMs: number;
}

export const reservationView = (r: ReservationRow): ReservationView => ({
	orderId: r.orderId,
	status: r.status,
	items: r.items,
	expiresAt: r.expiresAt ? new Date(r.expiresAt).toISOString() : null
});

/** `2 x <productId>, 1 x <productId>` for log lines. */
export const describeItems = (items: ReservationItem[]): string =>
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

/** Locks the stock rows of `items`' products (in product-id order). */
const lockItems = (
	svc: ReservationHost,
	items: ReservationItem[],
	t: Transaction
): Promise<Map<string, StockRow>> =>
	svc.repo.lockStock(
		items.map(i => i.productId),
		t
	);

/**
 * none → RESERVED (all items, or none: REJECTED with the shortfall), at most once per key; a
 * repeat for the order answers its reservation's current outcome.
 */
export function reserve(
	svc: ReservationHost,
	ctx: ShopContext<{ orderId: string; items: ReservationItem[] }>
): Promise<ReservationView> {
	const { orderId } = ctx.params;
	const items = normaliseItems(ctx.params.items);
	return svc.withIdempotency(
		ctx,
		"inventory.reserve",
		async (t, read) => {
			const existing = svc.repo.reservationOf(read);
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
				const applied = await adjustStock(svc, t, deltas, ctx.requestID ?? null, {
					onlyIfAvailable: true
				});
				dbNow = applied;
				if (!applied) {
					// Refused: lock the row to say what is short. A release may have given
					// units back since the update looked: then they are taken now, under the
					// lock (never a RESERVED row whose units were not counted).
					short = shortfall(items, await lockItems(svc, items, t));
					if (short.length === 0)
						dbNow = await adjustStock(svc, t, deltas, ctx.requestID ?? null);
				}
			} else {
				// Several rows: locked in product-id order first (no deadlocks), then checked.
				short = shortfall(items, await lockItems(svc, items, t));
				if (short.length === 0)
					dbNow = await adjustStock(svc, t, deltas, ctx.requestID ?? null);
			}
			if (short.length > 0) {
				// Kept (committed with the key): a repeat answers the same refusal.
				await svc.repo.insertRejected(t, orderId, items, short);
				return {
					...existingReservationOutcome({
						orderId,
						status: "REJECTED",
						items,
						reason: short,
						expiresAt: null
					}),
					afterCommit: async () => {
						svc.logger.info(
							`Reservation for order ${orderId} REJECTED: out of stock (${short.map(s => `${s.productId} ${s.available}/${s.requested}`).join(", ")})`
						);
						countMetric(svc.broker, "reservations", { outcome: "out_of_stock" });
					}
				};
			}
			// The TTL is counted on the database's clock, the one the sweeper compares it
			// with: a node whose clock is off can neither shorten nor stretch it.
			const expiresAt = new Date((dbNow ?? new Date()).getTime() + svc.reservationTtlMs);
			await svc.repo.insertReserved(t, orderId, items, expiresAt);
			return {
				response: reservationView({ orderId, status: "RESERVED", items, expiresAt }),
				afterCommit: async () => {
					svc.logger.info(
						`Reservation for order ${orderId} RESERVED: ${describeItems(items)}`
					);
					countMetric(svc.broker, "reservations", { outcome: "reserved" });
					await ctx.emit("stock.reserved", { orderId, items });
				}
			};
		},
		// The order's calls (reserve, release, commit) take turns: the key's claim takes the
		// order's advisory lock, so they see each other's reservation row (or its absence).
		{ lock: orderId, read: svc.repo.reservationRead(orderId, true) }
	);
}

/**
 * RESERVED → COMMITTED or RELEASED (and EXPIRED → COMMITTED when the units are still
 * there), under the same locks as `reserve`, at most once per idempotency key.
 */
export function transition(
	svc: ReservationHost,
	ctx: ShopContext<{ orderId: string }>,
	to: "COMMITTED" | "RELEASED"
): Promise<ReservationView> {
	const { orderId } = ctx.params;
	const action = to === "COMMITTED" ? "inventory.commit" : "inventory.release";
	return svc.withIdempotency(
		ctx,
		action,
		async (t, read) => {
			const r = svc.repo.reservationOf(read);
			if (!r) {
				if (to === "COMMITTED")
					throw shopError(
						"INVENTORY_RESERVATION_CONFLICT",
						"No reservation for this order",
						{ orderId }
					);
				// Compensation before (or instead of) the step: leave a tombstone.
				await svc.repo.insertTombstone(t, orderId);
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
					svc.logger.info(
						`Reservation for order ${orderId} ${to}: ${describeItems(items)}`
					);
					countMetric(svc.broker, "reservations", { outcome: to.toLowerCase() });
					await ctx.emit(to === "COMMITTED" ? "stock.committed" : "stock.released", {
						orderId,
						items: r.items
					});
				}
			};
			if (r.status === "EXPIRED" && to === "COMMITTED") {
				// The TTL gave the units back: take them again if nobody else has.
				const short = shortfall(items, await lockItems(svc, items, t));
				if (short.length > 0)
					throw shopError(
						"INVENTORY_RESERVATION_EXPIRED",
						"The reservation expired and its units are no longer available",
						{ orderId, items: short }
					);
				await adjustStock(
					svc,
					t,
					items.map(i => ({ productId: i.productId, onHand: -i.quantity, reserved: 0 })),
					ctx.requestID ?? null
				);
				await svc.repo.markCommitted(t, orderId);
				return done;
			}
			if (r.status !== "RESERVED")
				throw shopError(
					"INVENTORY_RESERVATION_CONFLICT",
					`The reservation is ${r.status}`,
					{ orderId, status: r.status }
				);
			// The reservation's new status goes with the key's record (platform/db/deferred-writes.ts):
			// the contended stock rows are held for fewer round trips.
			await svc.repo.setStatus(t, orderId, to);
			// Several rows are locked in product-id order first; a single row is locked by its
			// own update (no ordering to keep).
			if (items.length > 1) await lockItems(svc, items, t);
			await adjustStock(
				svc,
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
		{ lock: orderId, read: svc.repo.reservationRead(orderId, true) }
	);
}

/**
 * COMMITTED → RESTOCKED: the reservation's units back on hand, at most once per order; a
 * RESTOCKED reservation answers as it is.
 */
export function restock(
	svc: ReservationHost,
	ctx: ShopContext<{ orderId: string }>
): Promise<ReservationView> {
	const { orderId } = ctx.params;
	return svc.withIdempotency(
		ctx,
		"inventory.restock",
		async (t, read) => {
			const r = svc.repo.reservationOf(read);
			if (!r)
				throw shopError("INVENTORY_RESERVATION_CONFLICT", "No reservation for this order", {
					orderId
				});
			const current = reservationView(r);
			if (r.status === "RESTOCKED") return { response: current };
			if (r.status !== "COMMITTED")
				throw shopError(
					"INVENTORY_RESERVATION_CONFLICT",
					`Only committed stock can be restocked; the reservation is ${r.status}`,
					{ orderId, status: r.status }
				);
			const items = normaliseItems(r.items);
			await svc.repo.markRestocked(t, orderId);
			if (items.length > 1) await lockItems(svc, items, t);
			await adjustStock(
				svc,
				t,
				items.map(i => ({ productId: i.productId, onHand: i.quantity, reserved: 0 })),
				ctx.requestID ?? null
			);
			return {
				response: { ...current, status: "RESTOCKED", expiresAt: null },
				afterCommit: async () => {
					svc.logger.info(
						`Reservation for order ${orderId} RESTOCKED: ${describeItems(items)}`
					);
					countMetric(svc.broker, "reservations", { outcome: "restocked" });
					await ctx.emit("stock.released", {
						orderId,
						items: r.items,
						reason: "RESTOCKED"
					});
				}
			};
		},
		// Takes turns with the order's other calls (its advisory lock), like `commit`.
		{ lock: orderId, read: svc.repo.reservationRead(orderId, true) }
	);
}
