/**
 * `orders.repo.ts`: every SQL statement of the orders service (its own database: `orders`,
 * `sagas`, `saga_interventions`), as one class over the service's database (DbMixin's `this.db`;
 * a statement in a transaction runs on that transaction's connection, platform/db/fast-query.ts). Handlers,
 * saga steps and admin actions call it; nothing else in services/orders/ writes SQL.
 *
 * The status guards (`status IN (...)`) are taken from the state machine (./order.state.ts), so
 * that the table there and the statements here cannot disagree; the texts are those the service
 * always sent (named prepared statements are keyed by their text, platform/db/database.ts).
 * Each status write is ONE statement with its guard: the database decides races.
 * The pattern: eShop's `OrderRepository` (one repository per aggregate, the SQL in one place).
 */
import type { DeferredWrite } from "../../platform/db/deferred-writes";
import {
	type Database,
	fastQuery,
	QueryTypes,
	type Transaction
} from "../../platform/db/fast-query";
import { pageOffset, type PageQuery } from "../../platform/paging";
import type { SagaStatus } from "../../mixins/saga.mixin";
import type { OrderRefundSagaData } from "./order.saga";
import {
	BEFORE_PIVOT,
	ORDER_TRANSITIONS as T,
	PIVOT_PASSED,
	outsideFrom,
	sqlStatuses as q
} from "./order.state";
import type { Order, OrderEvent, OrderItem, OrderStatus, SagaIntervention } from "./orders.model";

/** An `orders` row. */
export interface OrderRow {
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

/** Who acts in an operator action (`saga_interventions.actor_id`, `actor`). */
export interface Actor {
	actorId: string | null;
	actor: string;
}

/** An order's `REFUND` audit record with its refund saga, as `refundView` reads it. */
export interface RefundRecord {
	saga_id: string;
	actor_id: string | null;
	actor: string;
	note: string | null;
	created_at: Date;
	status: SagaStatus | null;
	data: Partial<OrderRefundSagaData> | null;
}

/** A stuck order as `stuck` lists it: the row, since when, and the saga driving it. */
export type StuckRow = OrderRow & {
	since: Date;
	driver: string | null;
	db_now: Date;
	saga_name: string | null;
	saga_status: SagaStatus | null;
};

/** An order as the API shows it. */
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

/**
 * The body of the durable order events (`order.created`, `order.confirmed`, `order.cancelled`):
 * `{ order: Order & { customerEmail } }`.
 */
export const orderEvent = (r: OrderRow): OrderEvent => ({
	order: { ...toOrderView(r), customerEmail: r.customer_email }
});

/** Open orders: the unsettled ones (partial index 906) and the refunds in flight. */
const OPEN = `WITH open AS (
				SELECT o.*, o.created_at AS since, o.saga_id AS driver FROM orders o
				 WHERE NOT o.settled AND o.created_at < now() - $1::float8 * interval '1 millisecond'
				UNION ALL
				SELECT o.*, i.created_at AS since, i.saga_id AS driver
				 FROM saga_interventions i JOIN orders o ON o.id = i.order_id
				 WHERE i.action = 'REFUND' AND o.status = ${q([T.beginRefund.to])}
				   AND i.created_at < now() - $1::float8 * interval '1 millisecond')`;

/** Every statement, by what it does. Identifiers and statuses come from code, never input. */
export const ORDERS_SQL = {
	byId: "SELECT * FROM orders WHERE id = $1",
	byIdempotencyKey: "SELECT * FROM orders WHERE user_id = $1 AND idempotency_key = $2",
	/** `place`: the order, in the statement that creates its saga (`createSaga`'s `with`). */
	insert: `INSERT INTO orders (id, user_id, customer_email, status, items, total, currency,
									payment_method, idempotency_key, request_hash, saga_id, created_at, updated_at)
								 SELECT $1::uuid, $2::uuid, $3::text, ${q([T.place.to])}, $4::jsonb, $5::integer, $6::text, $7::text,
									$8::text, $9::text, $10::uuid, $11::timestamptz, $11::timestamptz
								 WHERE orders_admit($2::uuid, $12::integer, $13::integer, $14::integer)`,
	pageOfUser:
		"SELECT *, count(*) OVER () AS full_count FROM orders WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
	countOfUser: "SELECT count(*) AS n FROM orders WHERE user_id = $1",
	recent: "SELECT * FROM orders ORDER BY created_at DESC, id LIMIT $1",
	/** A customer's cancel, before the pivot only (the saga then compensates). */
	requestCancel: `UPDATE orders SET cancel_requested = true, updated_at = now()
					 WHERE id = $1 AND status IN (${q(BEFORE_PIVOT)}) RETURNING *`,
	/** Orders before the pivot never pass it; those past it keep their reservations. */
	lapseReservations: `WITH o AS (SELECT id, status FROM orders WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE),
					 l AS (UPDATE orders SET reservation_lapsed = true, updated_at = now()
						WHERE id IN (SELECT id FROM o WHERE status IN (${q(BEFORE_PIVOT)}))
						RETURNING id)
					 SELECT id FROM o WHERE status IN (${q(PIVOT_PASSED)})`,
	/** `passPivot`, fenced on the run's lease of the saga (it locks the saga's row). */
	passPivot: `WITH s AS (SELECT id FROM sagas WHERE id = $2 AND lease_owner = $3 AND status = 'RUNNING' FOR UPDATE)
				 UPDATE orders SET status = ${q([T.passPivot.to])}, updated_at = now()
				 WHERE id = $1 AND NOT cancel_requested AND NOT reservation_lapsed
				   AND status IN (${q(T.passPivot.from)}) AND EXISTS (SELECT 1 FROM s)
				 RETURNING id`,
	pivotRefusal: `SELECT o.reservation_lapsed, EXISTS (SELECT 1 FROM sagas
					WHERE id = $2 AND lease_owner = $3 AND status = 'RUNNING') AS owned
				 FROM orders o WHERE o.id = $1`,
	/** `confirm`: no status guard; only the order saga's completion (lease-fenced) runs it. */
	confirm: `UPDATE orders SET status = ${q([T.confirm.to])}, settled = true, updated_at = now() WHERE id = $1 RETURNING *`,
	/** `cancel`, and `operatorCancel` once an operator asked to refund and cancel. */
	cancel: `UPDATE orders SET status = ${q([T.cancel.to])}, settled = true, updated_at = now(),
					cancellation_reason = CASE WHEN cancel_requested THEN 'CANCELLED_BY_CUSTOMER' ELSE $2 END
				 WHERE id = $1 AND (status NOT IN (${q(outsideFrom("cancel"))})
					OR (status = ${q(T.operatorCancel.from)} AND EXISTS (SELECT 1 FROM saga_interventions
						WHERE saga_id = $3 AND action = 'REFUND_AND_CANCEL')))
				 RETURNING *`,
	/** `beginRefund`; the order's row lock serialises concurrent refunds. */
	beginRefund: `UPDATE orders SET status = ${q([T.beginRefund.to])}, updated_at = now()
						 WHERE id = $1 AND status = ${q(T.beginRefund.from)} RETURNING id`,
	refundPivotState: `SELECT o.status, EXISTS (SELECT 1 FROM sagas
					WHERE id = $2 AND lease_owner = $3 AND status = 'RUNNING') AS owned
				 FROM orders o WHERE o.id = $1`,
	completeRefund: `UPDATE orders SET status = ${q([T.completeRefund.to])}, updated_at = now()
				 WHERE id = $1 AND status = ${q(T.completeRefund.from)} RETURNING *`,
	insertRefundIntervention: `INSERT INTO saga_interventions (saga_id, order_id, action, actor_id, actor, note)
						 VALUES ($1, $2, 'REFUND', $3, $4, $5)`,
	refundOf: `SELECT i.saga_id, i.actor_id, i.actor, i.note, i.created_at, s.status, s.data
				 FROM saga_interventions i LEFT JOIN sagas s ON s.id = i.saga_id
				 WHERE i.order_id = $1 AND i.action = 'REFUND'`,
	orderInterventions: `SELECT saga_id, action, actor_id, actor, note, created_at FROM saga_interventions
					 WHERE order_id = $1 ORDER BY id`,
	sagaInterventions:
		"SELECT action, actor_id, actor, note, created_at FROM saga_interventions WHERE saga_id = $1 ORDER BY id",
	sagaRefundRequested:
		"SELECT 1 FROM saga_interventions WHERE saga_id = $1 AND action = 'REFUND_AND_CANCEL'",
	sagaIdsPage: `SELECT id FROM sagas WHERE ($1::text IS NULL OR status = $1) ORDER BY created_at DESC, id LIMIT $2 OFFSET $3`,
	countSagas: "SELECT count(*) AS n FROM sagas WHERE ($1::text IS NULL OR status = $1)",
	/** A parked saga resumed, audited in the same statement. */
	redrive: `WITH s AS (UPDATE sagas SET status = $2, updated_at = now(), lease_owner = NULL, lease_expires_at = NULL,
						redrives = redrives + 1,
						deadline_at = CASE WHEN $2 = 'RUNNING' THEN greatest(deadline_at, now() + ($3 || ' milliseconds')::interval) ELSE deadline_at END
					 WHERE id = $1 AND status = 'FAILED' RETURNING id)
					 INSERT INTO saga_interventions (saga_id, order_id, action, actor_id, actor, note)
					 SELECT id, $4, 'REDRIVE', $5, $6, $7 FROM s RETURNING saga_id AS id`,
	/** A parked saga handed to compensation, audited in the same statement. */
	refundAndCancel: `WITH s AS (UPDATE sagas SET status = 'COMPENSATING', failure_reason = $2, updated_at = now(),
						lease_owner = NULL, lease_expires_at = NULL, redrives = redrives + 1,
						errors = errors || jsonb_build_array($3::jsonb)
					 WHERE id = $1 AND status = 'FAILED' RETURNING id)
					 INSERT INTO saga_interventions (saga_id, order_id, action, actor_id, actor, note)
					 SELECT id, $4, 'REFUND_AND_CANCEL', $5, $6, $7 FROM s RETURNING saga_id AS id`,
	stuckCounts: `${OPEN} SELECT status, count(*)::int AS n FROM open GROUP BY status`,
	stuckRows: `${OPEN} SELECT open.*, now() AS db_now, s.name AS saga_name, s.status AS saga_status
					 FROM open LEFT JOIN sagas s ON s.id = open.driver ORDER BY open.since, open.id LIMIT $2`
} as const;

const S = { type: QueryTypes.SELECT } as const;

/** The orders database, as the service's handlers, saga steps and admin actions use it. */
export class OrdersRepo {
	constructor(private readonly db: Database) {}

	async find(id: string, t?: Transaction): Promise<OrderRow | null> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.byId, {
			...S,
			bind: [id],
			transaction: t
		})) as OrderRow[];
		return rows[0] ?? null;
	}

	/** The caller's order placed under `key` (`Idempotency-Key`), if any. */
	async findByIdempotencyKey(userId: string, key: string): Promise<OrderRow | null> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.byIdempotencyKey, {
			...S,
			bind: [userId, key]
		})) as OrderRow[];
		return rows[0] ?? null;
	}

	/**
	 * The new order's INSERT as a write of the statement that creates its saga. The per-customer
	 * bounds are checked by this INSERT itself (`orders_admit` raises OC429 past them, failing the
	 * whole statement: no order, no saga, no event).
	 * @param units - the order's units; `maxInFlight`, `maxUnits`: the customer's bounds (0: off)
	 */
	insert(
		row: OrderRow,
		bounds: { units: number; maxInFlight: number; maxUnits: number }
	): DeferredWrite {
		return {
			sql: ORDERS_SQL.insert,
			bind: [
				row.id,
				row.user_id,
				row.customer_email,
				JSON.stringify(row.items),
				row.total,
				row.currency,
				row.payment_method,
				row.idempotency_key,
				row.request_hash,
				row.saga_id,
				row.created_at,
				bounds.units,
				bounds.maxInFlight,
				bounds.maxUnits
			]
		};
	}

	/** A page of a customer's orders, newest first, and how many they have. */
	async pageOfUser(userId: string, q: PageQuery): Promise<{ rows: OrderRow[]; total: number }> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.pageOfUser, {
			bind: [userId, q.pageSize, pageOffset(q)],
			...S
		})) as (OrderRow & { full_count: string })[];
		let total = rows[0] ? Number(rows[0].full_count) : 0;
		if (!rows[0] && q.page > 1) {
			const c = (await fastQuery(this.db, ORDERS_SQL.countOfUser, {
				bind: [userId],
				...S
			})) as { n: string }[];
			total = Number(c[0]?.n ?? 0);
		}
		return { rows, total };
	}

	/** The newest orders of every customer. */
	async recent(limit: number): Promise<OrderRow[]> {
		return (await fastQuery(this.db, ORDERS_SQL.recent, { bind: [limit], ...S })) as OrderRow[];
	}

	/** Marks the customer's cancel; null when the order is past its pivot (or absent). */
	async requestCancel(id: string): Promise<OrderRow | null> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.requestCancel, {
			bind: [id],
			...S
		})) as OrderRow[];
		return rows[0] ?? null;
	}

	/** Marks the orders before their pivot as never passing it. @returns the ids past it (kept) */
	async lapseReservations(orderIds: readonly string[]): Promise<string[]> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.lapseReservations, {
			bind: [orderIds],
			...S
		})) as { id: string }[];
		return rows.map(r => r.id);
	}

	/** `passPivot`'s update. @returns false when refused (cancel, lapse, lease lost) */
	async passPivot(orderId: string, sagaId: string, leaseOwner: string | null): Promise<boolean> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.passPivot, {
			bind: [orderId, sagaId, leaseOwner],
			...S
		})) as { id: string }[];
		return rows[0] !== undefined;
	}

	/** Why the pivot was refused: the reservation lapsed, or the run lost the saga's lease. */
	async pivotRefusal(
		orderId: string,
		sagaId: string,
		leaseOwner: string | null
	): Promise<{ reservation_lapsed: boolean; owned: boolean } | undefined> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.pivotRefusal, {
			bind: [orderId, sagaId, leaseOwner],
			...S
		})) as { reservation_lapsed: boolean; owned: boolean }[];
		return rows[0];
	}

	/** `confirm`, in the saga's final transaction. */
	async confirm(orderId: string, t: Transaction): Promise<OrderRow | undefined> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.confirm, {
			bind: [orderId],
			...S,
			transaction: t
		})) as OrderRow[];
		return rows[0];
	}

	/** `cancel` / `operatorCancel`, in the saga's final transaction; undefined when refused. */
	async cancel(
		orderId: string,
		reason: string,
		sagaId: string,
		t: Transaction
	): Promise<OrderRow | undefined> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.cancel, {
			bind: [orderId, reason, sagaId],
			...S,
			transaction: t
		})) as OrderRow[];
		return rows[0];
	}

	/** `beginRefund` in `t`. @returns false unless the order was CONFIRMED */
	async beginRefund(id: string, t: Transaction): Promise<boolean> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.beginRefund, {
			bind: [id],
			...S,
			transaction: t
		})) as { id: string }[];
		return rows[0] !== undefined;
	}

	/** The order's status, and whether this run still holds the refund saga's lease. */
	async refundPivotState(
		orderId: string,
		sagaId: string,
		leaseOwner: string | null
	): Promise<{ status: OrderStatus; owned: boolean } | undefined> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.refundPivotState, {
			bind: [orderId, sagaId, leaseOwner],
			...S
		})) as { status: OrderStatus; owned: boolean }[];
		return rows[0];
	}

	/** `completeRefund`, in the refund saga's final transaction; undefined on a repeat. */
	async completeRefund(orderId: string, t: Transaction): Promise<OrderRow | undefined> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.completeRefund, {
			bind: [orderId],
			...S,
			transaction: t
		})) as OrderRow[];
		return rows[0];
	}

	/** The `REFUND` audit record of an order refund, in `t` (its saga's creation's). */
	async recordRefund(
		sagaId: string,
		orderId: string,
		who: Actor,
		note: string | null,
		t: Transaction
	): Promise<void> {
		await fastQuery(this.db, ORDERS_SQL.insertRefundIntervention, {
			bind: [sagaId, orderId, who.actorId, who.actor, note],
			transaction: t
		});
	}

	/** The order's refund (its `REFUND` record and saga), if one was asked for. */
	async refundOf(orderId: string): Promise<RefundRecord | undefined> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.refundOf, {
			bind: [orderId],
			...S
		})) as RefundRecord[];
		return rows[0];
	}

	/** What operators did to the order's sagas, oldest first. */
	async orderInterventions(orderId: string): Promise<(SagaIntervention & { sagaId: string })[]> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.orderInterventions, {
			bind: [orderId],
			...S
		})) as (InterventionRow & { saga_id: string })[];
		return rows.map(r => ({ sagaId: r.saga_id, ...interventionOf(r) }));
	}

	/** What operators did to saga `sagaId`, oldest first. */
	async sagaInterventions(sagaId: string): Promise<SagaIntervention[]> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.sagaInterventions, {
			bind: [sagaId],
			...S
		})) as InterventionRow[];
		return rows.map(interventionOf);
	}

	/** Whether an operator asked to refund and cancel saga `sagaId`. */
	async sagaRefundRequested(sagaId: string): Promise<boolean> {
		const rows = await fastQuery(this.db, ORDERS_SQL.sagaRefundRequested, {
			bind: [sagaId],
			...S
		});
		return rows.length > 0;
	}

	/** A page of saga ids, newest first, optionally by status, and how many there are. */
	async sagaIdsPage(
		status: SagaStatus | null,
		q: PageQuery
	): Promise<{ ids: string[]; total: number }> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.sagaIdsPage, {
			bind: [status, q.pageSize, pageOffset(q)],
			...S
		})) as { id: string }[];
		const count = (await fastQuery(this.db, ORDERS_SQL.countSagas, {
			bind: [status],
			...S
		})) as { n: string }[];
		return { ids: rows.map(r => r.id), total: Number(count[0]?.n ?? 0) };
	}

	/**
	 * Resumes parked saga `sagaId` as `next` (a forward one gets at least `deadlineMs` more) and
	 * audits it (`REDRIVE`), in one statement. @returns false when it was not parked
	 */
	async redrive(
		sagaId: string,
		next: SagaStatus,
		deadlineMs: number,
		orderId: string | null,
		who: Actor,
		note: string | null
	): Promise<boolean> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.redrive, {
			bind: [sagaId, next, String(deadlineMs), orderId, who.actorId, who.actor, note],
			...S
		})) as { id: string }[];
		return rows[0] !== undefined;
	}

	/**
	 * Hands parked saga `sagaId` to compensation with `reason` (its error history gets `record`,
	 * JSON) and audits it (`REFUND_AND_CANCEL`), in one statement. @returns false when not parked
	 */
	async refundAndCancel(
		sagaId: string,
		reason: string,
		record: string,
		orderId: string | null,
		who: Actor,
		note: string | null
	): Promise<boolean> {
		const rows = (await fastQuery(this.db, ORDERS_SQL.refundAndCancel, {
			bind: [sagaId, reason, record, orderId, who.actorId, who.actor, note],
			...S
		})) as { id: string }[];
		return rows[0] !== undefined;
	}

	/** Open orders older than `thresholdMs`: counted by status, and the `limit` oldest. */
	async stuck(
		thresholdMs: number,
		limit: number
	): Promise<{ counted: { status: string; n: number }[]; listed: StuckRow[] }> {
		// One transaction: both statements judge "stuck" against the same now() (its start), so
		// an order crossing the threshold between them is not listed yet uncounted.
		return this.db.transaction(async t => {
			const [counted, listed] = await Promise.all([
				fastQuery(this.db, ORDERS_SQL.stuckCounts, {
					bind: [thresholdMs],
					transaction: t,
					...S
				}) as Promise<{ status: string; n: number }[]>,
				fastQuery(this.db, ORDERS_SQL.stuckRows, {
					bind: [thresholdMs, limit],
					transaction: t,
					...S
				}) as Promise<StuckRow[]>
			]);
			return { counted, listed };
		});
	}
}

interface InterventionRow {
	action: SagaIntervention["action"];
	actor_id: string | null;
	actor: string;
	note: string | null;
	created_at: Date;
}

const interventionOf = (r: InterventionRow): SagaIntervention => ({
	action: r.action,
	actorId: r.actor_id,
	actor: r.actor,
	note: r.note,
	at: new Date(r.created_at).toISOString()
});
