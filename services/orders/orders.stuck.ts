/**
 * Stuck orders, for operators: an order still in an open status (./order.state.ts
 * `OPEN_ORDER_STATUSES`) `ORDERS_STUCK_AFTER_MS` after it was placed, or a refund that long after
 * it was asked for. The `stuck` action lists them (REST `GET /api/admin/orders/stuck`, REPL
 * `orders stuck`, the dashboard); `countStuckOrders` recounts the `shop_orders_stuck{status}` gauge
 * (every `ORDERS_STUCK_CHECK_INTERVAL_MS` on every orders node, started by ./orders.service.ts). A local mixin of the orders service
 * (`OrdersStuckMixin`), typed the way Moleculer's TypeScript template types a mixin.
 */
import type { Service, ServiceSchema } from "moleculer";
import { config } from "../../platform/config";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { setMetric } from "../../platform/metrics";
import { OPEN_ORDER_STATUSES } from "./order.state";
import { requireAdmin } from "./orders.admin";
import { toOrderView, type OrdersRepo } from "./orders.repo";
import type { StuckOrders } from "./orders.model";

/** What `OrdersStuckMixin` adds to the service. */
export interface OrdersStuckMethods {
	/** The stuck orders (see the `stuck` action), at most `limit` listed. */
	stuckOrders(limit: number): Promise<StuckOrders>;
	/** Sets the `shop_orders_stuck{status}` gauge from the database. */
	countStuckOrders(): Promise<void>;
}

/** The service as these handlers see it. */
type StuckThis = Service & OrdersStuckMethods & { repo: OrdersRepo };

const schema: Partial<ShopServiceSchema<StuckThis>> = {
	actions: {
		/**
		 * Orders that stay in a non-terminal status (`PENDING`, `STOCK_RESERVED`, `PAID`,
		 * `CONFIRMING`, `REFUNDING`) longer than `ORDERS_STUCK_AFTER_MS` after they were placed (a
		 * refund: after it was asked for), for operators (admin; REPL `orders stuck`, the
		 * dashboard). The same count feeds the `shop_orders_stuck{status}` gauge. Read from the
		 * orders database (every orders node answers the same).
		 * @param limit - rows to list, 1 to 500 (default 50), the oldest first
		 * @returns `{ thresholdMs, counts: { [status]: n }, total, rows: [Order & { since, ageMs,
		 *   sagaId, sagaName, sagaStatus }] }`
		 * @throws AUTH_FORBIDDEN (403)
		 */
		stuck: {
			params: {
				$$strict: true,
				limit: {
					type: "number",
					integer: true,
					min: 1,
					max: 500,
					convert: true,
					default: 50
				}
			},
			async handler(
				this: StuckThis,
				ctx: ShopContext<{ limit: number }>
			): Promise<StuckOrders> {
				requireAdmin(ctx);
				return this.stuckOrders(ctx.params.limit);
			}
		}
	},

	methods: {
		async stuckOrders(this: StuckThis, limit: number): Promise<StuckOrders> {
			const thresholdMs = config().ordersStuckAfterMs;
			// Open orders are the unsettled ones (partial index 906) and the refunds in flight
			// (the REFUND audit rows, one per order): neither scan reads settled orders.
			const { counted, listed } = await this.repo.stuck(thresholdMs, limit);
			const counts: Record<string, number> = Object.fromEntries(
				OPEN_ORDER_STATUSES.map(st => [st, 0])
			);
			for (const c of counted) counts[c.status] = c.n;
			return {
				thresholdMs,
				counts,
				total: Object.values(counts).reduce((a, b) => a + b, 0),
				rows: listed.map(r => ({
					...toOrderView(r),
					since: new Date(r.since).toISOString(),
					ageMs: new Date(r.db_now).getTime() - new Date(r.since).getTime(),
					sagaId: r.driver,
					sagaName: r.saga_name,
					sagaStatus: r.saga_status
				}))
			};
		},

		async countStuckOrders(this: StuckThis): Promise<void> {
			const { counts } = await this.stuckOrders(1);
			for (const [status, n] of Object.entries(counts))
				setMetric(this.broker, "ordersStuck", n, { status });
		}
	}
};

/** The mixin, for the orders service's `mixins` (its `this` checked above). */
export const OrdersStuckMixin = schema as Partial<ServiceSchema>;
