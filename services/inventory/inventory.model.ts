/**
 * The inventory service's public shapes: what other services, tests and the web app may import
 * (the stock level, a reservation and its statuses, the events' payloads). Units are whole items.
 */

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

/**
 * `RESERVED` → `COMMITTED` (→ `RESTOCKED`) | `RELEASED` | `EXPIRED` (→ `COMMITTED`), or
 * `REJECTED` (out of stock), or a `RELEASED` tombstone (a release before its reserve).
 */
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

/** `stock.reserved` and `stock.committed` (plain events, best effort). */
export interface StockReservationEvent {
	orderId: string;
	items: ReservationItem[];
}

/** `stock.released`; `reason` when the sweeper expired it or an admin's refund restocked it. */
export interface StockReleasedEvent extends StockReservationEvent {
	reason?: "EXPIRED" | "RESTOCKED";
}

/** `stock.changed` (durable, through the outbox): a product's level after a change. */
export type StockChangedEvent = StockLevel;
