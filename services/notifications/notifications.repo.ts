/**
 * The notifications database's statements (`notifications`: one row per order and kind), each a
 * method of `NotificationsRepo` over the service's Sequelize instance. The repository pattern of
 * the house style (services/<name>/<name>.repo.ts: all of a service's SQL in one file).
 */
import crypto from "node:crypto";
import { fastQuery, QueryTypes, type Transaction } from "../../platform/db/fast-query";
import { pageOffset, type PageQuery } from "../../platform/paging";
import type { Notification, NotificationKind } from "./notifications.model";
import type { ShopDatabase } from "../../platform/db/pool";

interface NotificationRow {
	id: string;
	user_id: string;
	order_id: string;
	kind: NotificationKind;
	recipient: string;
	subject: string;
	body: string;
	created_at: Date;
}

/** A notification to record. */
export interface NewNotification {
	userId: string;
	orderId: string;
	kind: NotificationKind;
	recipient: string;
	subject: string;
	body: string;
}

export class NotificationsRepo {
	constructor(private readonly db: ShopDatabase) {}

	/**
	 * One page of a user's notifications (of one order, when `orderId`), newest first, and how
	 * many there are: both from ONE statement (one snapshot), since two queries could count a
	 * notification written between them that the page did not show.
	 */
	async listForUser(
		userId: string,
		orderId: string | null,
		q: PageQuery
	): Promise<{ rows: Notification[]; total: number }> {
		const where = "user_id = $1 AND ($2::uuid IS NULL OR order_id = $2)";
		const found = (await fastQuery(
			this.db,
			`SELECT t.total, n.* FROM (SELECT count(*)::int AS total FROM notifications WHERE ${where}) t
					 LEFT JOIN LATERAL (
						SELECT * FROM notifications WHERE ${where} ORDER BY created_at DESC, id LIMIT $3 OFFSET $4
					 ) n ON true`,
			{
				bind: [userId, orderId, q.pageSize, pageOffset(q)],
				type: QueryTypes.SELECT
			}
		)) as (NotificationRow & { total: number })[];
		const total = found[0]?.total ?? 0;
		// No notification on the page: one row of nulls beside the total.
		const rows = found.filter(r => r.id !== null);
		return {
			rows: rows.map(r => ({
				id: r.id,
				orderId: r.order_id,
				kind: r.kind,
				recipient: r.recipient,
				subject: r.subject,
				body: r.body,
				createdAt: new Date(r.created_at).toISOString()
			})),
			total
		};
	}

	/**
	 * Inserts the notification once per (order, kind), in `t` when given.
	 * @returns its id, or null when the order already had one of that kind
	 */
	async insertOnce(n: NewNotification, t?: Transaction): Promise<string | null> {
		const rows = (await fastQuery(
			this.db,
			`INSERT INTO notifications (id, user_id, order_id, kind, recipient, subject, body)
				 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id, kind) DO NOTHING RETURNING id`,
			{
				bind: [
					crypto.randomUUID(),
					n.userId,
					n.orderId,
					n.kind,
					n.recipient,
					n.subject,
					n.body
				],
				type: QueryTypes.SELECT,
				transaction: t
			}
		)) as { id: string }[];
		return rows[0]?.id ?? null;
	}
}
