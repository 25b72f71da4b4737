/**
 * An admin's refund of a confirmed order (a return): the `refund` action, which turns the order
 * `REFUNDING` and starts its `order-refund` saga (./order.saga.ts) in one transaction, and
 * `refundView`, the order with its refund as `refund` and `adminGet` answer it. A local mixin of
 * the orders service (`OrdersRefundMixin`), typed the way Moleculer's TypeScript template types a
 * mixin. The order is the idempotency key: one refund per order, nothing refunded twice.
 */
import crypto from "node:crypto";
import type { Service, ServiceSchema } from "moleculer";
import { config } from "../../platform/config";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import type { SagaMixinMethods } from "../../mixins/saga.mixin";
import type { DbMixinMethods, ModelMap } from "../../mixins/db.mixin";
import type { OrderRefundSagaData } from "./order.saga";
import { isRefundStarted, mayTransition } from "./order.state";
import { operatorOf, operatorParams } from "./orders.admin";
import { toOrderView, type OrderRow, type OrdersRepo } from "./orders.repo";
import type { OrderRefundView } from "./orders.model";

/** What `OrdersRefundMixin` adds to the service. */
export interface OrdersRefundMethods {
	/** `refund`'s answer for an order that is `REFUNDING` or `REFUNDED`. */
	refundView(order: OrderRow): Promise<OrderRefundView>;
}

/** The service as these handlers see it. */
type RefundThis = Service &
	DbMixinMethods<ModelMap> &
	SagaMixinMethods &
	OrdersRefundMethods & { repo: OrdersRepo };

const schema: Partial<ShopServiceSchema<RefundThis>> = {
	actions: {
		/**
		 * Refunds a CONFIRMED order in full (admin: a return). In one transaction the order turns
		 * `REFUNDING`, its `order-refund` saga is created and the request audited
		 * (`saga_interventions`: `REFUND`, who, when, note; one per order); the saga then refunds
		 * the payment (`payments.refund`), gives the units back when `restock` (`inventory.restock`)
		 * and ends the order `REFUNDED` with `order.refunded` in the outbox (the customer's
		 * e-mail, ORDER_REFUNDED). A step that keeps failing parks the saga (order `REFUNDING`,
		 * counted as stuck) for a redrive (`POST /api/admin/sagas/:id/redrive`). Idempotent: the
		 * order is the key; a repeat (or a concurrent call, any `Idempotency-Key`, any body)
		 * answers the first refund as it is now, and nothing is refunded twice.
		 * @param id - the order's id
		 * @param restock - optional, default false: put the order's units back on hand
		 * @param note - optional, up to 500 characters, kept with the audit record
		 * Who is recorded: the caller's user (REST: the admin), else meta `operator` (the REPL).
		 * @returns 202 Order (`REFUNDING`, or `REFUNDED` once done) with `refund: { sagaId,
		 *   sagaStatus, restock, amount, currency, actorId, actor, note, at }` (amount in cents)
		 * @throws ORDERS_NOT_FOUND (404), ORDERS_NOT_REFUNDABLE (409, `data: { id, status }`)
		 *   unless the order is CONFIRMED (or already refunding or refunded), AUTH_FORBIDDEN (403)
		 * @emits saga.started; later order.refunded (durable)
		 */
		refund: {
			// A caller's retry after a lost answer is harmless (the order is the key), but the
			// step's own retries are the saga's: no broker retry of the request.
			retryPolicy: { enabled: false },
			params: {
				$$strict: true,
				id: { type: "uuid" },
				restock: { type: "boolean", optional: true },
				...operatorParams
			},
			async handler(
				this: RefundThis,
				ctx: ShopContext<{ id: string; restock?: boolean; note?: string }>
			): Promise<OrderRefundView> {
				const who = operatorOf(ctx);
				const { id } = ctx.params;
				const order = await this.repo.find(id);
				if (!order) throw shopError("ORDERS_NOT_FOUND", undefined, { id });
				ctx.meta.$statusCode = 202;
				if (isRefundStarted(order.status)) return this.refundView(order);
				if (!mayTransition("beginRefund", order.status))
					throw shopError("ORDERS_NOT_REFUNDABLE", undefined, {
						id,
						status: order.status
					});
				const data: OrderRefundSagaData = {
					orderId: id,
					amount: order.total,
					currency: order.currency.trim(),
					restock: ctx.params.restock === true
				};
				const sagaId = crypto.randomUUID();
				const created = await this.db.transaction(async t => {
					// The order's row lock serialises concurrent refunds: the second finds it
					// REFUNDING and answers the first.
					if (!(await this.repo.beginRefund(id, t))) return null;
					const saga = await this.createSaga("order-refund", data, {
						id: sagaId,
						deadlineMs: config().sagaDeadlineMs,
						requestId: ctx.requestID ?? null,
						parentSpanId: ctx.span?.id ?? null,
						transaction: t,
						// Nothing can refuse the pivot step yet: the order just turned REFUNDING.
						startFirstStep: true
					});
					await this.repo.recordRefund(sagaId, id, who, ctx.params.note ?? null, t);
					return saga;
				});
				const now = await this.repo.find(id);
				if (!created) {
					if (now && isRefundStarted(now.status)) return this.refundView(now);
					throw shopError("ORDERS_NOT_REFUNDABLE", undefined, {
						id,
						status: now?.status
					});
				}
				this.logger.warn(
					`Order ${id}: refund of ${data.amount} ${data.currency}${data.restock ? " with restock" : ""} requested by ${who.actor} (saga ${sagaId})`
				);
				this.launchSaga(sagaId, { fresh: created });
				return this.refundView(now!);
			}
		}
	},

	methods: {
		async refundView(this: RefundThis, order: OrderRow): Promise<OrderRefundView> {
			const r = await this.repo.refundOf(order.id);
			return {
				...toOrderView(order),
				refund: {
					sagaId: r?.saga_id ?? "",
					sagaStatus: r?.status ?? null,
					restock: r?.data?.restock === true,
					amount: order.total,
					currency: order.currency.trim(),
					actorId: r?.actor_id ?? null,
					actor: r?.actor ?? "",
					note: r?.note ?? null,
					at: r ? new Date(r.created_at).toISOString() : ""
				}
			};
		}
	}
};

/** The mixin, for the orders service's `mixins` (its `this` checked above). */
export const OrdersRefundMixin = schema as Partial<ServiceSchema>;
