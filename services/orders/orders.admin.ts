/**
 * The operators' side of the orders service (admin over REST, `/api/admin/...`; the REPL): the
 * sagas (`listSagas`, `getSaga`), the way out of a parked saga (`redriveSaga`,
 * `refundAndCancelSaga`) and one order with everything that happened to it (`adminGet`). A local
 * mixin of the orders service (`OrdersAdminMixin`), typed the way Moleculer's TypeScript template
 * types a mixin. Refunds are ./orders.refund.ts, stuck orders ./orders.stuck.ts.
 *
 * Every operator action is audited (`saga_interventions`: who, when, note) in the statement that
 * makes it, and is idempotent.
 */
import type { Service, ServiceSchema } from "moleculer";
import { config } from "../../platform/config";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import { countMetric } from "../../platform/metrics";
import { pageParams, toPage, type Page } from "../../platform/paging";
import type {
	SagaDefinition,
	SagaErrorRecord,
	SagaInstance,
	SagaMixinMethods,
	SagaStatus,
	SagaStepLogEntry
} from "../../mixins/saga.mixin";
import type { OrderPayments } from "../payments/payments.model";
import { isRefundStarted } from "./order.state";
import { toOrderView, type Actor, type OrdersRepo, type OrderRow } from "./orders.repo";
import {
	OPERATOR_REFUNDED,
	type Order,
	type OrderRefund,
	type OrderRefundView,
	type SagaIntervention,
	type SagaView
} from "./orders.model";

/** What `OrdersAdminMixin` adds to the service. */
export interface OrdersAdminMethods {
	/** A saga as operators see it. */
	sagaView(s: SagaInstance): SagaView;
}

/** The service as these actions see it (`refundView`: ./orders.refund.ts). */
type AdminThis = Service &
	SagaMixinMethods &
	OrdersAdminMethods & {
		repo: OrdersRepo;
		refundView(order: OrderRow): Promise<OrderRefundView>;
	};

/** Parameters of the operator actions: an optional note kept with the audit record. */
export const operatorParams = { note: { type: "string", max: 500, optional: true } } as const;

/**
 * Who acts in an operator action: the caller's user, who must be an admin (REST: the gateway set
 * it), else meta `operator` of an internal caller (the REPL sends `repl:<os user>@<host>`; a REST
 * client cannot set meta), else `internal@<nodeID>`.
 * @throws AUTH_FORBIDDEN (403) when the caller's user is not an admin
 */
export function operatorOf(ctx: ShopContext): Actor {
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

/** Refuses a caller whose user is not an admin (internal callers pass). */
export function requireAdmin(ctx: ShopContext): void {
	if (ctx.meta.user && ctx.meta.user.role !== "admin") throw shopError("AUTH_FORBIDDEN");
}

/** The order id of an order saga. */
function sagaOrderId(saga: SagaInstance): string | null {
	return typeof saga.data.orderId === "string" ? saga.data.orderId : null;
}

const schema: Partial<ShopServiceSchema<AdminThis>> = {
	actions: {
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
				this: AdminThis,
				ctx: ShopContext<{ status?: SagaStatus; page: number; pageSize: number }>
			): Promise<Page<SagaView>> {
				requireAdmin(ctx);
				const { ids, total } = await this.repo.sagaIdsPage(
					ctx.params.status ?? null,
					ctx.params
				);
				const sagas = await Promise.all(ids.map(id => this.getSaga(id)));
				return toPage(
					sagas.filter((s): s is SagaInstance => s !== null).map(s => this.sagaView(s)),
					total,
					ctx.params
				);
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
				this: AdminThis,
				ctx: ShopContext<{ id: string }>
			): Promise<
				SagaView & { steps: SagaStepLogEntry[]; interventions: SagaIntervention[] }
			> {
				requireAdmin(ctx);
				const saga = await this.getSaga(ctx.params.id);
				if (!saga) throw shopError("SAGAS_NOT_FOUND");
				const [steps, interventions] = await Promise.all([
					this.getSagaSteps(saga.id),
					this.repo.sagaInterventions(saga.id)
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
				this: AdminThis,
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
				const redriven = await this.repo.redrive(
					saga.id,
					next,
					config().sagaDeadlineMs,
					sagaOrderId(saga),
					who,
					ctx.params.note ?? null
				);
				if (!redriven) throw shopError("SAGAS_NOT_PARKED");
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
		 * what lets the order's guard cancel a `CONFIRMING` order (./order.state.ts
		 * `operatorCancel`). A saga parked while it was already compensating is resumed backward
		 * with its own reason. Idempotent: a repeat (or a concurrent call) answers the saga as it
		 * is now, and nothing is refunded twice.
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
				this: AdminThis,
				ctx: ShopContext<{ id: string; note?: string }>
			): Promise<SagaView> {
				const who = operatorOf(ctx);
				const saga = await this.getSaga(ctx.params.id);
				if (!saga) throw shopError("SAGAS_NOT_FOUND");
				ctx.meta.$statusCode = 202;
				if (await this.repo.sagaRefundRequested(saga.id)) return this.sagaView(saga);
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
				const handed = await this.repo.refundAndCancel(
					saga.id,
					reason,
					JSON.stringify(record),
					orderId,
					who,
					ctx.params.note ?? null
				);
				if (!handed) {
					// A concurrent call won: answer what it did.
					const now = await this.getSaga(saga.id);
					if (now && (await this.repo.sagaRefundRequested(saga.id)))
						return this.sagaView(now);
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
				this: AdminThis,
				ctx: ShopContext<{ id: string }>
			): Promise<Record<string, unknown>> {
				requireAdmin(ctx);
				const order = await this.repo.find(ctx.params.id);
				if (!order) throw shopError("ORDERS_NOT_FOUND", undefined, { id: ctx.params.id });
				const interventions = await this.repo.orderInterventions(order.id);
				const sagaIds = [
					...new Set([
						...(order.saga_id ? [order.saga_id] : []),
						...interventions.map(a => a.sagaId)
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
				const refund: OrderRefund | null = isRefundStarted(order.status)
					? (await this.refundView(order)).refund
					: null;
				const view: Order = toOrderView(order);
				return {
					...view,
					customerEmail: order.customer_email,
					payments: money.payments,
					ledger: money.ledger,
					captured: money.captured,
					refunded: money.refunded,
					reservation,
					sagas: sagas
						.filter((x): x is SagaInstance => x !== null)
						.map(x => this.sagaView(x)),
					interventions,
					refund
				};
			}
		}
	},

	methods: {
		sagaView(this: AdminThis, s: SagaInstance): SagaView {
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
				orderId: sagaOrderId(s),
				failureReason: s.failureReason,
				attempts: s.attempts,
				errors: s.errors,
				deadlineAt: new Date(s.deadlineAt).toISOString(),
				createdAt: new Date(s.createdAt).toISOString(),
				updatedAt: new Date(s.updatedAt).toISOString()
			};
		}
	}
};

/** The mixin, for the orders service's `mixins` (its `this` checked above). */
export const OrdersAdminMixin = schema as Partial<ServiceSchema>;
