/**
 * Writes of stock levels with their durable `stock.changed` events: each change of a product's
 * stock row and the event of its new level go in the same transaction (the transactional outbox,
 * mixins/events.mixin.ts; eShop's `IntegrationEventLogService` pattern). `available = onHand -
 * reserved`; check constraints keep `0 <= reserved <= onHand` in the database itself.
 */
import type { OutboxMethods } from "../../mixins/events.mixin";
import type { StockLevel } from "./inventory.model";
import type { InventoryRepo, StockDelta, StockRow } from "./inventory.repo";
import type { Transaction } from "../../platform/db/fast-query";

/** What a stock write needs of the service: its repository and its outbox. */
export interface StockWriter extends Pick<OutboxMethods, "enqueueEvent" | "enqueueEvents"> {
	readonly repo: InventoryRepo;
}

/** A stock row as the API shows it. */
export const stockView = (r: StockRow): StockLevel => ({
	productId: r.productId,
	onHand: r.onHand,
	reserved: r.reserved,
	available: r.onHand - r.reserved
});

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
export async function adjustStock(
	svc: StockWriter,
	t: Transaction,
	deltas: readonly StockDelta[],
	requestId: string | null,
	opts: { onlyIfAvailable?: boolean } = {}
): Promise<Date | null> {
	if (opts.onlyIfAvailable && deltas.length !== 1)
		throw new Error("adjustStock: onlyIfAvailable takes exactly one product");
	const rows = await svc.repo.addToStock(t, deltas, opts.onlyIfAvailable === true);
	if (rows.length === 0) return null;
	await svc.enqueueEvents(
		t,
		rows.map(r => ({ name: "stock.changed", data: stockView(r), aggregateId: r.productId })),
		requestId
	);
	return new Date(rows[0]!.dbNow);
}

/**
 * Writes one durable `stock.changed` event per product (its level after this transaction's
 * changes) to the outbox, in transaction `t`.
 */
export async function enqueueStockChanged(
	svc: StockWriter,
	t: Transaction,
	productIds: string[],
	requestId: string | null
): Promise<void> {
	const rows = await svc.repo.stockRows(t, productIds);
	for (const r of rows)
		await svc.enqueueEvent(t, "stock.changed", stockView(r), {
			aggregateId: r.productId,
			requestId
		});
}
