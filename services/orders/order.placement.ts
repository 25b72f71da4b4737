/**
 * What placing an order checks before its saga starts, as plain functions of the request (no
 * database, no broker): each product at most once (`distinctProductIds`), the lines priced from
 * the catalog, never from the client (`priceOrder`), the request's hash for `Idempotency-Key`
 * reuse detection (`requestHash`; the IETF "Idempotency-Key HTTP Header Field" draft, Stripe's
 * idempotent requests), and the per-customer bound's refusal by the order's own INSERT
 * (`customerLimitOf`). Money in integer cents with an ISO 4217 currency.
 */
import crypto from "node:crypto";
import { Errors } from "moleculer";
import { shopError } from "../../platform/errors";
import type { Product } from "../products/products.model";
import type { OrderItem } from "./orders.model";

/** What a customer asks for: a product and how many. */
export interface OrderLineRequest {
	productId: string;
	quantity: number;
}

/** Largest order total accepted, in cents (Postgres integer). */
export const MAX_TOTAL = 2_147_483_647;

/** SQLSTATE raised by `orders_admit` (migration 906) past a per-customer bound. */
const CUSTOMER_LIMIT_SQLSTATE = "OC429";

/**
 * The requested product ids, in order.
 * @throws VALIDATION_ERROR (422, `unique` on `items`) when a product appears twice
 */
export function distinctProductIds(items: readonly OrderLineRequest[]): string[] {
	const ids = items.map(i => i.productId);
	const dup = ids.filter((id, i) => ids.indexOf(id) !== i);
	if (dup.length > 0)
		throw new Errors.ValidationError("Each product may appear once", "VALIDATION_ERROR", [
			{
				type: "unique",
				field: "items",
				message: "Each product may appear once",
				actual: dup
			}
		]);
	return ids;
}

/**
 * The order's lines priced from the catalog (`products.resolve`'s answer), its total and units.
 * @throws ORDERS_PRODUCT_UNAVAILABLE (a product unknown or inactive), ORDERS_CURRENCY_MISMATCH
 *   (products in several currencies), ORDERS_TOTAL_TOO_LARGE (past `MAX_TOTAL`), all 422
 */
export function priceOrder(
	items: readonly OrderLineRequest[],
	products: readonly Product[]
): { lines: OrderItem[]; total: number; units: number; currency: string } {
	const byId = new Map(products.map(p => [p.id, p]));
	const missing = items.map(i => i.productId).filter(id => !byId.get(id)?.active);
	if (missing.length > 0)
		throw shopError("ORDERS_PRODUCT_UNAVAILABLE", undefined, { productIds: missing });
	const currencies = new Set(products.map(p => p.currency));
	if (currencies.size > 1)
		throw shopError("ORDERS_CURRENCY_MISMATCH", undefined, { currencies: [...currencies] });
	const lines: OrderItem[] = items.map(i => {
		const p = byId.get(i.productId)!;
		return {
			productId: p.id,
			sku: p.sku,
			name: p.name,
			quantity: i.quantity,
			unitPrice: p.price,
			lineTotal: p.price * i.quantity
		};
	});
	const total = lines.reduce((s, l) => s + l.lineTotal, 0);
	const units = lines.reduce((s, l) => s + l.quantity, 0);
	if (total > MAX_TOTAL)
		throw shopError("ORDERS_TOTAL_TOO_LARGE", undefined, { total, max: MAX_TOTAL });
	return { lines, total, units, currency: [...currencies][0]! };
}

/** A stable hash of what an order request asks for (Idempotency-Key reuse detection). */
export function requestHash(items: readonly OrderLineRequest[], paymentMethod: string): string {
	const canonical = JSON.stringify({
		items: [...items]
			.sort((a, b) => a.productId.localeCompare(b.productId))
			.map(i => [i.productId, i.quantity]),
		paymentMethod
	});
	return crypto.createHash("sha256").update(canonical).digest("hex");
}

/**
 * The counts of a refusal by `orders_admit` (`err`: what the order's INSERT threw), or null when
 * `err` is something else. `{ inFlight, unitsInFlight, units, maxInFlight, maxUnits }`.
 */
export function customerLimitOf(err: unknown): Record<string, number> | null {
	const e = err as { parent?: { code?: unknown; detail?: unknown }; code?: unknown } | null;
	const pg = e?.parent ?? e;
	if (pg?.code !== CUSTOMER_LIMIT_SQLSTATE) return null;
	try {
		return JSON.parse(String((pg as { detail?: unknown }).detail)) as Record<string, number>;
	} catch {
		return {};
	}
}
