/**
 * `orders`: takes orders and runs the order saga (SagaMixin) that coordinates `inventory` and
 * `payments`; the sagas read top to bottom in ./order.saga.ts, the order's statuses and which may
 * follow which in ./order.state.ts.
 *
 * This file is the service: its schema, the customers' actions (`create`, `get`, `list`,
 * `cancel`), inventory's `lapseReservations` and the REPL's `recent`. Around it, in this folder:
 * ./orders.repo.ts (all its SQL), ./orders.model.ts (the types others may import),
 * ./order.steps.ts (the saga's own steps and hooks), and the operators' mixins
 * ./orders.admin.ts (sagas, redrive, refund and cancel, `adminGet`), ./orders.refund.ts (refunds),
 * ./orders.stuck.ts (stuck orders).
 *
 * Prices come from the catalog (`products.resolve`), never from the client (./order.placement.ts).
 * Money: integer cents with an ISO 4217 currency. A client `Idempotency-Key` (per caller) returns
 * the same order on a repeat (the IETF "Idempotency-Key HTTP Header Field" draft; Stripe's
 * idempotent requests).
 *
 * Events emitted, durably (transactional outbox, mixins/events.mixin.ts: written in the same
 * transaction as the order's change, published to JetStream by the relay): `order.created`,
 * `order.confirmed`, `order.cancelled`, each `{ order }` where `order` is the order view plus
 * `customerEmail`; `order.refunded` `{ order, refund: { amount, currency, restock } }` (cents).
 */
import crypto from "node:crypto";
import type { Service } from "moleculer";
import { AdmissionQueue } from "../../platform/admission-queue";
import { AdaptiveConcurrencyLimit } from "../../platform/concurrency-limit";
import { config } from "../../platform/config";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import { countMetric, registerMetrics } from "../../platform/metrics";
import { pageParams, toPage, type Page } from "../../platform/paging";
import { DbMixin, type DbMixinMethods } from "../../mixins/db.mixin";
import { OutboxMixin, outboxMigrations, type OutboxMethods } from "../../mixins/events.mixin";
import {
	SagaMixin,
	type SagaInstance,
	type SagaMixinMethods,
	type SagaMixinOptions
} from "../../mixins/saga.mixin";
import type { Product } from "../products/products.model";
import { ordersMigrations } from "./migrations";
import { customerLimitOf, distinctProductIds, priceOrder, requestHash } from "./order.placement";
import { orderRefundSaga, orderSaga, type OrderSagaData } from "./order.saga";
import { ORDER_TRANSITIONS } from "./order.state";
import { orderSagaSteps, type OrderStepsMethods } from "./order.steps";
import { OrdersAdminMixin, type OrdersAdminMethods } from "./orders.admin";
import type { Order } from "./orders.model";
import { OrdersRefundMixin, type OrdersRefundMethods } from "./orders.refund";
import { orderEvent, OrdersRepo, toOrderView, type OrderRow } from "./orders.repo";
import { OrdersStuckMixin, type OrdersStuckMethods } from "./orders.stuck";

/** The service's own methods. */
interface OrdersMethods {
	/** The order if the caller owns it or is an admin (internal calls: any); else 404. */
	findOwnOrder(ctx: ShopContext, id: string): Promise<OrderRow>;
	/** Sagas in flight this node admits now: the adaptive limit, or SAGA_MAX_IN_FLIGHT when off. */
	sagaLimit(): number;
}

/** `this` of the orders service: Moleculer's service, its mixins' methods and its own. */
type OrdersThis = Service &
	DbMixinMethods &
	SagaMixinMethods &
	OutboxMethods &
	OrderStepsMethods &
	OrdersAdminMethods &
	OrdersRefundMethods &
	OrdersStuckMethods &
	OrdersMethods & {
		/** The orders database (./orders.repo.ts), set in `created`. */
		repo: OrdersRepo;
		/** The `shop_orders_stuck` recount timer (`ORDERS_STUCK_CHECK_INTERVAL_MS`). */
		$stuckTimer?: NodeJS.Timeout | null;
		/**
		 * Admission: the adaptive limit on this node's sagas in flight, fed with each order
		 * saga's 202 → end latency (`SAGA_TARGET_LATENCY_MS`); null when that is 0 (off).
		 */
		$admission: AdaptiveConcurrencyLimit | null;
		/**
		 * Admission at that limit: an order finding it reached waits up to
		 * `SAGA_ADMISSION_WAIT_MS` for a slot before its 503 (platform/admission-queue.ts).
		 */
		$admissionQueue: AdmissionQueue;
	};

function requireUser(ctx: ShopContext): NonNullable<ShopContext["meta"]["user"]> {
	if (!ctx.meta.user) throw shopError("AUTH_TOKEN_MISSING");
	return ctx.meta.user;
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
				migrations: [...ordersMigrations, ...outboxMigrations]
			}),
			OutboxMixin(),
			SagaMixin({
				leaseMs: config().sagaLeaseMs,
				recoveryIntervalMs: config().sagaRecoveryIntervalMs,
				faults: config().sagaFaults,
				...sagaOptions
			}),
			OrdersAdminMixin,
			OrdersRefundMixin,
			OrdersStuckMixin
		],
		sagas: { order: orderSaga(), "order-refund": orderRefundSaga() }
	};
}

const OrdersService: ShopServiceSchema<OrdersThis> = {
	name: "orders",

	sagas: { order: orderSaga(), "order-refund": orderRefundSaga() },

	/** Business metrics (platform/metrics.ts) start at 0 on this node; the repository. */
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
		this.repo = new OrdersRepo(this.db);
		const c = config();
		this.$admission =
			c.sagaTargetLatencyMs > 0
				? new AdaptiveConcurrencyLimit({
						targetLatencyMs: c.sagaTargetLatencyMs,
						minLimit: Math.min(c.sagaMinInFlight, c.sagaMaxInFlight),
						maxLimit: c.sagaMaxInFlight
					})
				: null;
		this.$admissionQueue = new AdmissionQueue({
			load: () => this.sagaLoad(),
			limit: () => this.sagaLimit(),
			maxWaitMs: c.sagaAdmissionWaitMs
		});
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
		this.$admissionQueue.refuseAll();
	},

	actions: {
		/**
		 * Places an order for the caller and starts its saga; answers at once.
		 * @param items - 1 to 50 `{ productId, quantity }` (quantity 1 to 1000), no product twice
		 * @param paymentMethod - a payments test token, e.g. `tok_visa`
		 * Meta `idempotencyKey` (the `Idempotency-Key` header): a repeat returns the same order.
		 * @returns 202 Order with `status: "PENDING"`
		 * @throws ORDERS_OVERLOADED (503, Retry-After; `data: { inFlight, limit, max }`) when this
		 *   node's sagas in flight reach its limit: adaptive (platform/concurrency-limit.ts, kept
		 *   so that sagas take about SAGA_TARGET_LATENCY_MS), between SAGA_MIN_IN_FLIGHT and
		 *   SAGA_MAX_IN_FLIGHT; an order finding the limit reached waits up to
		 *   SAGA_ADMISSION_WAIT_MS (ms) for a slot, then is refused, nothing stored,
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
				// Backpressure: a bounded number of sagas per node, a short wait for a slot at the
				// limit, then a refusal the client retries after Retry-After (platform/admission-queue.ts).
				const ticket = await this.$admissionQueue.enter();
				if (!ticket)
					throw shopError("ORDERS_OVERLOADED", undefined, {
						inFlight: this.sagaLoad() + this.$admissionQueue.admitted,
						limit: this.sagaLimit(),
						max: config().sagaMaxInFlight
					});
				// The slot is the ticket's until the saga is launched (it then counts in sagaLoad),
				// or free again when the order was not placed (a replay, a refusal, an error).
				try {
					const { items, paymentMethod } = ctx.params;
					const ids = distinctProductIds(items);
					const key = ctx.meta.idempotencyKey ?? null;
					const hash = requestHash(items, paymentMethod);
					if (key) {
						const prior = await this.repo.findByIdempotencyKey(user.id, key);
						if (prior) {
							if (prior.request_hash !== hash)
								throw shopError("ORDERS_IDEMPOTENCY_KEY_REUSED");
							ctx.meta.$statusCode = 202;
							return toOrderView(prior);
						}
					}

					const products: Product[] = await ctx.call("products.resolve", { ids });
					const { lines, total, units, currency } = priceOrder(items, products);
					const orderId = crypto.randomUUID();
					const sagaId = crypto.randomUUID();

					const now = new Date();
					const row: OrderRow = {
						id: orderId,
						user_id: user.id,
						customer_email: user.email,
						status: ORDER_TRANSITIONS.place.to,
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
								this.repo.insert(row, {
									units,
									maxInFlight: config().ordersMaxInFlightPerCustomer,
									maxUnits: config().ordersMaxUnitsReservedPerCustomer
								}),
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
							const prior = await this.repo.findByIdempotencyKey(user.id, key);
							if (prior && prior.request_hash === hash) {
								ctx.meta.$statusCode = 202;
								return toOrderView(prior);
							}
							throw shopError("ORDERS_IDEMPOTENCY_KEY_REUSED");
						}
						throw err;
					}
					this.kickRelay();
					this.launchSaga(sagaId, { fresh: saga });
					this.$admission?.start(sagaId, this.sagaLoad(), performance.now());
					this.logger.info(
						`Order ${orderId} placed by user ${user.id}: ${lines.length} line(s), ${total} ${currency} (saga ${sagaId})`
					);
					countMetric(this.broker, "ordersCreated");
					ctx.meta.$statusCode = 202;
					return toOrderView(row);
				} finally {
					ticket.done();
				}
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
			): Promise<Page<Order>> {
				const user = requireUser(ctx);
				const { rows, total } = await this.repo.pageOfUser(user.id, ctx.params);
				return toPage(rows.map(toOrderView), total, ctx.params);
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
				const asked = await this.repo.requestCancel(own.id);
				if (!asked) {
					const now = await this.repo.find(own.id);
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
				return toOrderView(asked);
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
				return { kept: await this.repo.lapseReservations(ctx.params.orderIds) };
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
				return (await this.repo.recent(ctx.params.limit)).map(toOrderView);
			}
		}
	},

	methods: {
		...orderSagaSteps,

		async findOwnOrder(this: OrdersThis, ctx: ShopContext, id: string): Promise<OrderRow> {
			const row = await this.repo.find(id);
			const user = ctx.meta.user;
			if (!row || (user && user.role !== "admin" && row.user_id !== user.id))
				throw shopError("ORDERS_NOT_FOUND", undefined, { id });
			return row;
		},

		sagaLimit(this: OrdersThis): number {
			return this.$admission?.limit ?? config().sagaMaxInFlight;
		},

		/**
		 * The saga mixin's hook after a saga's final commit (COMPLETED, COMPENSATED or parked):
		 * an order saga launched here gives the admission limit its 202 → end latency sample.
		 */
		async sagaAfterCommit(this: OrdersThis, saga: SagaInstance): Promise<void> {
			if (saga.name === "order") this.$admission?.end(saga.id, performance.now());
			// Its slot frees once this run has returned (the runner's bookkeeping, a few
			// microtasks on): then the next waiting order may start.
			setImmediate(() => this.$admissionQueue.ended());
		}
	}
};

export default createOrdersService();
