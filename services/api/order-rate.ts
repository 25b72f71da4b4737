/**
 * Orders per second as this gateway sees them (`api.orderRate`, `GET /api/admin/orders/rate`,
 * the dashboard's chart): per-second counts of `order.created`, `order.confirmed` and
 * `order.cancelled` over a sliding window. Fed by the order event handlers of
 * services/api/order-streams.ts. Moved out of mixins/web.mixin.ts (issue 17): a mixin knows no
 * service's events.
 */

/** The order events counted. */
export type OrderEventKind = "created" | "confirmed" | "cancelled";

/** One second of the window. */
export interface RatePoint {
	/** Start of the second, epoch ms. */
	at: number;
	created: number;
	confirmed: number;
	cancelled: number;
}

/** Per-second counters of order events over a sliding window. */
export class OrderRateWindow {
	private readonly buckets = new Map<number, RatePoint>();

	constructor(private readonly keepSeconds = 300) {}

	add(kind: OrderEventKind, now = Date.now()): void {
		const second = Math.floor(now / 1000);
		let b = this.buckets.get(second);
		if (!b) {
			b = { at: second * 1000, created: 0, confirmed: 0, cancelled: 0 };
			this.buckets.set(second, b);
			for (const k of this.buckets.keys())
				if (k <= second - this.keepSeconds) this.buckets.delete(k);
		}
		b[kind]++;
	}

	/** The last `seconds` seconds, oldest first, the current (partial) second last. */
	series(seconds: number, now = Date.now()): RatePoint[] {
		const last = Math.floor(now / 1000);
		const out: RatePoint[] = [];
		for (let s = last - seconds + 1; s <= last; s++)
			out.push(
				this.buckets.get(s) ?? { at: s * 1000, created: 0, confirmed: 0, cancelled: 0 }
			);
		return out.map(p => ({ ...p }));
	}
}
