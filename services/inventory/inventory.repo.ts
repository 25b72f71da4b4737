/**
 * The inventory database's statements: stock rows (`stock`) and reservations (`reservations`),
 * each a method of `InventoryRepo` over the service's database pool (platform/db/pool.ts), the transaction passed
 * in by the caller (who owns the locks' order: see `lockStock`). The repository pattern of the
 * house style (services/<name>/<name>.repo.ts: all of a service's SQL in one file).
 *
 * No Sequelize model: the service runs on DbMixin's node-postgres pool (`this.db`) only.
 */
import { fastQuery, QueryTypes, type Transaction } from "../../platform/db/fast-query";
import { writeOrDefer } from "../../platform/db/deferred-writes";
import type { ReservationItem, ReservationStatus } from "./inventory.model";
import type { ShopDatabase } from "../../platform/db/pool";

/** A stock row. Units are whole items. */
export interface StockRow {
	productId: string;
	onHand: number;
	reserved: number;
}

/** A reservation as stored; `reason` lists the shortfall of a REJECTED one. */
export interface ReservationRow {
	orderId: string;
	status: ReservationStatus;
	items: ReservationItem[];
	reason?: unknown;
	expiresAt: Date | null;
}

/** Signed unit counts added to one product's stock row. */
export interface StockDelta {
	productId: string;
	onHand: number;
	reserved: number;
}

/** The shortfall of one item: what `INVENTORY_OUT_OF_STOCK` / `_EXPIRED` list in `data.items`. */
export interface Shortfall {
	productId: string;
	requested: number;
	available: number;
}

/**
 * Retention (platform/retention.ts): ONE batch of reservations in a final status, `$2` ms after
 * their last change, at most `$1`. RESERVED ones, also those kept past their pivot (`expires_at`
 * NULL), are never purged.
 */
export const RESERVATION_RETENTION_SQL = `DELETE FROM reservations WHERE order_id IN (SELECT order_id FROM reservations
				WHERE status <> 'RESERVED' AND updated_at < now() - $2::float8 * interval '1 millisecond'
				ORDER BY updated_at LIMIT $1)`;

export class InventoryRepo {
	constructor(private readonly db: ShopDatabase) {}

	/** Runs `work` in one transaction (commit, or rollback when it throws). */
	transaction<T>(work: (t: Transaction) => Promise<T>): Promise<T> {
		return this.db.transaction(work);
	}

	// --- stock ---

	/** One product's stock row, or null. */
	async findStock(productId: string): Promise<StockRow | null> {
		const rows = (await fastQuery(
			this.db,
			`SELECT product_id AS "productId", on_hand AS "onHand", reserved FROM stock WHERE product_id = $1`,
			{ bind: [productId], type: QueryTypes.SELECT }
		)) as StockRow[];
		return rows[0] ?? null;
	}

	/** Inserts the stock rows missing (the demo catalog's); existing ones are left as they are. */
	async seedStock(rows: readonly StockRow[]): Promise<void> {
		await fastQuery(
			this.db,
			`INSERT INTO stock (product_id, on_hand, reserved)
			 SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[]) ON CONFLICT (product_id) DO NOTHING`,
			{
				bind: [
					rows.map(r => r.productId),
					rows.map(r => r.onHand),
					rows.map(r => r.reserved)
				]
			}
		);
	}

	/** Sets a product's units on hand, creating its row (nothing reserved) if missing. */
	async upsertOnHand(t: Transaction, productId: string, onHand: number): Promise<void> {
		await fastQuery(
			this.db,
			`INSERT INTO stock (product_id, on_hand, reserved) VALUES ($1, $2, 0)
						 ON CONFLICT (product_id) DO UPDATE SET on_hand = EXCLUDED.on_hand, updated_at = now()`,
			{ bind: [productId, onHand], transaction: t }
		);
	}

	/** Locks the stock rows of `productIds` in ascending id order; returns those that exist. */
	async lockStock(productIds: string[], t: Transaction): Promise<Map<string, StockRow>> {
		const ids = [...new Set(productIds)].sort();
		const rows = (await fastQuery(
			this.db,
			`SELECT product_id AS "productId", on_hand AS "onHand", reserved FROM stock
				 WHERE product_id = ANY($1::uuid[]) ORDER BY product_id FOR UPDATE`,
			{ bind: [ids], type: QueryTypes.SELECT, transaction: t }
		)) as StockRow[];
		return new Map(rows.map(r => [r.productId, r]));
	}

	/** The stock rows of `productIds` as this transaction sees them, by product id. */
	async stockRows(t: Transaction, productIds: string[]): Promise<StockRow[]> {
		const ids = [...new Set(productIds)].sort();
		return (await fastQuery(
			this.db,
			`SELECT product_id AS "productId", on_hand AS "onHand", reserved FROM stock
				 WHERE product_id = ANY($1::uuid[]) ORDER BY product_id`,
			{ bind: [ids], type: QueryTypes.SELECT, transaction: t }
		)) as StockRow[];
	}

	/**
	 * Adds each delta to its product's stock row in ONE statement; `onlyIfAvailable`: only where
	 * the product's available units stay >= 0, re-checked on the row's latest version under its
	 * lock (READ COMMITTED), so two reservations can never both take the last units.
	 * @returns the rows updated, with their new levels and the database's `now()`, by product id
	 */
	async addToStock(
		t: Transaction,
		deltas: readonly StockDelta[],
		onlyIfAvailable: boolean
	): Promise<(StockRow & { dbNow: Date })[]> {
		const guard = onlyIfAvailable
			? " AND s.on_hand + d.on_hand - s.reserved - d.reserved >= 0"
			: "";
		const rows = (await fastQuery(
			this.db,
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
		return rows.sort((a, b) =>
			a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0
		);
	}

	// --- reservations ---

	/**
	 * The read of an order's reservation, locked (`FOR UPDATE`) when `lock`, to send behind a
	 * key's claim (`withIdempotency`'s `read`); `reservationOf` turns its rows into the row.
	 */
	reservationRead(orderId: string, lock: boolean): { sql: string; bind: unknown[] } {
		return {
			sql: `SELECT order_id AS "orderId", status, items, reason, expires_at AS "expiresAt"
				 FROM reservations WHERE order_id = $1${lock ? " FOR UPDATE" : ""}`,
			bind: [orderId]
		};
	}

	/** The reservation in `reservationRead`'s rows, or null. */
	reservationOf(rows: readonly object[] | undefined): ReservationRow | null {
		return (rows?.[0] as ReservationRow | undefined) ?? null;
	}

	/** An order's reservation, locked (`FOR UPDATE`) when `lock`; null when none. */
	async findReservation(
		orderId: string,
		t: Transaction,
		lock: boolean
	): Promise<ReservationRow | null> {
		const { sql, bind } = this.reservationRead(orderId, lock);
		return this.reservationOf(
			await fastQuery(this.db, sql, { bind, type: QueryTypes.SELECT, transaction: t })
		);
	}

	/** Stores a `REJECTED` reservation (with the key's record, platform/db/deferred-writes.ts). */
	async insertRejected(
		t: Transaction,
		orderId: string,
		items: ReservationItem[],
		short: Shortfall[]
	): Promise<void> {
		await writeOrDefer(this.db, t, {
			sql: `INSERT INTO reservations (order_id, status, items, reason) VALUES ($1, 'REJECTED', $2::jsonb, $3::jsonb)`,
			bind: [orderId, JSON.stringify(items), JSON.stringify(short)]
		});
	}

	/** Stores a `RESERVED` reservation (with the key's record, platform/db/deferred-writes.ts). */
	async insertReserved(
		t: Transaction,
		orderId: string,
		items: ReservationItem[],
		expiresAt: Date
	): Promise<void> {
		await writeOrDefer(this.db, t, {
			sql: `INSERT INTO reservations (order_id, status, items, expires_at) VALUES ($1, 'RESERVED', $2::jsonb, $3)`,
			bind: [orderId, JSON.stringify(items), expiresAt]
		});
	}

	/** Stores a `RELEASED` tombstone: a release that came before (or instead of) its reserve. */
	async insertTombstone(t: Transaction, orderId: string): Promise<void> {
		await fastQuery(
			this.db,
			`INSERT INTO reservations (order_id, status, items) VALUES ($1, 'RELEASED', '[]'::jsonb)`,
			{ bind: [orderId], transaction: t }
		);
	}

	/** A RESERVED reservation's new status (with the key's record, platform/db/deferred-writes.ts). */
	async setStatus(t: Transaction, orderId: string, to: "COMMITTED" | "RELEASED"): Promise<void> {
		await writeOrDefer(this.db, t, {
			sql: "UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1",
			bind: [orderId, to]
		});
	}

	/** EXPIRED → COMMITTED. */
	async markCommitted(t: Transaction, orderId: string): Promise<void> {
		await fastQuery(
			this.db,
			"UPDATE reservations SET status = 'COMMITTED', updated_at = now() WHERE order_id = $1",
			{ bind: [orderId], transaction: t }
		);
	}

	/** COMMITTED → RESTOCKED. */
	async markRestocked(t: Transaction, orderId: string): Promise<void> {
		await fastQuery(
			this.db,
			"UPDATE reservations SET status = 'RESTOCKED', updated_at = now() WHERE order_id = $1",
			{ bind: [orderId], transaction: t }
		);
	}

	// --- the sweeper's ---

	/** Up to `limit` RESERVED reservations past their `expires_at` (the database's clock), oldest first. */
	async dueReservations(limit: number): Promise<string[]> {
		const rows = (await fastQuery(
			this.db,
			`SELECT order_id AS "orderId" FROM reservations
				 WHERE status = 'RESERVED' AND expires_at <= now()
				 ORDER BY expires_at LIMIT $1`,
			{ bind: [limit], type: QueryTypes.SELECT }
		)) as { orderId: string }[];
		return rows.map(r => r.orderId);
	}

	/** Clears `expires_at` of these orders' RESERVED reservations: they no longer lapse. */
	async keepPastTtl(orderIds: string[]): Promise<void> {
		await fastQuery(
			this.db,
			`UPDATE reservations SET expires_at = NULL, updated_at = now()
					 WHERE order_id = ANY($1::uuid[]) AND status = 'RESERVED'`,
			{ bind: [orderIds] }
		);
	}

	/**
	 * Locks up to `limit` of `orderIds`' reservations still RESERVED and due, skipping those
	 * another transaction holds (`FOR UPDATE SKIP LOCKED`).
	 */
	async claimDue(
		t: Transaction,
		limit: number,
		orderIds: string[]
	): Promise<{ orderId: string; items: ReservationItem[] }[]> {
		return (await fastQuery(
			this.db,
			`SELECT order_id AS "orderId", items FROM reservations
					 WHERE status = 'RESERVED' AND expires_at <= now() AND order_id = ANY($2::uuid[])
					 ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED`,
			{ bind: [limit, orderIds], type: QueryTypes.SELECT, transaction: t }
		)) as { orderId: string; items: ReservationItem[] }[];
	}

	/** RESERVED → EXPIRED for these orders (claimed by `claimDue` in `t`). */
	async markExpired(t: Transaction, orderIds: string[]): Promise<void> {
		await fastQuery(
			this.db,
			`UPDATE reservations SET status = 'EXPIRED', updated_at = now()
					 WHERE order_id = ANY($1::uuid[])`,
			{ bind: [orderIds], transaction: t }
		);
	}
}
