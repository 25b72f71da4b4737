/**
 * The public shapes of the `orders` service: the order as the API shows it, its status, the
 * bodies of its durable events (`order.created`, `order.confirmed`, `order.cancelled`,
 * `order.refunded`) and the operator views (sagas, interventions, refunds, stuck orders).
 *
 * The only file of services/orders/ that other services, their tests and the web app may import
 * (docs/architecture.md). Types only, plus one constant: nothing here runs a query. Money is in
 * integer minor units (cents) with an ISO 4217 currency; times are ISO 8601 strings.
 * The order's state machine (which status may follow which) is ./order.state.ts.
 */
import type { SagaErrorRecord, SagaStatus } from "../../mixins/saga.mixin";

/**
 * An order's status. `PENDING` → `STOCK_RESERVED` → `PAID` → `CONFIRMING` → `CONFIRMED`
 * (→ `REFUNDING` → `REFUNDED`), or → `CANCELLED`; the transitions are ./order.state.ts.
 */
export type OrderStatus =
	| "PENDING"
	| "STOCK_RESERVED"
	| "PAID"
	| "CONFIRMING"
	| "CONFIRMED"
	| "CANCELLED"
	| "REFUNDING"
	| "REFUNDED";

/** A line of an order, priced from the catalog at order time. */
export interface OrderItem {
	productId: string;
	sku: string;
	name: string;
	quantity: number;
	/** Integer cents. */
	unitPrice: number;
	/** `unitPrice * quantity`, integer cents. */
	lineTotal: number;
}

/** An order as the API shows it. */
export interface Order {
	id: string;
	userId: string;
	status: OrderStatus;
	items: OrderItem[];
	/** Integer cents. */
	total: number;
	/** ISO 4217. */
	currency: string;
	paymentMethod: string;
	/** `OUT_OF_STOCK`, `PAYMENT_DECLINED`, `PAYMENT_METHOD_INVALID`, `TIMEOUT`,
	 * `CANCELLED_BY_CUSTOMER`, `PROCESSING_FAILED` or `OPERATOR_REFUNDED` (an operator refunded
	 * and cancelled its saga parked after the pivot); null unless cancelled. */
	cancellationReason: string | null;
	cancelRequested: boolean;
	createdAt: string;
	updatedAt: string;
}

/** The order's `cancellationReason` after an operator's refund and cancel. */
export const OPERATOR_REFUNDED = "OPERATOR_REFUNDED";

/**
 * The body of the durable order events `order.created`, `order.confirmed` and `order.cancelled`
 * (written to the outbox in the transaction of the order's change): the order and its customer's
 * e-mail.
 */
export interface OrderEvent {
	order: Order & { customerEmail: string };
}

/** `order.created`: an order was placed (`PENDING`), its saga started. */
export type OrderCreated = OrderEvent;
/** `order.confirmed`: the order saga completed (`CONFIRMED`). */
export type OrderConfirmed = OrderEvent;
/** `order.cancelled`: the order saga compensated (`CANCELLED`, with its `cancellationReason`). */
export type OrderCancelled = OrderEvent;
/** `order.refunded`: an admin's refund completed (`REFUNDED`). `amount` in integer cents. */
export interface OrderRefunded extends OrderEvent {
	refund: { amount: number; currency: string; restock: boolean };
}

/** A saga as operators see it. */
export interface SagaView {
	id: string;
	name: string;
	version: number;
	status: SagaStatus;
	currentStep: number;
	currentStepName: string | null;
	orderId: string | null;
	failureReason: string | null;
	attempts: number;
	errors: SagaErrorRecord[];
	deadlineAt: string;
	createdAt: string;
	updatedAt: string;
}

/**
 * What an operator did (`saga_interventions`), as `getSaga` and `adminGet` show it: a parked
 * saga redriven or refunded and cancelled, or a confirmed order refunded (`REFUND`, the refund
 * saga's id).
 */
export interface SagaIntervention {
	action: "REDRIVE" | "REFUND_AND_CANCEL" | "REFUND";
	/** The admin's user id; null for an internal caller (the REPL). */
	actorId: string | null;
	/** The admin's e-mail, or the internal caller's `operator` (e.g. `repl:alice@host`). */
	actor: string;
	note: string | null;
	/** ISO 8601, the database's clock. */
	at: string;
}

/** An admin's refund of an order, as `refund` and `adminGet` answer it. */
export interface OrderRefund {
	/** The `order-refund` saga's id (`GET /api/admin/sagas/:id` shows its steps). */
	sagaId: string;
	/** The refund saga's status: `RUNNING`, `COMPLETED`, `FAILED` (parked: redrive it). */
	sagaStatus: SagaStatus | null;
	restock: boolean;
	/** Integer cents, the order's total (full refund). */
	amount: number;
	currency: string;
	actorId: string | null;
	actor: string;
	note: string | null;
	/** When it was asked for, ISO 8601 (the database's clock). */
	at: string;
}

/** `refund`'s answer: the order (`REFUNDING` or `REFUNDED`) and its refund. */
export type OrderRefundView = Order & { refund: OrderRefund };

/** `stuck`'s answer. */
export interface StuckOrders {
	/** `ORDERS_STUCK_AFTER_MS`: an open order older than this is stuck. */
	thresholdMs: number;
	/** Stuck orders by status (every open status, 0 included). */
	counts: Record<string, number>;
	total: number;
	/** The oldest first, at most `limit`: the order with `since` (when it was placed, or its
	 * refund asked for; ISO 8601), `ageMs`, and the saga driving it (`sagaId`, `sagaName`,
	 * `sagaStatus`: `FAILED` means parked, an operator must redrive or resolve it). */
	rows: (Order & {
		since: string;
		ageMs: number;
		sagaId: string | null;
		sagaName: string | null;
		sagaStatus: SagaStatus | null;
	})[];
}
