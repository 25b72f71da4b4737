/**
 * `orders`: takes orders and runs the order saga (SagaMixin) that coordinates `inventory` and
 * `payments`:
 *
 *   reserveStock (inventory.reserve / inventory.release)
 *   → chargePayment (payments.charge / payments.refund)
 *   → confirmOrder (the pivot: a customer cancel is no longer possible after it)
 *   → commitStock (inventory.commit)
 *   → order CONFIRMED
 *
 * On `INVENTORY_OUT_OF_STOCK`, `PAYMENTS_CARD_DECLINED`, a customer cancel or the deadline
 * (`SAGA_DEADLINE_MS`, default 30 000 ms), the saga compensates in reverse (refund what was
 * charged, release what was reserved) and the order ends `CANCELLED` with a `cancellationReason`.
 *
 * Prices come from the catalog (`products.resolve`), never from the client. Money: integer cents
 * with an ISO 4217 currency. A client `Idempotency-Key` (per caller) returns the same order on a
 * repeat (the IETF "Idempotency-Key HTTP Header Field" draft; Stripe's idempotent requests).
 *
 * Admin refunds (returns): `refund` turns a `CONFIRMED` order `REFUNDING` and starts the
 * `order-refund` saga (the same machinery, a second definition):
 *
 *   beginRefund (the pivot: from here the refund only goes forward)
 *   → refundPayment (payments.refund, full amount)
 *   → restockItems (inventory.restock, only when asked)
 *   → order REFUNDED, `order.refunded`
 *
 * A step that keeps failing parks the saga (`FAILED`, the order stays `REFUNDING`) for an
 * operator's redrive; nothing is refunded twice (idempotency keys, and one payment per order).
 *
 * Order statuses: `PENDING` → `STOCK_RESERVED` → `PAID` → `CONFIRMING` → `CONFIRMED`
 * (→ `REFUNDING` → `REFUNDED`), or → `CANCELLED` (from any status before `CONFIRMING`; from a
 * parked `CONFIRMING` by an operator's refund and cancel). Final: `CONFIRMED` (unless refunded),
 * `CANCELLED`, `REFUNDED`; an order in any other status past `ORDERS_STUCK_AFTER_MS` is counted
 * in `shop_orders_stuck{status}` and listed by `stuck`.
 *
 * Events emitted, durably (transactional outbox, mixins/events.mixin.ts: written in the same
 * transaction as the order's change, published to JetStream by the relay): `order.created`,
 * `order.confirmed`, `order.cancelled`, each `{ order }` where `order` is the order view plus
 * `customerEmail`; `order.refunded` `{ order, refund: { amount, currency, restock } }` (cents).
 */
import crypto from "node:crypto";
import { Errors, type Service } from "moleculer";
import {
	DataTypes,
	QueryTypes,
	type Model,
	type ModelStatic,
	type Sequelize,
	type Transaction
} from "sequelize";
import { config } from "../../platform/config";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import { countMetric, registerMetrics, setMetric } from "../../platform/metrics";
import { ordersMigrations } from "./migrations";
import { DbMixin, type DbMixinMethods } from "../../mixins/db.mixin";
import { OutboxMixin, outboxMigrations, type OutboxMethods } from "../../mixins/events.mixin";
import {
	SagaLeaseLostError,
	SagaMixin,
	type SagaDefinition,
	type SagaErrorRecord,
	type SagaInstance,
	type SagaMixinMethods,
	type SagaMixinOptions,
	type SagaStatus,
	type SagaStepLogEntry
} from "../../mixins/saga.mixin";
import type { Product } from "../products/products.model";
import type { OrderPayments } from "../payments/payments.model";
import { fastQuery } from "../../platform/db/fast-query";

export type OrderStatus =
	| "PENDING"
	| "STOCK_RESERVED"
	| "PAID"
	| "CONFIRMING"
	| "CONFIRMED"
	| "CANCELLED"
	| "REFUNDING"
	| "REFUNDED";

/** Statuses an order ends in; any other is on its way (and stuck when it stays too long). */
export const FINAL_ORDER_STATUSES: readonly OrderStatus[] = ["CONFIRMED", "CANCELLED", "REFUNDED"];

/** Statuses an order passes through (`shop_orders_stuck` has one series for each). */
export const OPEN_ORDER_STATUSES: readonly OrderStatus[] = [
	"PENDING",
	"STOCK_RESERVED",
	"PAID",
	"CONFIRMING",
	"REFUNDING"
];

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

interface OrderRow {
	id: string;
	user_id: string;
	customer_email: string;
	status: OrderStatus;
	items: OrderItem[];
	total: number;
	currency: string;
	payment_method: string;
	cancellation_reason: string | null;
	cancel_requested: boolean;
	/** Its reservation was given up before the pivot (`lapseReservations`): no pivot. */
	reservation_lapsed?: boolean;
	idempotency_key: string | null;
	request_hash: string | null;
	saga_id: string | null;
	created_at: Date;
	updated_at: Date;
}

/** The order saga's data. */
interface OrderSagaData extends Record<string, unknown> {
	orderId: string;
	items: { productId: string; quantity: number }[];
	amount: number;
	currency: string;
	paymentMethod: string;
}

/** The refund saga's data (`order-refund`). Money in integer cents. */
interface OrderRefundSagaData extends Record<string, unknown> {
	orderId: string;
	amount: number;
	currency: string;
	/** Give the order's committed units back on hand (`inventory.restock`). */
	restock: boolean;
}

/** Largest order total accepted, in cents (Postgres integer). */
const MAX_TOTAL = 2_147_483_647;

/** Maps the error that stopped the saga to the order's `cancellationReason`. */
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
		// The order mirrors the saga's progress and refuses further steps once the customer asked
		// to cancel (so a cancelled order is not charged first and refunded after), in the saga's
		// own statements.
		mirror: {
			table: "orders",
			idField: "orderId",
			statusColumn: "status",
			statusAfterStep: { reserveStock: "STOCK_RESERVED", chargePayment: "PAID" },
			keepStatuses: ["CONFIRMING", "CONFIRMED", "CANCELLED"],
			updatedAtColumn: "updated_at",
			refuse: { column: "cancel_requested", error: "ORDERS_CANCEL_REQUESTED" },
			// Once the order says CONFIRMING (the pivot's own update), the saga only goes forward,
			// even if the pivot's outcome was never recorded and the deadline has passed.
			pivotStatuses: ["CONFIRMING", "CONFIRMED"]
		},
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

/** SQLSTATE raised by `orders_admit` (migration 906) past a per-customer bound. */
const CUSTOMER_LIMIT_SQLSTATE = "OC429";

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

/** A stable hash of what an order request asks for (Idempotency-Key reuse detection). */
export function requestHash(
	items: { productId: string; quantity: number }[],
	paymentMethod: string
): string {
	const canonical = JSON.stringify({
		items: [...items]
			.sort((a, b) => a.productId.localeCompare(b.productId))
			.map(i => [i.productId, i.quantity]),
		paymentMethod
	});
	return crypto.createHash("sha256").update(canonical).digest("hex");
}

function defineModels(sequelize: Sequelize): { Order: ModelStatic<Model> } {
	const Order = sequelize.define(
		"Order",
		{
			id: { type: DataTypes.UUID, primaryKey: true },
			userId: { type: DataTypes.UUID, allowNull: false },
			status: { type: DataTypes.TEXT, allowNull: false },
			total: { type: DataTypes.INTEGER, allowNull: false }
		},
		{ tableName: "orders" }
	);
	return { Order };
}
type Models = ReturnType<typeof defineModels>;

interface OrdersMethods {
	sagaInterventions(id: string): Promise<SagaIntervention[]>;
	refundView(order: OrderRow): Promise<OrderRefundView>;
	stuckOrders(limit: number): Promise<StuckOrders>;
	countStuckOrders(): Promise<void>;
	sagaRefundRequested(id: string): Promise<boolean>;
	findOrder(id: string, t?: Transaction): Promise<OrderRow | null>;
	findOwnOrder(ctx: ShopContext, id: string): Promise<OrderRow>;
	enqueueOrderEvent(
		event: "order.confirmed" | "order.cancelled",
		saga: SagaInstance<OrderSagaData>,
		row: OrderRow | undefined,
		t: Transaction
	): Promise<void>;
}
type OrdersThis = Service &
	DbMixinMethods<Models> &
	SagaMixinMethods &
	OutboxMethods &
	OrdersMethods & {
		sagaView(s: SagaInstance): SagaView;
		/** The `shop_orders_stuck` recount timer (`ORDERS_STUCK_CHECK_INTERVAL_MS`). */
		$stuckTimer?: NodeJS.Timeout | null;
	};

/**
 * The body of the durable order events (`order.created`, `order.confirmed`, `order.cancelled`):
 * `{ order: Order & { customerEmail } }`.
 */
export const orderEvent = (r: OrderRow): { order: Order & { customerEmail: string } } => ({
	order: { ...toOrderView(r), customerEmail: r.customer_email }
});

export const toOrderView = (r: OrderRow): Order => ({
	id: r.id,
	userId: r.user_id,
	status: r.status,
	items: r.items,
	total: r.total,
	currency: r.currency.trim(),
	paymentMethod: r.payment_method,
	cancellationReason: r.cancellation_reason,
	cancelRequested: r.cancel_requested,
	createdAt: new Date(r.created_at).toISOString(),
	updatedAt: new Date(r.updated_at).toISOString()
});

function requireUser(ctx: ShopContext): NonNullable<ShopContext["meta"]["user"]> {
	if (!ctx.meta.user) throw shopError("AUTH_TOKEN_MISSING");
	return ctx.meta.user;
}

const pageParams = {
	page: { type: "number", integer: true, min: 1, max: 100_000, convert: true, default: 1 },
	pageSize: { type: "number", integer: true, min: 1, max: 100, convert: true, default: 20 }
} as const;

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

/** The order's `cancellationReason` after an operator's refund and cancel. */
export const OPERATOR_REFUNDED = "OPERATOR_REFUNDED";

/** Parameters of the operator actions: an optional note kept with the audit record. */
const operatorParams = { note: { type: "string", max: 500, optional: true } } as const;

/**
 * Who acts in an operator action: the caller's user, who must be an admin (REST: the gateway set
 * it), else meta `operator` of an internal caller (the REPL sends `repl:<os user>@<host>`; a REST
 * client cannot set meta), else `internal@<nodeID>`.
 * @throws AUTH_FORBIDDEN (403) when the caller's user is not an admin
 */
function operatorOf(ctx: ShopContext): { actorId: string | null; actor: string } {
	const user = ctx.meta.user;
	if (user && user.role !== "admin") throw shopError("AUTH_FORBIDDEN");
	if (user) return { actorId: user.id, actor: user.email };
	const named = (ctx.meta as { operator?: unknown }).operator;
	return {
		actorId: null,
		actor:
			typeof named === "string" && named.length > 0
				? named.slice(0, 200)
				: `internal@${ctx.nodeID ?? "local"}`
	};
}

/** The order id of an order saga. */
function sagaOrderId(saga: SagaInstance): string | null {
	return typeof saga.data.orderId === "string" ? saga.data.orderId : null;
}

/**
 * The orders service schema. `sagaOptions` override the saga mixin's (failure tests inject
 * crashes and short leases this way); by default they come from the config.
 */
export function createOrdersService(
	sagaOptions: SagaMixinOptions = {}
): ShopServiceSchema<OrdersThis> {
	return {
		...OrdersService,
		mixins: [
			DbMixin({
				service: "orders",
				migrations: [...ordersMigrations, ...outboxMigrations],
				models: defineModels,
				mainModel: "Order"
			}),
			OutboxMixin(),
			SagaMixin({
				leaseMs: config().sagaLeaseMs,
				recoveryIntervalMs: config().sagaRecoveryIntervalMs,
				faults: config().sagaFaults,
				...sagaOptions
			})
		],
		sagas: { order: orderSaga(), "order-refund": orderRefundSaga() }
	};
}

const OrdersService: ShopServiceSchema<OrdersThis> = {
	name: "orders",

	sagas: { order: orderSaga(), "order-refund": orderRefundSaga() },

	/** Business metrics (platform/metrics.ts) start at 0 on this node. */
	created(this: OrdersThis): void {
		registerMetrics(this.broker, [
			"ordersCreated",
			"ordersConfirmed",
			"ordersCancelled",
			"sagaStepDuration",
			"sagaCompensations",
			"sagaParked",
			"sagasParkedNow",
			"ordersRefunded",
			"ordersStuck"
		]);
	},

	/**
	 * Operator visibility: recounts `shop_orders_stuck{status}` now and every
	 * `ORDERS_STUCK_CHECK_INTERVAL_MS` (when metrics are on), after the database connected.
	 */
	started(this: OrdersThis): void {
		const every = config().ordersStuckCheckIntervalMs;
		if (every <= 0 || !this.broker.isMetricsEnabled()) return;
		const tick = (): void =>
			void this.countStuckOrders().catch(err =>
				this.logger.warn("Counting stuck orders failed", err)
			);
		tick();
		this.$stuckTimer = setInterval(tick, every);
		this.$stuckTimer.unref?.();
	},

	/** Stops the recount (before DbMixin's `stopped` closes the database). */
	stopped(this: OrdersThis): void {
		if (this.$stuckTimer) clearInterval(this.$stuckTimer);
		this.$stuckTimer = null;
	},

	actions: {
		/**
		 * Places an order for the caller and starts its saga; answers at once.
		 * @param items - 1 to 50 `{ productId, quantity }` (quantity 1 to 1000), no product twice
		 * @param paymentMethod - a payments test token, e.g. `tok_visa`
		 * Meta `idempotencyKey` (the `Idempotency-Key` header): a repeat returns the same order.
		 * @returns 202 Order with `status: "PENDING"`
		 * @throws ORDERS_OVERLOADED (503, Retry-After) past SAGA_MAX_IN_FLIGHT sagas on this node,
		 *   ORDERS_CUSTOMER_LIMIT (429, Retry-After; `data: { inFlight, unitsInFlight, units,
		 *   maxInFlight, maxUnits }`) when the caller already has ORDERS_MAX_IN_FLIGHT_PER_CUSTOMER
		 *   orders in flight or this order's units would take them past
		 *   ORDERS_MAX_UNITS_RESERVED_PER_CUSTOMER (counted in the order's own INSERT, under a lock
		 *   on the customer in the orders database: exact across every orders node; see migration
		 *   906), AUTH_TOKEN_MISSING (401), VALIDATION_ERROR (422), ORDERS_PRODUCT_UNAVAILABLE (422),
		 *   ORDERS_CURRENCY_MISMATCH (422), ORDERS_TOTAL_TOO_LARGE (422), ORDERS_IDEMPOTENCY_KEY_REUSED (422)
		 * @emits order.created
		 */
		create: {
			// Not retried by a caller's broker: a retry after a lost answer would place a second
			// order. Clients repeat with the same Idempotency-Key instead (answered with the first).
			retryPolicy: { enabled: false },
			params: {
				$$strict: true,
				items: {
					type: "array",
					min: 1,
					max: 50,
					unique: false,
					items: {
						type: "object",
						strict: true,
						props: {
							productId: { type: "uuid" },
							quantity: { type: "number", integer: true, min: 1, max: 1000 }
						}
					}
				},
				paymentMethod: { type: "string", min: 1, max: 100, pattern: /^[A-Za-z0-9_]+$/ }
			},
			async handler(
				this: OrdersThis,
				ctx: ShopContext<{
					items: { productId: string; quantity: number }[];
					paymentMethod: string;
				}>
			): Promise<Order> {
				const user = requireUser(ctx);
				// Backpressure: a bounded number of sagas per node; the client retries later.
				if (this.sagaLoad() >= config().sagaMaxInFlight)
					throw shopError("ORDERS_OVERLOADED", undefined, {
						inFlight: this.sagaLoad(),
						max: config().sagaMaxInFlight
					});
				const { items, paymentMethod } = ctx.params;
				const ids = items.map(i => i.productId);
				const dup = ids.filter((id, i) => ids.indexOf(id) !== i);
				if (dup.length > 0)
					throw new Errors.ValidationError(
						"Each product may appear once",
						"VALIDATION_ERROR",
						[
							{
								type: "unique",
								field: "items",
								message: "Each product may appear once",
								actual: dup
							}
						]
					);
				const key = ctx.meta.idempotencyKey ?? null;
				const hash = requestHash(items, paymentMethod);
				if (key) {
					const prior = (await fastQuery(
						this.sequelize,
						"SELECT * FROM orders WHERE user_id = $1 AND idempotency_key = $2",
						{ bind: [user.id, key], type: QueryTypes.SELECT }
					)) as OrderRow[];
					if (prior[0]) {
						if (prior[0].request_hash !== hash)
							throw shopError("ORDERS_IDEMPOTENCY_KEY_REUSED");
						ctx.meta.$statusCode = 202;
						return toOrderView(prior[0]);
					}
				}

				const products: Product[] = await ctx.call("products.resolve", { ids });
				const byId = new Map(products.map(p => [p.id, p]));
				const missing = ids.filter(id => !byId.get(id)?.active);
				if (missing.length > 0)
					throw shopError("ORDERS_PRODUCT_UNAVAILABLE", undefined, {
						productIds: missing
					});
				const currencies = new Set(products.map(p => p.currency));
				if (currencies.size > 1)
					throw shopError("ORDERS_CURRENCY_MISMATCH", undefined, {
						currencies: [...currencies]
					});
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
				const currency = [...currencies][0]!;
				const orderId = crypto.randomUUID();
				const sagaId = crypto.randomUUID();

				const now = new Date();
				const row: OrderRow = {
					id: orderId,
					user_id: user.id,
					customer_email: user.email,
					status: "PENDING",
					items: lines,
					total,
					currency,
					payment_method: paymentMethod,
					cancellation_reason: null,
					cancel_requested: false,
					idempotency_key: key,
					request_hash: hash,
					saga_id: sagaId,
					created_at: now,
					updated_at: now
				};
				const data: OrderSagaData = {
					orderId,
					items: items.map(i => ({ productId: i.productId, quantity: i.quantity })),
					amount: total,
					currency,
					paymentMethod
				};
				let saga: SagaInstance;
				try {
					// The order, its saga (with step 1's intent) and `order.created` in the outbox:
					// ONE statement, so atomic without a transaction (one round trip in all).
					saga = await this.createSaga("order", data, {
						id: sagaId,
						deadlineMs: config().sagaDeadlineMs,
						requestId: ctx.requestID ?? null,
						parentSpanId: ctx.span?.id ?? null,
						// The order is created with the saga: nothing can refuse step 1 yet.
						startFirstStep: true,
						with: [
							{
								// The per-customer bounds are checked by this INSERT itself
								// (`orders_admit` raises OC429 past them, failing the whole
								// statement: no order, no saga, no event).
								sql: `INSERT INTO orders (id, user_id, customer_email, status, items, total, currency,
									payment_method, idempotency_key, request_hash, saga_id, created_at, updated_at)
								 SELECT $1::uuid, $2::uuid, $3::text, 'PENDING', $4::jsonb, $5::integer, $6::text, $7::text,
									$8::text, $9::text, $10::uuid, $11::timestamptz, $11::timestamptz
								 WHERE orders_admit($2::uuid, $12::integer, $13::integer, $14::integer)`,
								bind: [
									orderId,
									user.id,
									user.email,
									JSON.stringify(lines),
									total,
									currency,
									paymentMethod,
									key,
									hash,
									sagaId,
									now,
									units,
									config().ordersMaxInFlightPerCustomer,
									config().ordersMaxUnitsReservedPerCustomer
								]
							},
							this.outboxWrite(
								[
									{
										name: "order.created",
										data: orderEvent(row),
										aggregateId: orderId
									}
								],
								ctx.requestID ?? null
							)
						]
					});
				} catch (err) {
					const limit = customerLimitOf(err);
					if (limit) throw shopError("ORDERS_CUSTOMER_LIMIT", undefined, limit);
					// Two requests with one Idempotency-Key raced: the loser answers the winner's order.
					if (
						key &&
						(err as { name?: string }).name === "SequelizeUniqueConstraintError"
					) {
						const prior = (await fastQuery(
							this.sequelize,
							"SELECT * FROM orders WHERE user_id = $1 AND idempotency_key = $2",
							{ bind: [user.id, key], type: QueryTypes.SELECT }
						)) as OrderRow[];
						if (prior[0] && prior[0].request_hash === hash) {
							ctx.meta.$statusCode = 202;
							return toOrderView(prior[0]);
						}
						throw shopError("ORDERS_IDEMPOTENCY_KEY_REUSED");
					}
					throw err;
				}
				this.kickRelay();
				this.launchSaga(sagaId, { fresh: saga });
				this.logger.info(
					`Order ${orderId} placed by user ${user.id}: ${lines.length} line(s), ${total} ${currency} (saga ${sagaId})`
				);
				countMetric(this.broker, "ordersCreated");
				ctx.meta.$statusCode = 202;
				return toOrderView(row);
			}
		},

		/**
		 * One order of the caller (admins: any order).
		 * @returns Order
		 * @throws ORDERS_NOT_FOUND (404) also for another customer's order
		 */
		get: {
			params: { $$strict: true, id: { type: "uuid" } },
			async handler(this: OrdersThis, ctx: ShopContext<{ id: string }>): Promise<Order> {
				return toOrderView(await this.findOwnOrder(ctx, ctx.params.id));
			}
		},

		/**
		 * The caller's orders, newest first.
		 * @returns `{ rows: Order[], total, page, pageSize, totalPages }`
		 */
		list: {
			params: { $$strict: true, ...pageParams },
			async handler(
				this: OrdersThis,
				ctx: ShopContext<{ page: number; pageSize: number }>
			): Promise<{
				rows: Order[];
				total: number;
				page: number;
				pageSize: number;
				totalPages: number;
			}> {
				const user = requireUser(ctx);
				const { page, pageSize } = ctx.params;
				const rows = (await fastQuery(
					this.sequelize,
					"SELECT *, count(*) OVER () AS full_count FROM orders WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
					{ bind: [user.id, pageSize, (page - 1) * pageSize], type: QueryTypes.SELECT }
				)) as (OrderRow & { full_count: string })[];
				let total = rows[0] ? Number(rows[0].full_count) : 0;
				if (!rows[0] && page > 1) {
					const c = (await fastQuery(
						this.sequelize,
						"SELECT count(*) AS n FROM orders WHERE user_id = $1",
						{
							bind: [user.id],
							type: QueryTypes.SELECT
						}
					)) as { n: string }[];
					total = Number(c[0]?.n ?? 0);
				}
				return {
					rows: rows.map(toOrderView),
					total,
					page,
					pageSize,
					totalPages: Math.ceil(total / pageSize)
				};
			}
		},

		/**
		 * Asks to cancel an order that is not yet confirmed. The saga sees the request before its
		 * pivot and compensates; the order then ends `CANCELLED` / `CANCELLED_BY_CUSTOMER`.
		 * Cancelling a cancelled order answers it as it is.
		 * @returns 202 Order (`cancelRequested: true`)
		 * @throws ORDERS_NOT_FOUND (404), ORDERS_NOT_CANCELLABLE (409) once confirmed or confirming
		 */
		cancel: {
			params: { $$strict: true, id: { type: "uuid" } },
			async handler(this: OrdersThis, ctx: ShopContext<{ id: string }>): Promise<Order> {
				const own = await this.findOwnOrder(ctx, ctx.params.id);
				if (own.status === "CANCELLED") {
					ctx.meta.$statusCode = 202;
					return toOrderView(own);
				}
				const rows = (await fastQuery(
					this.sequelize,
					`UPDATE orders SET cancel_requested = true, updated_at = now()
					 WHERE id = $1 AND status IN ('PENDING', 'STOCK_RESERVED', 'PAID') RETURNING *`,
					{ bind: [own.id], type: QueryTypes.SELECT }
				)) as OrderRow[];
				if (!rows[0]) {
					const now = await this.findOrder(own.id);
					if (now?.status === "CANCELLED") {
						ctx.meta.$statusCode = 202;
						return toOrderView(now);
					}
					throw shopError("ORDERS_NOT_CANCELLABLE", undefined, {
						id: own.id,
						status: now?.status
					});
				}
				ctx.meta.$statusCode = 202;
				return toOrderView(rows[0]);
			}
		},

		/**
		 * Inventory's sweeper asks before it gives up reservations past their TTL (not published
		 * over REST). An order that has not passed its pivot is marked so that it never will (its
		 * saga then compensates, `TIMEOUT`): its reservation may lapse. An order past its pivot
		 * (`CONFIRMING`, `CONFIRMED`) keeps its reservation: its card was charged and its saga only
		 * goes forward. The orders are locked (ascending id) while deciding, so the decision and
		 * the pivot exclude each other. Unknown or cancelled orders may lapse.
		 * @param orderIds - 1 to 1000 order ids
		 * @returns `{ kept }`: the ids whose reservations must not lapse
		 */
		lapseReservations: {
			visibility: "public",
			params: {
				$$strict: true,
				orderIds: { type: "array", min: 1, max: 1000, items: { type: "uuid" } }
			},
			async handler(
				this: OrdersThis,
				ctx: ShopContext<{ orderIds: string[] }>
			): Promise<{ kept: string[] }> {
				const rows = (await fastQuery(
					this.sequelize,
					`WITH o AS (SELECT id, status FROM orders WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE),
					 l AS (UPDATE orders SET reservation_lapsed = true, updated_at = now()
						WHERE id IN (SELECT id FROM o WHERE status IN ('PENDING', 'STOCK_RESERVED', 'PAID'))
						RETURNING id)
					 SELECT id FROM o WHERE status IN ('CONFIRMING', 'CONFIRMED')`,
					{ bind: [ctx.params.orderIds], type: QueryTypes.SELECT }
				)) as { id: string }[];
				return { kept: rows.map(r => r.id) };
			}
		},

		/**
		 * The newest orders of every customer, for operators (REPL `orders recent`; not published).
		 * @param limit - 1 to 100 (default 10)
		 * @returns Order[] newest first
		 */
		recent: {
			visibility: "public",
			params: {
				$$strict: true,
				limit: {
					type: "number",
					integer: true,
					min: 1,
					max: 100,
					convert: true,
					default: 10
				}
			},
			async handler(this: OrdersThis, ctx: ShopContext<{ limit: number }>): Promise<Order[]> {
				const rows = (await fastQuery(
					this.sequelize,
					"SELECT * FROM orders ORDER BY created_at DESC, id LIMIT $1",
					{ bind: [ctx.params.limit], type: QueryTypes.SELECT }
				)) as OrderRow[];
				return rows.map(toOrderView);
			}
		},

		/**
		 * Sagas for operators (admin), newest first, optionally by status.
		 * @returns `{ rows: SagaView[], total, page, pageSize, totalPages }`
		 */
		listSagas: {
			params: {
				$$strict: true,
				status: {
					type: "enum",
					values: ["RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED"],
					optional: true
				},
				...pageParams
			},
			async handler(
				this: OrdersThis,
				ctx: ShopContext<{ status?: SagaStatus; page: number; pageSize: number }>
			): Promise<{
				rows: SagaView[];
				total: number;
				page: number;
				pageSize: number;
				totalPages: number;
			}> {
				if (ctx.meta.user && ctx.meta.user.role !== "admin")
					throw shopError("AUTH_FORBIDDEN");
				const { status, page, pageSize } = ctx.params;
				const rows = (await fastQuery(
					this.sequelize,
					`SELECT id FROM sagas WHERE ($1::text IS NULL OR status = $1) ORDER BY created_at DESC, id LIMIT $2 OFFSET $3`,
					{
						bind: [status ?? null, pageSize, (page - 1) * pageSize],
						type: QueryTypes.SELECT
					}
				)) as { id: string }[];
				const count = (await fastQuery(
					this.sequelize,
					"SELECT count(*) AS n FROM sagas WHERE ($1::text IS NULL OR status = $1)",
					{ bind: [status ?? null], type: QueryTypes.SELECT }
				)) as { n: string }[];
				const total = Number(count[0]?.n ?? 0);
				const sagas = await Promise.all(rows.map(r => this.getSaga(r.id)));
				return {
					rows: sagas
						.filter((s): s is SagaInstance => s !== null)
						.map(s => this.sagaView(s)),
					total,
					page,
					pageSize,
					totalPages: Math.ceil(total / pageSize)
				};
			}
		},

		/**
		 * One saga with its step log and what operators did to it, for operators (admin).
		 * @returns SagaView plus `steps: [{ stepIndex, stepName, phase, status, attempt, result, error, startedAt, finishedAt }]`
		 *   and `interventions: [{ action, actorId, actor, note, at }]` (oldest first; `action`:
		 *   `REDRIVE` or `REFUND_AND_CANCEL`)
		 * @throws SAGAS_NOT_FOUND (404), AUTH_FORBIDDEN (403)
		 */
		getSaga: {
			params: { $$strict: true, id: { type: "uuid" } },
			async handler(
				this: OrdersThis,
				ctx: ShopContext<{ id: string }>
			): Promise<
				SagaView & { steps: SagaStepLogEntry[]; interventions: SagaIntervention[] }
			> {
				if (ctx.meta.user && ctx.meta.user.role !== "admin")
					throw shopError("AUTH_FORBIDDEN");
				const saga = await this.getSaga(ctx.params.id);
				if (!saga) throw shopError("SAGAS_NOT_FOUND");
				const [steps, interventions] = await Promise.all([
					this.getSagaSteps(saga.id),
					this.sagaInterventions(saga.id)
				]);
				return { ...this.sagaView(saga), steps, interventions };
			}
		},

		/**
		 * Resumes a saga parked as FAILED (admin): backward if it was compensating, else forward
		 * (a saga parked after its pivot: its step is tried again under a new idempotency key).
		 * Audited in the same statement (`saga_interventions`: `REDRIVE`, who, when).
		 * @param id - the saga's id
		 * @param note - optional, up to 500 characters, kept with the audit record
		 * Who is recorded: the caller's user (REST: the admin's id and e-mail), else meta
		 * `operator` (the REPL's `repl:<user>@<host>`).
		 * @returns 202 SagaView of the resumed saga
		 * @throws SAGAS_NOT_FOUND (404), SAGAS_NOT_PARKED (409), AUTH_FORBIDDEN (403)
		 */
		redriveSaga: {
			params: { $$strict: true, id: { type: "uuid" }, ...operatorParams },
			async handler(
				this: OrdersThis,
				ctx: ShopContext<{ id: string; note?: string }>
			): Promise<SagaView> {
				const who = operatorOf(ctx);
				const saga = await this.getSaga(ctx.params.id);
				if (!saga) throw shopError("SAGAS_NOT_FOUND");
				if (saga.status !== "FAILED")
					throw shopError("SAGAS_NOT_PARKED", undefined, { status: saga.status });
				// Parked while compensating: finish compensating. Parked going forward (after the
				// pivot, nothing can be undone): go forward again.
				const next: SagaStatus = saga.failureReason !== null ? "COMPENSATING" : "RUNNING";
				const rows = (await fastQuery(
					this.sequelize,
					`WITH s AS (UPDATE sagas SET status = $2, updated_at = now(), lease_owner = NULL, lease_expires_at = NULL,
						redrives = redrives + 1,
						deadline_at = CASE WHEN $2 = 'RUNNING' THEN greatest(deadline_at, now() + ($3 || ' milliseconds')::interval) ELSE deadline_at END
					 WHERE id = $1 AND status = 'FAILED' RETURNING id)
					 INSERT INTO saga_interventions (saga_id, order_id, action, actor_id, actor, note)
					 SELECT id, $4, 'REDRIVE', $5, $6, $7 FROM s RETURNING saga_id AS id`,
					{
						bind: [
							saga.id,
							next,
							String(config().sagaDeadlineMs),
							sagaOrderId(saga),
							who.actorId,
							who.actor,
							ctx.params.note ?? null
						],
						type: QueryTypes.SELECT
					}
				)) as { id: string }[];
				if (!rows[0]) throw shopError("SAGAS_NOT_PARKED");
				this.logger.warn(`Saga ${saga.id} redriven (${next}) by ${who.actor}`);
				this.launchSaga(saga.id);
				ctx.meta.$statusCode = 202;
				return this.sagaView({ ...saga, status: next });
			}
		},

		/**
		 * "Refund and cancel" (admin): the way out of a saga parked after its pivot when it should
		 * not go forward (the order's card was charged, its stock is still held, and the commit
		 * keeps failing). The saga compensates after its pivot through the same machinery as any
		 * compensation: `payments.refund` then `inventory.release`, each with its own idempotency
		 * key (`<sagaId>:<step>:compensate:r<N>`); the order ends `CANCELLED` with
		 * `cancellationReason: "OPERATOR_REFUNDED"` and `order.cancelled` goes to the outbox (the
		 * customer's e-mail). The request is recorded (`saga_interventions`: `REFUND_AND_CANCEL`,
		 * who, when, note) in the statement that hands the saga to compensation; that record is
		 * what lets the order's guard cancel a `CONFIRMING` order. A saga parked while it was
		 * already compensating is resumed backward with its own reason. Idempotent: a repeat (or a
		 * concurrent call) answers the saga as it is now, and nothing is refunded twice.
		 * @param id - the saga's id
		 * @param note - optional, up to 500 characters, kept with the audit record
		 * @returns 202 SagaView (status `COMPENSATING` when this call started it)
		 * @throws SAGAS_NOT_FOUND (404), SAGAS_NOT_PARKED (409) unless parked as FAILED,
		 *   SAGAS_STOCK_COMMITTED (409) when inventory already committed the order's stock (redrive
		 *   it forward instead), AUTH_FORBIDDEN (403)
		 * @emits saga.compensating (`step: "operator"`); later order.cancelled (durable)
		 */
		refundAndCancelSaga: {
			params: { $$strict: true, id: { type: "uuid" }, ...operatorParams },
			async handler(
				this: OrdersThis,
				ctx: ShopContext<{ id: string; note?: string }>
			): Promise<SagaView> {
				const who = operatorOf(ctx);
				const saga = await this.getSaga(ctx.params.id);
				if (!saga) throw shopError("SAGAS_NOT_FOUND");
				ctx.meta.$statusCode = 202;
				if (await this.sagaRefundRequested(saga.id)) return this.sagaView(saga);
				if (saga.status !== "FAILED")
					throw shopError("SAGAS_NOT_PARKED", undefined, { status: saga.status });
				// A parked refund saga goes forward only (redrive it): it has nothing to undo.
				if (saga.name !== "order")
					throw shopError(
						"SAGAS_NOT_PARKED",
						`A parked ${saga.name} saga is redriven, not refunded and cancelled`,
						{ status: saga.status, name: saga.name }
					);
				const orderId = sagaOrderId(saga);
				// Committed stock cannot be released (inventory has no way to take a commit back):
				// refunding would leave the order's stock shipped and its money returned.
				if (orderId) {
					const held: { status?: string } | null = await ctx.call(
						"inventory.getReservation",
						{ orderId }
					);
					if (held?.status === "COMMITTED")
						throw shopError("SAGAS_STOCK_COMMITTED", undefined, { orderId });
				}
				const reason = saga.failureReason ?? OPERATOR_REFUNDED;
				const record: SagaErrorRecord = {
					step: "operator",
					phase: "compensate",
					type: "SAGA_REFUND_AND_CANCEL",
					code: null,
					message: `Refund and cancel requested by ${who.actor}`,
					at: new Date().toISOString()
				};
				const rows = (await fastQuery(
					this.sequelize,
					`WITH s AS (UPDATE sagas SET status = 'COMPENSATING', failure_reason = $2, updated_at = now(),
						lease_owner = NULL, lease_expires_at = NULL, redrives = redrives + 1,
						errors = errors || jsonb_build_array($3::jsonb)
					 WHERE id = $1 AND status = 'FAILED' RETURNING id)
					 INSERT INTO saga_interventions (saga_id, order_id, action, actor_id, actor, note)
					 SELECT id, $4, 'REFUND_AND_CANCEL', $5, $6, $7 FROM s RETURNING saga_id AS id`,
					{
						bind: [
							saga.id,
							reason,
							JSON.stringify(record),
							orderId,
							who.actorId,
							who.actor,
							ctx.params.note ?? null
						],
						type: QueryTypes.SELECT
					}
				)) as { id: string }[];
				if (!rows[0]) {
					// A concurrent call won: answer what it did.
					const now = await this.getSaga(saga.id);
					if (now && (await this.sagaRefundRequested(saga.id))) return this.sagaView(now);
					throw shopError("SAGAS_NOT_PARKED", undefined, { status: now?.status });
				}
				const compensating: SagaInstance = {
					...saga,
					status: "COMPENSATING",
					failureReason: reason,
					redrives: saga.redrives + 1
				};
				this.logger.warn(
					`Saga ${saga.id} (order ${orderId ?? "-"}): refund and cancel requested by ${who.actor}`
				);
				countMetric(this.broker, "sagaCompensations", { saga: saga.name, reason });
				await this.sagaEmit("saga.compensating", compensating, { step: "operator" });
				this.launchSaga(saga.id);
				return this.sagaView(compensating);
			}
		},

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
				this: OrdersThis,
				ctx: ShopContext<{ id: string; restock?: boolean; note?: string }>
			): Promise<OrderRefundView> {
				const who = operatorOf(ctx);
				const { id } = ctx.params;
				const order = await this.findOrder(id);
				if (!order) throw shopError("ORDERS_NOT_FOUND", undefined, { id });
				ctx.meta.$statusCode = 202;
				if (order.status === "REFUNDING" || order.status === "REFUNDED")
					return this.refundView(order);
				if (order.status !== "CONFIRMED")
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
				const created = await this.sequelize.transaction(async t => {
					// The order's row lock serialises concurrent refunds: the second finds it
					// REFUNDING and answers the first.
					const rows = (await fastQuery(
						this.sequelize,
						`UPDATE orders SET status = 'REFUNDING', updated_at = now()
						 WHERE id = $1 AND status = 'CONFIRMED' RETURNING id`,
						{ bind: [id], type: QueryTypes.SELECT, transaction: t }
					)) as { id: string }[];
					if (!rows[0]) return null;
					const saga = await this.createSaga("order-refund", data, {
						id: sagaId,
						deadlineMs: config().sagaDeadlineMs,
						requestId: ctx.requestID ?? null,
						parentSpanId: ctx.span?.id ?? null,
						transaction: t,
						// Nothing can refuse the pivot step yet: the order just turned REFUNDING.
						startFirstStep: true
					});
					await fastQuery(
						this.sequelize,
						`INSERT INTO saga_interventions (saga_id, order_id, action, actor_id, actor, note)
						 VALUES ($1, $2, 'REFUND', $3, $4, $5)`,
						{
							bind: [sagaId, id, who.actorId, who.actor, ctx.params.note ?? null],
							transaction: t
						}
					);
					return saga;
				});
				const now = await this.findOrder(id);
				if (!created) {
					if (now && (now.status === "REFUNDING" || now.status === "REFUNDED"))
						return this.refundView(now);
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
		},

		/**
		 * One order as operators see it (admin): the order with its customer's e-mail, its
		 * money (payments and ledger entries from `payments.forOrder`; `captured`, `refunded` in
		 * cents), its stock reservation (`inventory.getReservation`), the sagas that drove it
		 * (the order saga, a refund saga) and what operators did to it.
		 * @param id - the order's id
		 * @returns Order plus `{ customerEmail, payments: Payment[], ledger: [{ id, paymentId,
		 *   kind, amount, currency, createdAt }], captured, refunded, reservation: { orderId,
		 *   status, items, expiresAt } | null, sagas: SagaView[], interventions: [{ sagaId,
		 *   action, actorId, actor, note, at }], refund: OrderRefund | null }`
		 * @throws ORDERS_NOT_FOUND (404), AUTH_FORBIDDEN (403)
		 */
		adminGet: {
			params: { $$strict: true, id: { type: "uuid" } },
			async handler(
				this: OrdersThis,
				ctx: ShopContext<{ id: string }>
			): Promise<Record<string, unknown>> {
				if (ctx.meta.user && ctx.meta.user.role !== "admin")
					throw shopError("AUTH_FORBIDDEN");
				const order = await this.findOrder(ctx.params.id);
				if (!order) throw shopError("ORDERS_NOT_FOUND", undefined, { id: ctx.params.id });
				const audit = (await fastQuery(
					this.sequelize,
					`SELECT saga_id, action, actor_id, actor, note, created_at FROM saga_interventions
					 WHERE order_id = $1 ORDER BY id`,
					{ bind: [order.id], type: QueryTypes.SELECT }
				)) as {
					saga_id: string;
					action: SagaIntervention["action"];
					actor_id: string | null;
					actor: string;
					note: string | null;
					created_at: Date;
				}[];
				const sagaIds = [
					...new Set([
						...(order.saga_id ? [order.saga_id] : []),
						...audit.map(a => a.saga_id)
					])
				];
				const [money, reservation, sagas] = await Promise.all([
					ctx.call<OrderPayments, { orderId: string }>("payments.forOrder", {
						orderId: order.id
					}),
					ctx.call<unknown, { orderId: string }>("inventory.getReservation", {
						orderId: order.id
					}),
					Promise.all(sagaIds.map(sid => this.getSaga(sid)))
				]);
				const refunded = order.status === "REFUNDING" || order.status === "REFUNDED";
				return {
					...toOrderView(order),
					customerEmail: order.customer_email,
					payments: money.payments,
					ledger: money.ledger,
					captured: money.captured,
					refunded: money.refunded,
					reservation,
					sagas: sagas
						.filter((x): x is SagaInstance => x !== null)
						.map(x => this.sagaView(x)),
					interventions: audit.map(a => ({
						sagaId: a.saga_id,
						action: a.action,
						actorId: a.actor_id,
						actor: a.actor,
						note: a.note,
						at: new Date(a.created_at).toISOString()
					})),
					refund: refunded ? (await this.refundView(order)).refund : null
				};
			}
		},

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
				this: OrdersThis,
				ctx: ShopContext<{ limit: number }>
			): Promise<StuckOrders> {
				if (ctx.meta.user && ctx.meta.user.role !== "admin")
					throw shopError("AUTH_FORBIDDEN");
				return this.stuckOrders(ctx.params.limit);
			}
		}
	},

	methods: {
		/** `refund`'s answer for an order that is `REFUNDING` or `REFUNDED`. */
		async refundView(this: OrdersThis, order: OrderRow): Promise<OrderRefundView> {
			const rows = (await fastQuery(
				this.sequelize,
				`SELECT i.saga_id, i.actor_id, i.actor, i.note, i.created_at, s.status, s.data
				 FROM saga_interventions i LEFT JOIN sagas s ON s.id = i.saga_id
				 WHERE i.order_id = $1 AND i.action = 'REFUND'`,
				{ bind: [order.id], type: QueryTypes.SELECT }
			)) as {
				saga_id: string;
				actor_id: string | null;
				actor: string;
				note: string | null;
				created_at: Date;
				status: SagaStatus | null;
				data: Partial<OrderRefundSagaData> | null;
			}[];
			const r = rows[0];
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
		},

		/** The stuck orders (see the `stuck` action), at most `limit` listed. */
		async stuckOrders(this: OrdersThis, limit: number): Promise<StuckOrders> {
			const thresholdMs = config().ordersStuckAfterMs;
			// Open orders are the unsettled ones (partial index 906) and the refunds in flight
			// (the REFUND audit rows, one per order): neither scan reads settled orders.
			const open = `WITH open AS (
				SELECT o.*, o.created_at AS since, o.saga_id AS driver FROM orders o
				 WHERE NOT o.settled AND o.created_at < now() - $1::float8 * interval '1 millisecond'
				UNION ALL
				SELECT o.*, i.created_at AS since, i.saga_id AS driver
				 FROM saga_interventions i JOIN orders o ON o.id = i.order_id
				 WHERE i.action = 'REFUND' AND o.status = 'REFUNDING'
				   AND i.created_at < now() - $1::float8 * interval '1 millisecond')`;
			const [counted, listed] = await Promise.all([
				fastQuery(
					this.sequelize,
					`${open} SELECT status, count(*)::int AS n FROM open GROUP BY status`,
					{ bind: [thresholdMs], type: QueryTypes.SELECT }
				) as Promise<{ status: string; n: number }[]>,
				fastQuery(
					this.sequelize,
					`${open} SELECT open.*, now() AS db_now, s.name AS saga_name, s.status AS saga_status
					 FROM open LEFT JOIN sagas s ON s.id = open.driver ORDER BY open.since, open.id LIMIT $2`,
					{ bind: [thresholdMs, limit], type: QueryTypes.SELECT }
				) as Promise<
					(OrderRow & {
						since: Date;
						driver: string | null;
						db_now: Date;
						saga_name: string | null;
						saga_status: SagaStatus | null;
					})[]
				>
			]);
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

		/** Sets the `shop_orders_stuck{status}` gauge from the database. */
		async countStuckOrders(this: OrdersThis): Promise<void> {
			const { counts } = await this.stuckOrders(1);
			for (const [status, n] of Object.entries(counts))
				setMetric(this.broker, "ordersStuck", n, { status });
		},

		/**
		 * Refund saga step `beginRefund`, its pivot: the order is `REFUNDING` (the transaction
		 * that created the saga made it so) and this run holds the saga's lease. From here the
		 * refund only goes forward. Repeating it is a no-op success.
		 * @throws ORDERS_NOT_REFUNDABLE (business: nothing to undo) when the order is in another
		 *   status, SagaLeaseLostError when this run no longer holds the saga
		 */
		async passRefundPivot(
			this: OrdersThis,
			saga: SagaInstance<OrderRefundSagaData>
		): Promise<{ status: OrderStatus }> {
			const rows = (await fastQuery(
				this.sequelize,
				`SELECT o.status, EXISTS (SELECT 1 FROM sagas
					WHERE id = $2 AND lease_owner = $3 AND status = 'RUNNING') AS owned
				 FROM orders o WHERE o.id = $1`,
				{ bind: [saga.data.orderId, saga.id, saga.leaseOwner], type: QueryTypes.SELECT }
			)) as { status: OrderStatus; owned: boolean }[];
			const row = rows[0];
			if (row && !row.owned) throw new SagaLeaseLostError(saga.id);
			if (row?.status !== "REFUNDING" && row?.status !== "REFUNDED")
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
			this: OrdersThis,
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
			this: OrdersThis,
			saga: SagaInstance<OrderRefundSagaData>,
			t: Transaction
		): Promise<void> {
			const rows = (await fastQuery(
				this.sequelize,
				`UPDATE orders SET status = 'REFUNDED', updated_at = now()
				 WHERE id = $1 AND status = 'REFUNDING' RETURNING *`,
				{ bind: [saga.data.orderId], type: QueryTypes.SELECT, transaction: t }
			)) as OrderRow[];
			const row = rows[0];
			if (!row) return; // already REFUNDED (a repeat of the final transaction)
			const { amount, currency, restock } = saga.data;
			await this.enqueueEvent(
				t,
				"order.refunded",
				{ ...orderEvent(row), refund: { amount, currency, restock } },
				{ aggregateId: row.id, requestId: saga.requestId }
			);
			t.afterCommit(() =>
				countMetric(this.broker, "ordersRefunded", { restock: String(restock) })
			);
		},

		/** What operators did to saga `id`, oldest first. */
		async sagaInterventions(this: OrdersThis, id: string): Promise<SagaIntervention[]> {
			const rows = (await fastQuery(
				this.sequelize,
				"SELECT action, actor_id, actor, note, created_at FROM saga_interventions WHERE saga_id = $1 ORDER BY id",
				{ bind: [id], type: QueryTypes.SELECT }
			)) as {
				action: SagaIntervention["action"];
				actor_id: string | null;
				actor: string;
				note: string | null;
				created_at: Date;
			}[];
			return rows.map(r => ({
				action: r.action,
				actorId: r.actor_id,
				actor: r.actor,
				note: r.note,
				at: new Date(r.created_at).toISOString()
			}));
		},

		/** Whether an operator asked to refund and cancel saga `id`. */
		async sagaRefundRequested(this: OrdersThis, id: string): Promise<boolean> {
			const rows = await fastQuery(
				this.sequelize,
				"SELECT 1 FROM saga_interventions WHERE saga_id = $1 AND action = 'REFUND_AND_CANCEL'",
				{ bind: [id], type: QueryTypes.SELECT }
			);
			return rows.length > 0;
		},

		async findOrder(this: OrdersThis, id: string, t?: Transaction): Promise<OrderRow | null> {
			const rows = (await fastQuery(this.sequelize, "SELECT * FROM orders WHERE id = $1", {
				bind: [id],
				type: QueryTypes.SELECT,
				transaction: t
			})) as OrderRow[];
			return rows[0] ?? null;
		},

		/** The order if the caller owns it or is an admin (internal calls: any); else 404. */
		async findOwnOrder(this: OrdersThis, ctx: ShopContext, id: string): Promise<OrderRow> {
			const row = await this.findOrder(id);
			const user = ctx.meta.user;
			if (!row || (user && user.role !== "admin" && row.user_id !== user.id))
				throw shopError("ORDERS_NOT_FOUND", undefined, { id });
			return row;
		},

		sagaView(this: OrdersThis, s: SagaInstance): SagaView {
			let def: SagaDefinition | undefined;
			try {
				def = this.sagaDefinition(s.name, s.version);
			} catch {
				def = undefined; // a version not deployed on this node
			}
			return {
				id: s.id,
				name: s.name,
				version: s.version,
				status: s.status,
				currentStep: s.currentStep,
				currentStepName: def?.steps[s.currentStep]?.name ?? null,
				orderId: typeof s.data.orderId === "string" ? s.data.orderId : null,
				failureReason: s.failureReason,
				attempts: s.attempts,
				errors: s.errors,
				deadlineAt: new Date(s.deadlineAt).toISOString(),
				createdAt: new Date(s.createdAt).toISOString(),
				updatedAt: new Date(s.updatedAt).toISOString()
			};
		},

		/**
		 * Saga step `confirmOrder`: the pivot, the order becomes `CONFIRMING`. One statement,
		 * fenced on this run's lease of the saga (it locks the saga's row, so a node recovering the
		 * saga either sees the pivot passed or keeps this run from passing it). Repeating it is a
		 * no-op success.
		 * @throws ORDERS_CANCEL_REQUESTED when the customer asked to cancel,
		 *   INVENTORY_RESERVATION_EXPIRED when the order's reservation was given up
		 *   (`lapseReservations`), SagaLeaseLostError when this run no longer holds the saga
		 */
		async passPivot(
			this: OrdersThis,
			saga: SagaInstance<OrderSagaData>
		): Promise<{ status: OrderStatus }> {
			const orderId = saga.data.orderId;
			const rows = (await fastQuery(
				this.sequelize,
				`WITH s AS (SELECT id FROM sagas WHERE id = $2 AND lease_owner = $3 AND status = 'RUNNING' FOR UPDATE)
				 UPDATE orders SET status = 'CONFIRMING', updated_at = now()
				 WHERE id = $1 AND NOT cancel_requested AND NOT reservation_lapsed
				   AND status IN ('PENDING', 'STOCK_RESERVED', 'PAID', 'CONFIRMING') AND EXISTS (SELECT 1 FROM s)
				 RETURNING id`,
				{ bind: [orderId, saga.id, saga.leaseOwner], type: QueryTypes.SELECT }
			)) as { id: string }[];
			if (rows[0]) return { status: "CONFIRMING" };
			// Refused: say why (the refusal path only).
			const why = (await fastQuery(
				this.sequelize,
				`SELECT o.reservation_lapsed, EXISTS (SELECT 1 FROM sagas
					WHERE id = $2 AND lease_owner = $3 AND status = 'RUNNING') AS owned
				 FROM orders o WHERE o.id = $1`,
				{ bind: [orderId, saga.id, saga.leaseOwner], type: QueryTypes.SELECT }
			)) as { reservation_lapsed: boolean; owned: boolean }[];
			if (why[0] && !why[0].owned) throw new SagaLeaseLostError(saga.id);
			if (why[0]?.reservation_lapsed)
				throw shopError(
					"INVENTORY_RESERVATION_EXPIRED",
					"The order's reservation lapsed before its pivot",
					{ orderId }
				);
			throw shopError("ORDERS_CANCEL_REQUESTED", undefined, { orderId });
		},

		/** Saga hook: the order is CONFIRMED and `order.confirmed` goes to the outbox (one transaction). */
		async onOrderConfirmed(
			this: OrdersThis,
			saga: SagaInstance<OrderSagaData>,
			t: Transaction
		): Promise<void> {
			const rows = (await fastQuery(
				this.sequelize,
				`UPDATE orders SET status = 'CONFIRMED', settled = true, updated_at = now() WHERE id = $1 RETURNING *`,
				{ bind: [saga.data.orderId], type: QueryTypes.SELECT, transaction: t }
			)) as OrderRow[];
			await this.enqueueOrderEvent("order.confirmed", saga, rows[0], t);
			t.afterCommit(() => countMetric(this.broker, "ordersConfirmed"));
		},

		/** Saga hook: the order is CANCELLED and `order.cancelled` goes to the outbox (one transaction). */
		async onOrderCancelled(
			this: OrdersThis,
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
			const rows = (await fastQuery(
				this.sequelize,
				`UPDATE orders SET status = 'CANCELLED', settled = true, updated_at = now(),
					cancellation_reason = CASE WHEN cancel_requested THEN 'CANCELLED_BY_CUSTOMER' ELSE $2 END
				 WHERE id = $1 AND (status NOT IN ('CONFIRMING', 'CONFIRMED')
					OR (status = 'CONFIRMING' AND EXISTS (SELECT 1 FROM saga_interventions
						WHERE saga_id = $3 AND action = 'REFUND_AND_CANCEL')))
				 RETURNING *`,
				{
					bind: [saga.data.orderId, reason ?? "PROCESSING_FAILED", saga.id],
					type: QueryTypes.SELECT,
					transaction: t
				}
			)) as OrderRow[];
			if (!rows[0]) {
				const now = await this.findOrder(saga.data.orderId, t);
				if (now)
					// Rolls the saga's completion back: it stays COMPENSATING, for an operator.
					throw new Error(
						`Order ${now.id} is ${now.status}: past its pivot, a compensation may not cancel it`
					);
			}
			await this.enqueueOrderEvent("order.cancelled", saga, rows[0], t);
			const cancelled = rows[0]?.cancellation_reason;
			if (cancelled)
				t.afterCommit(() =>
					countMetric(this.broker, "ordersCancelled", { reason: cancelled })
				);
		},

		/**
		 * Writes `order.confirmed` / `order.cancelled` to the outbox, in the saga's final
		 * transaction. `row`: the order as that transaction just updated it.
		 */
		async enqueueOrderEvent(
			this: OrdersThis,
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
		}
	}
};

export default createOrdersService();
