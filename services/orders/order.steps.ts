/**
 * The orders service's own steps and hooks of its sagas (./order.saga.ts names them; what
 * Temporal's samples call the activities): the order saga's pivot (`passPivot`) and its end
 * (`onOrderConfirmed`, `onOrderCancelled`), the refund saga's pivot (`passRefundPivot`), its
 * restock (`restockIfAsked`) and its end (`onOrderRefunded`): `orderSagaSteps`, the service's
 * methods, typed the way Moleculer's TypeScript template types them (the methods interface,
 * `OrderStepsMethods`, and the `this` they need).
 *
 * Each status change is one guarded statement of ./orders.repo.ts (the guards: ./order.state.ts);
 * the hooks run in the saga's final transaction, with the event in the outbox in the same one
 * (mixins/events.mixin.ts, eShop's transactional outbox).
 */
import type { Service } from "moleculer";
import { config } from "../../platform/config";
import { shopError } from "../../platform/errors";
import { countMetric } from "../../platform/metrics";
import type { OutboxMethods } from "../../mixins/events.mixin";
import { SagaLeaseLostError, type SagaInstance } from "../../mixins/saga.mixin";
import type { OrderRefundSagaData, OrderSagaData } from "./order.saga";
import { isRefundStarted, ORDER_TRANSITIONS } from "./order.state";
import { orderEvent, type OrderRow, type OrdersRepo } from "./orders.repo";
import type { OrderRefunded, OrderStatus } from "./orders.model";
import type { Transaction } from "../../platform/db/fast-query";

/** What `orderSagaSteps` adds to the service. */
export interface OrderStepsMethods {
	passPivot(saga: SagaInstance<OrderSagaData>): Promise<{ status: OrderStatus }>;
	onOrderConfirmed(saga: SagaInstance<OrderSagaData>, t: Transaction): Promise<void>;
	onOrderCancelled(
		saga: SagaInstance<OrderSagaData>,
		reason: string | null,
		t: Transaction
	): Promise<void>;
	enqueueOrderEvent(
		event: "order.confirmed" | "order.cancelled",
		saga: SagaInstance<OrderSagaData>,
		row: OrderRow | undefined,
		t: Transaction
	): Promise<void>;
	passRefundPivot(saga: SagaInstance<OrderRefundSagaData>): Promise<{ status: OrderStatus }>;
	restockIfAsked(saga: SagaInstance<OrderRefundSagaData>, key: string): Promise<unknown>;
	onOrderRefunded(saga: SagaInstance<OrderRefundSagaData>, t: Transaction): Promise<void>;
}

/** The service as these methods see it. */
type StepsThis = Service & OutboxMethods & OrderStepsMethods & { repo: OrdersRepo };

/**
 * The methods, for the orders service's own `methods` (not a mixin: tests replace `passPivot`
 * on the schema to simulate a crash after the pivot).
 */
export const orderSagaSteps = {
	/**
	 * Order saga step `confirmOrder`: the pivot, the order becomes `CONFIRMING`. One
	 * statement, fenced on this run's lease of the saga (it locks the saga's row, so a node
	 * recovering the saga either sees the pivot passed or keeps this run from passing it).
	 * Repeating it is a no-op success.
	 * @throws ORDERS_CANCEL_REQUESTED when the customer asked to cancel,
	 *   INVENTORY_RESERVATION_EXPIRED when the order's reservation was given up
	 *   (`lapseReservations`), SagaLeaseLostError when this run no longer holds the saga
	 */
	async passPivot(
		this: StepsThis,
		saga: SagaInstance<OrderSagaData>
	): Promise<{ status: OrderStatus }> {
		const orderId = saga.data.orderId;
		if (await this.repo.passPivot(orderId, saga.id, saga.leaseOwner))
			return { status: ORDER_TRANSITIONS.passPivot.to };
		// Refused: say why (the refusal path only).
		const why = await this.repo.pivotRefusal(orderId, saga.id, saga.leaseOwner);
		if (why && !why.owned) throw new SagaLeaseLostError(saga.id);
		if (why?.reservation_lapsed)
			throw shopError(
				"INVENTORY_RESERVATION_EXPIRED",
				"The order's reservation lapsed before its pivot",
				{ orderId }
			);
		throw shopError("ORDERS_CANCEL_REQUESTED", undefined, { orderId });
	},

	/** Saga hook: the order is CONFIRMED and `order.confirmed` goes to the outbox (one transaction). */
	async onOrderConfirmed(
		this: StepsThis,
		saga: SagaInstance<OrderSagaData>,
		t: Transaction
	): Promise<void> {
		const row = await this.repo.confirm(saga.data.orderId, t);
		await this.enqueueOrderEvent("order.confirmed", saga, row, t);
		t.afterCommit(() => countMetric(this.broker, "ordersConfirmed"));
	},

	/** Saga hook: the order is CANCELLED and `order.cancelled` goes to the outbox (one transaction). */
	async onOrderCancelled(
		this: StepsThis,
		saga: SagaInstance<OrderSagaData>,
		reason: string | null,
		t: Transaction
	): Promise<void> {
		// A cancel the customer was told was accepted (202) is the reason, whatever else the
		// saga ran into meanwhile (e.g. a processor outage it was still retrying).
		// Guarded: an order past its pivot is never cancelled by a compensation (the saga reads
		// the pivot's effect before compensating; this holds even if that were bypassed),
		// unless an operator explicitly refunded and cancelled its parked saga (audited in
		// saga_interventions, `refundAndCancelSaga`): a CONFIRMING order then ends CANCELLED.
		const orderId = saga.data.orderId;
		const row = await this.repo.cancel(orderId, reason ?? "PROCESSING_FAILED", saga.id, t);
		if (!row) {
			const now = await this.repo.find(orderId, t);
			if (now)
				// Rolls the saga's completion back: it stays COMPENSATING, for an operator.
				throw new Error(
					`Order ${now.id} is ${now.status}: past its pivot, a compensation may not cancel it`
				);
		}
		await this.enqueueOrderEvent("order.cancelled", saga, row, t);
		const cancelled = row?.cancellation_reason;
		if (cancelled)
			t.afterCommit(() => countMetric(this.broker, "ordersCancelled", { reason: cancelled }));
	},

	/**
	 * Writes `order.confirmed` / `order.cancelled` to the outbox, in the saga's final
	 * transaction. `row`: the order as that transaction just updated it.
	 */
	async enqueueOrderEvent(
		this: StepsThis,
		event: "order.confirmed" | "order.cancelled",
		saga: SagaInstance<OrderSagaData>,
		row: OrderRow | undefined,
		t: Transaction
	): Promise<void> {
		if (!row) return;
		await this.enqueueEvent(t, event, orderEvent(row), {
			aggregateId: row.id,
			requestId: saga.requestId
		});
	},

	/**
	 * Refund saga step `beginRefund`, its pivot: the order is `REFUNDING` (the transaction
	 * that created the saga made it so) and this run holds the saga's lease. From here the
	 * refund only goes forward. Repeating it is a no-op success.
	 * @throws ORDERS_NOT_REFUNDABLE (business: nothing to undo) when the order is in another
	 *   status, SagaLeaseLostError when this run no longer holds the saga
	 */
	async passRefundPivot(
		this: StepsThis,
		saga: SagaInstance<OrderRefundSagaData>
	): Promise<{ status: OrderStatus }> {
		const row = await this.repo.refundPivotState(saga.data.orderId, saga.id, saga.leaseOwner);
		if (row && !row.owned) throw new SagaLeaseLostError(saga.id);
		if (!row || !isRefundStarted(row.status))
			throw shopError("ORDERS_NOT_REFUNDABLE", undefined, {
				id: saga.data.orderId,
				status: row?.status
			});
		return { status: row.status };
	},

	/**
	 * Refund saga step `restockItems`: `inventory.restock` under the step's idempotency key
	 * when the admin asked for a restock, else a no-op success.
	 * @returns the reservation (`RESTOCKED`), or `{ restocked: false }`
	 */
	async restockIfAsked(
		this: StepsThis,
		saga: SagaInstance<OrderRefundSagaData>,
		key: string
	): Promise<unknown> {
		if (!saga.data.restock) return { restocked: false };
		return this.broker.call(
			"inventory.restock",
			{ orderId: saga.data.orderId },
			{
				timeout: config().sagaStepTimeoutMs,
				// The step's retry policy is the only retry layer.
				retries: 0,
				meta: { idempotencyKey: key }
			}
		);
	},

	/**
	 * Refund saga hook: the order is `REFUNDED` and `order.refunded` goes to the outbox, in the
	 * saga's final transaction.
	 */
	async onOrderRefunded(
		this: StepsThis,
		saga: SagaInstance<OrderRefundSagaData>,
		t: Transaction
	): Promise<void> {
		const row = await this.repo.completeRefund(saga.data.orderId, t);
		if (!row) return; // already REFUNDED (a repeat of the final transaction)
		const { amount, currency, restock } = saga.data;
		const body: OrderRefunded = { ...orderEvent(row), refund: { amount, currency, restock } };
		await this.enqueueEvent(t, "order.refunded", body, {
			aggregateId: row.id,
			requestId: saga.requestId
		});
		t.afterCommit(() =>
			countMetric(this.broker, "ordersRefunded", { restock: String(restock) })
		);
	}
};
