/**
 * The sagas of an order, as the business process reads, top to bottom (the shape of Temporal's
 * samples-typescript `saga/src/workflows.ts`: each step next to its compensation; compensations
 * run in reverse; retries and timeouts declared, not hand-rolled). mixins/saga.mixin.ts runs them;
 * the steps that are the orders service's own (`passPivot`, the hooks) are ./order.steps.ts.
 *
 * The order saga (`order`):
 *
 *   reserveStock (inventory.reserve / inventory.release)
 *   → chargePayment (payments.charge / payments.refund)
 *   → confirmOrder (the pivot: a customer cancel is no longer possible after it)
 *   → commitStock (inventory.commit)
 *   → order CONFIRMED
 *
 * On `INVENTORY_OUT_OF_STOCK`, `PAYMENTS_CARD_DECLINED`, a customer cancel or the deadline
 * (`SAGA_DEADLINE_MS`, default 30 000 ms), it compensates in reverse (refund what was charged,
 * release what was reserved) and the order ends `CANCELLED` with a `cancellationReason`.
 *
 * The refund saga (`order-refund`, an admin's return of a `CONFIRMED` order):
 *
 *   beginRefund (the pivot: from here the refund only goes forward)
 *   → refundPayment (payments.refund, full amount)
 *   → restockItems (inventory.restock, only when asked)
 *   → order REFUNDED, `order.refunded`
 *
 * The order's statuses along the way are ./order.state.ts (the mirror below comes from there).
 */
import { config } from "../../platform/config";
import type { SagaDefinition, SagaErrorRecord } from "../../mixins/saga.mixin";
import { orderMirror } from "./order.state";

/** The order saga's data. Money in integer cents. */
export interface OrderSagaData extends Record<string, unknown> {
	orderId: string;
	items: { productId: string; quantity: number }[];
	amount: number;
	currency: string;
	paymentMethod: string;
}

/** The refund saga's data (`order-refund`). Money in integer cents. */
export interface OrderRefundSagaData extends Record<string, unknown> {
	orderId: string;
	amount: number;
	currency: string;
	/** Give the order's committed units back on hand (`inventory.restock`). */
	restock: boolean;
}

/** Maps the error that stopped the order saga to the order's `cancellationReason`. */
export function cancellationReason(err: SagaErrorRecord): string {
	switch (err.type) {
		case "INVENTORY_OUT_OF_STOCK":
			return "OUT_OF_STOCK";
		case "PAYMENTS_CARD_DECLINED":
			return "PAYMENT_DECLINED";
		case "PAYMENTS_INVALID_METHOD":
			return "PAYMENT_METHOD_INVALID";
		case "ORDERS_CANCEL_REQUESTED":
			return "CANCELLED_BY_CUSTOMER";
		// The reservation lapsed before the pivot: the saga outlived its time.
		case "INVENTORY_RESERVATION_EXPIRED":
		case "SAGA_DEADLINE_EXCEEDED":
			return "TIMEOUT";
		default:
			return "PROCESSING_FAILED";
	}
}

/** The order saga, version 1. */
export function orderSaga(): SagaDefinition<OrderSagaData> {
	const c = config();
	return {
		name: "order",
		version: 1,
		stepTimeoutMs: c.sagaStepTimeoutMs,
		// Transient failures (a participant down, timeouts) are retried until the saga's deadline
		// before the pivot (the attempt cap is far beyond it), and SAGA_STEP_MAX_ATTEMPTS times
		// after it (100 by default: about 95 s of backoff), then the saga is parked.
		retry: { maxAttempts: c.sagaStepMaxAttempts, baseDelayMs: 100, maxDelayMs: 2_000 },
		compensationRetry: { maxAttempts: 10, baseDelayMs: 200, maxDelayMs: 5_000 },
		businessErrors: [
			"INVENTORY_OUT_OF_STOCK",
			"INVENTORY_RESERVATION_CONFLICT",
			"INVENTORY_RESERVATION_EXPIRED",
			"PAYMENTS_CARD_DECLINED",
			"PAYMENTS_INVALID_METHOD",
			"PAYMENTS_CONFLICT",
			"ORDERS_CANCEL_REQUESTED"
		],
		failureReason: cancellationReason,
		steps: [
			{
				name: "reserveStock",
				action: "inventory.reserve",
				params: d => ({ orderId: d.orderId, items: d.items }),
				compensation: { action: "inventory.release", params: d => ({ orderId: d.orderId }) }
			},
			{
				name: "chargePayment",
				action: "payments.charge",
				params: d => ({
					orderId: d.orderId,
					amount: d.amount,
					currency: d.currency,
					paymentMethod: d.paymentMethod
				}),
				result: (_d, r) => ({ paymentId: (r as { id?: string }).id }),
				compensation: { action: "payments.refund", params: d => ({ orderId: d.orderId }) }
			},
			{ name: "confirmOrder", method: "passPivot" },
			{
				name: "commitStock",
				action: "inventory.commit",
				params: d => ({ orderId: d.orderId })
			}
		],
		// The order mirrors the saga's progress (STOCK_RESERVED, PAID) and refuses further steps
		// once the customer asked to cancel, in the saga's own statements (./order.state.ts).
		mirror: orderMirror(),
		onCompleted: "onOrderConfirmed",
		onCompensated: "onOrderCancelled"
	};
}

/**
 * The refund saga (an admin's return of a CONFIRMED order), version 1. The order turned
 * `REFUNDING` in the transaction that created the saga; its first step is the pivot (no step has
 * a compensation), so the deadline never cancels a refund and a step that keeps failing parks the
 * saga (`FAILED`, order `REFUNDING`) for an operator's redrive rather than undoing anything.
 * Each call carries the step's idempotency key (`<sagaId>:<step>`); underneath, payments refunds
 * an order's payment once and inventory restocks an order's units once, also across redrives.
 */
export function orderRefundSaga(): SagaDefinition<OrderRefundSagaData> {
	const c = config();
	return {
		name: "order-refund",
		version: 1,
		stepTimeoutMs: c.sagaStepTimeoutMs,
		retry: { maxAttempts: 100, baseDelayMs: 100, maxDelayMs: 2_000 },
		businessErrors: ["ORDERS_NOT_REFUNDABLE"],
		failureReason: () => "REFUND_FAILED",
		steps: [
			{ name: "beginRefund", method: "passRefundPivot" },
			{
				name: "refundPayment",
				action: "payments.refund",
				params: d => ({ orderId: d.orderId }),
				result: (_d, r) => ({ paymentStatus: (r as { status?: string }).status })
			},
			{ name: "restockItems", method: "restockIfAsked" }
		],
		onCompleted: "onOrderRefunded"
	};
}
