/**
 * `payments`: a simulated card processor with test tokens, the way real processors offer test
 * cards, and an append-only ledger in its own database.
 *
 * Test tokens (`paymentMethod`):
 * | token | outcome |
 * |---|---|
 * | `tok_visa`, `tok_mastercard`, `tok_amex` | approved: the amount is captured |
 * | `tok_chargeDeclined` | declined, `declineCode: "card_declined"` |
 * | `tok_chargeDeclinedInsufficientFunds` | declined, `declineCode: "insufficient_funds"` |
 * | `tok_processorUnavailable` | simulated fault: the processor is down for this payment, `PAYMENTS_PROCESSOR_UNAVAILABLE` (503, retryable, `data.scope: "request"`) |
 * | anything else | `PAYMENTS_INVALID_METHOD` (422) |
 *
 * Simulated faults (`PAYMENTS_SIMULATED_FAULTS`, platform/config.ts): on by default, OFF with
 * NODE_ENV=production unless that setting is `true`. Off, `tok_processorUnavailable` is refused
 * like any unknown token (`PAYMENTS_INVALID_METHOD`, 422: the order ends CANCELLED with
 * `PAYMENT_METHOD_INVALID`), and `simulateOutage` is refused (`AUTH_FORBIDDEN`): a customer
 * cannot make the shop's processor look down. On, `simulateOutage` makes every charge of this
 * node fail for a while (`data.scope: "processor"`), the way a real processor outage would.
 *
 * Circuit breaker (platform/db/database-unavailable.ts `circuitBreakerFailure`): only the processor's
 * failures count against `payments.charge` (`scope: "processor"`); a failure tied to one
 * payment (`scope: "request"`) does not, so one customer's outage-token orders (a dozen opened
 * the breaker before, and every honest order then waited for its half-open time) cannot refuse
 * another customer's card.
 *
 * `charge` captures at once (authorise-and-capture in one call). Idempotency, in two layers:
 * - by idempotency key (`ctx.meta.idempotencyKey`, see `IdempotencyMixin`): `charge` and `refund`
 *   apply a key at most once, its record committed in the same transaction as the payment and
 *   ledger rows; a repeat of the key answers the first outcome, a decline included (the `DECLINED`
 *   payment is kept and `PAYMENTS_CARD_DECLINED` replays), even if the payment moved on since
 *   (a charge's key still answers `CAPTURED` after a refund); a transient failure
 *   (`PAYMENTS_PROCESSOR_UNAVAILABLE`) stores nothing, so a retry with the key charges; a key
 *   used for another action is refused with `IDEMPOTENCY_KEY_CONFLICT`. An unknown token is
 *   refused before anything runs (`PAYMENTS_INVALID_METHOD`, not stored);
 * - by order id, underneath: one payment per order, a repeat answers its current outcome. A
 *   `refund` that arrives before its `charge` leaves a `VOIDED` tombstone so the late charge is
 *   refused.
 * Money: integer cents with an ISO 4217 currency.
 *
 * Events emitted (only when the effect happens, never on a replay), durably (transactional
 * outbox, mixins/events.mixin.ts: written in the same transaction as the payment and its ledger
 * entry): `payment.captured`, `payment.declined`, `payment.refunded`, each with the payment.
 */
import type { Service } from "moleculer";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { config } from "../../platform/config";
import { shopError } from "../../platform/errors";
import { countMetric, registerMetrics } from "../../platform/metrics";
import { DbMixin, type DbMixinMethods } from "../../mixins/db.mixin";
import { OutboxMixin, outboxMigrations, type OutboxMethods } from "../../mixins/events.mixin";
import {
	IdempotencyMixin,
	idempotencyMigrations,
	type IdempotencyMixinMethods,
	type IdempotentOutcome
} from "../../mixins/idempotency.mixin";
import type { Payment, OrderPayments } from "./payments.model";
import { paymentView as toView, PaymentsRepo, type PaymentRow } from "./payments.repo";
import { paymentsMigrations } from "./migrations";
import { processorOutcome, SIMULATED_FAULT_TOKENS } from "./simulated-processor";

type PaymentsThis = Service & {
	/** End of this node's simulated processor outage (`simulateOutage`), epoch ms; 0: none. */
	outageUntil: number;
	/** The payments database's statements. */
	repo: PaymentsRepo;
} & DbMixinMethods &
	IdempotencyMixinMethods &
	OutboxMethods;

function declined(r: PaymentRow): Error {
	return shopError("PAYMENTS_CARD_DECLINED", "The card was declined", {
		orderId: r.order_id,
		declineCode: r.decline_code
	});
}

/**
 * What `charge` answers for the order's payment `r`: the capture, its decline, or a conflict
 * (refunded/voided, or charged another amount).
 */
function chargeOutcome(
	r: PaymentRow,
	amount: number,
	currency: string
): IdempotentOutcome<Payment> {
	const orderId = r.order_id;
	if (r.status === "DECLINED") return { error: declined(r) };
	if (r.status !== "CAPTURED")
		return {
			error: shopError("PAYMENTS_CONFLICT", `The order's payment is ${r.status}`, {
				orderId,
				status: r.status
			})
		};
	if (r.amount !== amount || r.currency.trim() !== currency)
		return {
			error: shopError("PAYMENTS_CONFLICT", "The order was charged another amount", {
				orderId
			})
		};
	return { response: toView(r) };
}

const PaymentsService: ShopServiceSchema<PaymentsThis> = {
	name: "payments",
	mixins: [
		DbMixin({
			service: "payments",
			migrations: [...paymentsMigrations, ...idempotencyMigrations, ...outboxMigrations]
		}),
		IdempotencyMixin(),
		OutboxMixin()
	],

	/** Business metrics (platform/metrics.ts) start at 0 on this node. */
	created(this: PaymentsThis): void {
		registerMetrics(this.broker, ["payments"]);
		this.outageUntil = 0;
		this.repo = new PaymentsRepo(this.db);
	},

	actions: {
		/**
		 * Charges (authorises and captures) an order's amount. Idempotent by
		 * `ctx.meta.idempotencyKey` (the first outcome, a decline included, is replayed) and by
		 * `orderId`.
		 * @param amount - integer cents, 0 to 2 147 483 647
		 * @param currency - ISO 4217
		 * @param paymentMethod - a test token (see the table above)
		 * @returns Payment with `status: "CAPTURED"`
		 * @throws PAYMENTS_CARD_DECLINED (402, `data.declineCode`), PAYMENTS_INVALID_METHOD (422;
		 *   a simulated-fault token when simulated faults are off too), PAYMENTS_PROCESSOR_UNAVAILABLE
		 *   (503, retryable; `data.scope`: `"processor"` during a `simulateOutage`, counted by the
		 *   circuit breaker, `"request"` for `tok_processorUnavailable`, not counted),
		 *   PAYMENTS_CONFLICT (409) when the order's
		 *   payment was refunded/voided or had another amount, IDEMPOTENCY_KEY_CONFLICT (409) when
		 *   the key was used for another action
		 * @emits payment.captured | payment.declined
		 */
		charge: {
			visibility: "public",
			params: {
				$$strict: true,
				orderId: { type: "uuid" },
				amount: { type: "number", integer: true, min: 0, max: 2_147_483_647 },
				currency: { type: "string", pattern: /^[A-Z]{3}$/ },
				paymentMethod: { type: "string", min: 1, max: 100 }
			},
			async handler(
				this: PaymentsThis,
				ctx: ShopContext<{
					orderId: string;
					amount: number;
					currency: string;
					paymentMethod: string;
				}>
			): Promise<Payment> {
				const { orderId, amount, currency, paymentMethod } = ctx.params;
				const simulatedFaults = config().paymentsSimulatedFaults;
				const outcome = processorOutcome(paymentMethod, simulatedFaults);
				if (!outcome)
					throw shopError(
						"PAYMENTS_INVALID_METHOD",
						SIMULATED_FAULT_TOKENS.includes(paymentMethod)
							? "Simulated-fault payment tokens are off (PAYMENTS_SIMULATED_FAULTS)"
							: undefined,
						{ paymentMethod }
					);
				return this.withIdempotency(
					ctx,
					"payments.charge",
					async (t, read) => {
						const existing = this.repo.paymentOf(read);
						if (existing) return chargeOutcome(existing, amount, currency);
						// The whole processor down (every card): the breaker counts it.
						if (simulatedFaults && this.outageUntil > Date.now())
							throw shopError("PAYMENTS_PROCESSOR_UNAVAILABLE", undefined, {
								orderId,
								scope: "processor"
							});
						// Down for this payment only (its token): not the endpoint's failure.
						if ("unavailable" in outcome)
							throw shopError(
								"PAYMENTS_PROCESSOR_UNAVAILABLE",
								"The card processor is unavailable for this payment (simulated)",
								{ orderId, scope: "request" }
							);
						const row = await this.repo.insertPayment(t, {
							order_id: orderId,
							amount,
							currency,
							method: paymentMethod,
							status: outcome.approve ? "CAPTURED" : "DECLINED",
							decline_code: outcome.approve ? null : outcome.declineCode
						});
						if (row.status === "CAPTURED")
							// With the key's record (platform/db/deferred-writes.ts): no answer needed.
							await this.repo.recordCapture(t, {
								paymentId: row.id,
								orderId,
								amount,
								currency
							});
						await this.enqueueEvent(
							t,
							row.status === "CAPTURED" ? "payment.captured" : "payment.declined",
							toView(row),
							{ aggregateId: orderId, requestId: ctx.requestID ?? null }
						);
						return {
							...chargeOutcome(row, amount, currency),
							afterCommit: async () => {
								this.logger.info(
									`Payment ${row.status} for order ${orderId}: ${amount} ${currency}${row.decline_code ? ` (${row.decline_code})` : ""}`
								);
								countMetric(this.broker, "payments", {
									outcome: row.status.toLowerCase()
								});
							}
						};
					},
					// The order's calls (charge, refund) take turns: the key's claim takes the order's
					// advisory lock, so they see each other's payment row (or its absence).
					{ lock: orderId, read: this.repo.paymentRead(orderId) }
				);
			}
		},

		/**
		 * Refunds an order's captured payment in full (saga compensation). Idempotent by
		 * `ctx.meta.idempotencyKey` and by `orderId`. Refunding an order never charged (or
		 * declined) is a no-op success.
		 * @returns Payment with status `REFUNDED`, `DECLINED` or `VOIDED` (nothing had been charged)
		 * @throws IDEMPOTENCY_KEY_CONFLICT (409) when the key was used for another action
		 * @emits payment.refunded (only when money moves)
		 */
		refund: {
			visibility: "public",
			params: { $$strict: true, orderId: { type: "uuid" } },
			async handler(
				this: PaymentsThis,
				ctx: ShopContext<{ orderId: string }>
			): Promise<Payment> {
				const { orderId } = ctx.params;
				return this.withIdempotency(
					ctx,
					"payments.refund",
					async (t, read) => {
						const existing = this.repo.paymentOf(read);
						if (!existing) {
							const row = await this.repo.insertPayment(t, {
								order_id: orderId,
								amount: 0,
								currency: "XXX",
								method: "none",
								status: "VOIDED",
								decline_code: null
							});
							return { response: toView(row) };
						}
						if (existing.status !== "CAPTURED") return { response: toView(existing) };
						const refunded = await this.repo.markRefunded(t, existing.id);
						await this.repo.recordRefund(t, {
							paymentId: existing.id,
							orderId,
							amount: existing.amount,
							currency: existing.currency
						});
						const payment = toView(refunded);
						await this.enqueueEvent(t, "payment.refunded", payment, {
							aggregateId: orderId,
							requestId: ctx.requestID ?? null
						});
						return {
							response: payment,
							afterCommit: async () => {
								this.logger.info(
									`Payment REFUNDED for order ${orderId}: ${payment.amount} ${payment.currency}`
								);
								countMetric(this.broker, "payments", { outcome: "refunded" });
							}
						};
					},
					// The order's calls (charge, refund) take turns: the key's claim takes the order's
					// advisory lock, so they see each other's payment row (or its absence).
					{ lock: orderId, read: this.repo.paymentRead(orderId) }
				);
			}
		},

		/**
		 * Simulates an outage of the whole processor on this node (operators, tests; not
		 * published over REST): for `durationMs` every charge fails with
		 * `PAYMENTS_PROCESSOR_UNAVAILABLE` (`data.scope: "processor"`, counted by the circuit
		 * breaker); a replay of a recorded payment still answers. `durationMs: 0` ends it.
		 * @param durationMs - how long, in ms (0 to 3 600 000)
		 * @returns `{ until }`: the outage's end (ISO 8601), null when none
		 * @throws AUTH_FORBIDDEN (403) when simulated faults are off (PAYMENTS_SIMULATED_FAULTS)
		 */
		simulateOutage: {
			visibility: "public",
			params: {
				$$strict: true,
				durationMs: { type: "number", integer: true, min: 0, max: 3_600_000 }
			},
			async handler(
				this: PaymentsThis,
				ctx: ShopContext<{ durationMs: number }>
			): Promise<{ until: string | null }> {
				if (!config().paymentsSimulatedFaults)
					throw shopError(
						"AUTH_FORBIDDEN",
						"Simulated faults are off (PAYMENTS_SIMULATED_FAULTS)"
					);
				const { durationMs } = ctx.params;
				this.outageUntil = durationMs > 0 ? Date.now() + durationMs : 0;
				this.logger.warn(
					durationMs > 0
						? `Simulated processor outage for ${durationMs} ms`
						: "Simulated processor outage ended"
				);
				return {
					until: this.outageUntil ? new Date(this.outageUntil).toISOString() : null
				};
			}
		},

		/**
		 * An order's payment (operators, tests; not published over REST).
		 * @returns Payment or null
		 */
		get: {
			visibility: "public",
			params: { $$strict: true, orderId: { type: "uuid" } },
			async handler(
				this: PaymentsThis,
				ctx: ShopContext<{ orderId: string }>
			): Promise<Payment | null> {
				const row = await this.repo.transaction(t =>
					this.repo.findPayment(ctx.params.orderId, t)
				);
				return row ? toView(row) : null;
			}
		},

		/**
		 * An order's payments and ledger entries, oldest first (operators: the admin's order view
		 * `GET /api/admin/orders/:id` reads it through `orders.adminGet`; not published over REST).
		 * Money in integer cents with an ISO 4217 currency.
		 * @param orderId - the order's id
		 * @returns `{ payments: Payment[], ledger: [{ id, paymentId, kind: "CAPTURE" | "REFUND",
		 *   amount, currency, createdAt }], captured, refunded }` (`captured`, `refunded`: the
		 *   ledger's sums for the order, cents; net money held = captured − refunded)
		 */
		forOrder: {
			visibility: "public",
			params: { $$strict: true, orderId: { type: "uuid" } },
			async handler(
				this: PaymentsThis,
				ctx: ShopContext<{ orderId: string }>
			): Promise<OrderPayments> {
				const { orderId } = ctx.params;
				const { payments, ledger: entries } = await this.repo.forOrder(orderId);
				const sum = (kind: string): number =>
					entries.filter(e => e.kind === kind).reduce((s, e) => s + e.amount, 0);
				return {
					payments: payments.map(toView),
					ledger: entries,
					captured: sum("CAPTURE"),
					refunded: sum("REFUND")
				};
			}
		},

		/**
		 * Ledger totals in cents per currency: `{ captured, refunded }` (operators, invariant checks).
		 * @returns `{ [currency]: { captured, refunded } }`
		 */
		totals: {
			visibility: "public",
			params: {},
			async handler(
				this: PaymentsThis
			): Promise<Record<string, { captured: number; refunded: number }>> {
				const rows = await this.repo.ledgerTotals();
				const out: Record<string, { captured: number; refunded: number }> = {};
				for (const r of rows) {
					const c = (out[r.currency.trim()] ??= { captured: 0, refunded: 0 });
					if (r.kind === "CAPTURE") c.captured = Number(r.total);
					else c.refunded = Number(r.total);
				}
				return out;
			}
		}
	}
};

export default PaymentsService;
