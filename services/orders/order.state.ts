/**
 * The order's state machine, in one place: which status may follow which, who makes each move
 * and what guards it. The pattern is eShop's `Order.cs` (each transition a guarded method,
 * `SetPaidStatus`, `SetCancelledStatus`): here each transition is a row of `ORDER_TRANSITIONS`,
 * and the guards are taken from that row wherever the status is written:
 * - the order saga's mirror (`orderMirror()`: STOCK_RESERVED and PAID, written by the saga's
 *   own statements, mixins/saga.mixin.ts), and its pivot statuses;
 * - the `status IN (...)` / `NOT IN (...)` guards of ./orders.repo.ts (`sqlStatuses`);
 * - the checks of the handlers (`mayTransition`, `isRefundStarted`).
 *
 * Guards run inside the statement that writes the status (one row, one UPDATE), never as a read
 * followed by a write: concurrent sagas, cancels and refunds are decided by the database.
 * test/unit/order-state.test.ts checks the table (reachability, final statuses, the mirror).
 */
import type { SagaMirror } from "../../mixins/saga.mixin";
import type { OrderStatus } from "./orders.model";

/** One move of the order's status. */
export interface OrderTransition {
	/** The statuses the move starts from (the statement's guard); `[]`: the order's creation. */
	readonly from: readonly OrderStatus[];
	readonly to: OrderStatus;
	/** Who makes it: the action, saga step or hook, whose statement writes it. */
	readonly by: string;
	/** What else must hold, checked in the same statement. */
	readonly guard?: string;
	/** Written by the order saga's mirror when this forward step succeeds (`statusAfterStep`). */
	readonly afterStep?: string;
}

/** Every status, in the order an order meets them. */
export const ORDER_STATUSES: readonly OrderStatus[] = [
	"PENDING",
	"STOCK_RESERVED",
	"PAID",
	"CONFIRMING",
	"CONFIRMED",
	"CANCELLED",
	"REFUNDING",
	"REFUNDED"
];

/**
 * Before the order saga's pivot: the customer may cancel, a reservation may lapse, and a step's
 * success moves the status on.
 */
export const BEFORE_PIVOT: readonly OrderStatus[] = ["PENDING", "STOCK_RESERVED", "PAID"];

/**
 * The transitions. A status moving to itself is a repeat of the same move (a retried step, a
 * final transaction run again): allowed and harmless.
 */
export const ORDER_TRANSITIONS = {
	/** The order and its saga are created in one statement. */
	place: {
		from: [],
		to: "PENDING",
		by: "orders.create (the order's INSERT, with its saga and order.created)",
		guard: "the customer's bounds (orders_admit, migration 906)"
	},
	/** Stock reserved (the saga's mirror; any status before the pivot, a repeat included). */
	reserveStock: {
		from: BEFORE_PIVOT,
		to: "STOCK_RESERVED",
		by: "order saga step reserveStock (the mirror, in the step's outcome statement)",
		guard: "this run holds the saga's lease",
		afterStep: "reserveStock"
	},
	/** Card charged (the saga's mirror). */
	chargePayment: {
		from: BEFORE_PIVOT,
		to: "PAID",
		by: "order saga step chargePayment (the mirror, in the step's outcome statement)",
		guard: "this run holds the saga's lease",
		afterStep: "chargePayment"
	},
	/** The pivot: from here the order saga only goes forward. */
	passPivot: {
		from: [...BEFORE_PIVOT, "CONFIRMING"],
		to: "CONFIRMING",
		by: "order saga step confirmOrder (passPivot)",
		guard: "not cancel_requested, not reservation_lapsed, this run holds the saga's lease"
	},
	/** The order saga completed (stock committed). */
	confirm: {
		from: ["CONFIRMING"],
		to: "CONFIRMED",
		by: "order saga completed (onOrderConfirmed, the saga's final transaction)"
	},
	/** The order saga compensated before its pivot (or the hook runs again). */
	cancel: {
		from: [...BEFORE_PIVOT, "CANCELLED"],
		to: "CANCELLED",
		by: "order saga compensated (onOrderCancelled, the saga's final transaction)"
	},
	/** An operator refunded and cancelled a saga parked after its pivot. */
	operatorCancel: {
		from: ["CONFIRMING"],
		to: "CANCELLED",
		by: "order saga compensated after refundAndCancelSaga (onOrderCancelled)",
		guard: "a REFUND_AND_CANCEL intervention for the saga (saga_interventions)"
	},
	/** An admin's refund of a confirmed order (the refund saga is created with it). */
	beginRefund: {
		from: ["CONFIRMED"],
		to: "REFUNDING",
		by: "orders.refund (one transaction with the refund saga and its audit record)"
	},
	/** The refund saga completed (payment refunded, units restocked when asked). */
	completeRefund: {
		from: ["REFUNDING"],
		to: "REFUNDED",
		by: "refund saga completed (onOrderRefunded, the saga's final transaction)"
	}
} as const satisfies Record<string, OrderTransition>;

export type OrderTransitionName = keyof typeof ORDER_TRANSITIONS;

/** Statuses an order ends in; any other is on its way (and stuck when it stays too long). */
export const FINAL_ORDER_STATUSES: readonly OrderStatus[] = ["CONFIRMED", "CANCELLED", "REFUNDED"];

/** Statuses an order passes through (`shop_orders_stuck` has one series for each). */
export const OPEN_ORDER_STATUSES: readonly OrderStatus[] = ORDER_STATUSES.filter(
	s => !FINAL_ORDER_STATUSES.includes(s)
);

/** The statuses that say the order saga's pivot has passed (`mirror.pivotStatuses`). */
export const PIVOT_PASSED: readonly OrderStatus[] = [
	ORDER_TRANSITIONS.passPivot.to,
	ORDER_TRANSITIONS.confirm.to
];

/** The statuses of a refund asked for (in flight or done). */
export const REFUND_STARTED: readonly OrderStatus[] = [
	ORDER_TRANSITIONS.beginRefund.to,
	ORDER_TRANSITIONS.completeRefund.to
];

/** The transitions the order saga makes (the refund saga's come after it completed). */
const ORDER_SAGA_TRANSITIONS: readonly OrderTransition[] = [
	ORDER_TRANSITIONS.place,
	ORDER_TRANSITIONS.reserveStock,
	ORDER_TRANSITIONS.chargePayment,
	ORDER_TRANSITIONS.passPivot,
	ORDER_TRANSITIONS.confirm,
	ORDER_TRANSITIONS.cancel,
	ORDER_TRANSITIONS.operatorCancel
];

/** The statuses an order can have while its order saga runs. */
export const ORDER_SAGA_STATUSES: readonly OrderStatus[] = ORDER_STATUSES.filter(s =>
	ORDER_SAGA_TRANSITIONS.some(t => t.to === s)
);

/** The order saga's statuses outside transition `t`'s `from`: what its `NOT IN` guard lists. */
export function outsideFrom(t: OrderTransitionName): readonly OrderStatus[] {
	const from: readonly OrderStatus[] = ORDER_TRANSITIONS[t].from;
	return ORDER_SAGA_STATUSES.filter(s => !from.includes(s));
}

/** Whether transition `t` may start from `status` (eShop's guard, for a handler's check). */
export function mayTransition(t: OrderTransitionName, status: OrderStatus | undefined): boolean {
	const from: readonly OrderStatus[] = ORDER_TRANSITIONS[t].from;
	return status !== undefined && from.includes(status);
}

/** Whether an admin's refund of the order was asked for (`REFUNDING`) or is done (`REFUNDED`). */
export function isRefundStarted(status: OrderStatus | undefined): boolean {
	return status !== undefined && REFUND_STARTED.includes(status);
}

/** `statuses` as an SQL list of literals: `'PENDING', 'PAID'` (values from code, never input). */
export function sqlStatuses(statuses: readonly OrderStatus[]): string {
	return statuses.map(s => `'${s}'`).join(", ");
}

/**
 * The order saga's mirror (mixins/saga.mixin.ts `SagaMirror`), derived from the table: the
 * status each step's success writes, the statuses a step's success leaves alone (the order saga's
 * statuses no mirrored move starts from), the pivot's statuses; and the customer's cancel refuses
 * further steps up to the pivot, in the saga's own statements (a cancelled order is not charged
 * first and refunded after).
 */
export function orderMirror(): SagaMirror {
	const mirrored: readonly OrderTransition[] = Object.values(ORDER_TRANSITIONS).filter(
		(t: OrderTransition) => t.afterStep !== undefined
	);
	return {
		table: "orders",
		idField: "orderId",
		statusColumn: "status",
		statusAfterStep: Object.fromEntries(mirrored.map(t => [t.afterStep!, t.to])),
		keepStatuses: ORDER_SAGA_STATUSES.filter(s => !mirrored.some(t => t.from.includes(s))),
		updatedAtColumn: "updated_at",
		refuse: { column: "cancel_requested", error: "ORDERS_CANCEL_REQUESTED" },
		// Once the order says CONFIRMING (the pivot's own update), the saga only goes forward,
		// even if the pivot's outcome was never recorded and the deadline has passed.
		pivotStatuses: PIVOT_PASSED
	};
}
