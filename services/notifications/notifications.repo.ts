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
	/** Whether its e-mail is to be sent (SMTP_URL set): `email_status` PENDING, else NULL. */
	sendEmail?: boolean;
}

/** A notification's e-mail, claimed for one send (`email_status` SENDING). */
export interface ClaimedEmail {
	id: string;
	orderId: string;
	kind: NotificationKind;
	recipient: string;
	subject: string;
	body: string;
	/** Sends of this e-mail so far, this one included. */
	attempts: number;
}

interface ClaimedRow {
	id: string;
	order_id: string;
	kind: NotificationKind;
	recipient: string;
	subject: string;
	body: string;
	email_attempts: number;
}

function toClaimed(r: ClaimedRow): ClaimedEmail {
	return {
		id: r.id,
		orderId: r.order_id,
		kind: r.kind,
		recipient: r.recipient,
		subject: r.subject,
		body: r.body,
		attempts: r.email_attempts
	};
}

const CLAIMED_COLUMNS = "id, order_id, kind, recipient, subject, body, email_attempts";

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
	 * @param opts.commit - the last statement of `t`: its COMMIT goes in the same flight
	 *   (fastQuery's `commit`)
	 * @returns its id, or null when the order already had one of that kind
	 */
	async insertOnce(
		n: NewNotification,
		t?: Transaction,
		opts: { commit?: boolean } = {}
	): Promise<string | null> {
		const rows = (await fastQuery(
			this.db,
			`INSERT INTO notifications
				 (id, user_id, order_id, kind, recipient, subject, body, email_status, email_next_at)
				 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $8::text IS NULL THEN NULL ELSE now() END)
				 ON CONFLICT (order_id, kind) DO NOTHING RETURNING id`,
			{
				bind: [
					crypto.randomUUID(),
					n.userId,
					n.orderId,
					n.kind,
					n.recipient,
					n.subject,
					n.body,
					n.sendEmail ? "PENDING" : null
				],
				type: QueryTypes.SELECT,
				transaction: t,
				commit: opts.commit
			}
		)) as { id: string }[];
		return rows[0]?.id ?? null;
	}

	// -----------------------------------------------------------------------------------------
	// E-mail delivery (email-sender.ts): `email_status` PENDING → SENDING → SENT, or back to
	// PENDING (a retry) or FAILED (dead-lettered). Every change out of SENDING is guarded by it.

	/**
	 * Claims the e-mail due first (PENDING, `email_next_at` passed) for one send: SENDING, one
	 * more attempt, `email_claimed_at` now, committed before the send begins. Concurrent senders
	 * (several notifications nodes) skip each other's rows (`FOR UPDATE SKIP LOCKED`).
	 * @returns the claimed e-mail, or null when none is due
	 */
	async claimDueEmail(): Promise<ClaimedEmail | null> {
		const rows = (await fastQuery(
			this.db,
			`UPDATE notifications SET email_status = 'SENDING', email_attempts = email_attempts + 1,
					email_claimed_at = now(), updated_at = now()
				 WHERE id = (SELECT id FROM notifications WHERE email_status = 'PENDING' AND email_next_at <= now()
					ORDER BY email_next_at LIMIT 1 FOR UPDATE SKIP LOCKED)
				 RETURNING ${CLAIMED_COLUMNS}`,
			{ type: QueryTypes.SELECT }
		)) as ClaimedRow[];
		return rows[0] ? toClaimed(rows[0]) : null;
	}

	/** Records the claimed e-mail `id` as accepted by the server, with its Message-ID. */
	async emailSent(id: string, messageId: string): Promise<void> {
		await fastQuery(
			this.db,
			`UPDATE notifications SET email_status = 'SENT', email_sent_at = now(), email_message_id = $2,
					email_error = NULL, email_claimed_at = NULL, updated_at = now()
				 WHERE id = $1 AND email_status = 'SENDING'`,
			{ bind: [id, messageId] }
		);
	}

	/** Puts the claimed e-mail `id` back as PENDING, due in `delayMs`, with the send's error. */
	async emailRetryLater(id: string, delayMs: number, error: string): Promise<void> {
		await fastQuery(
			this.db,
			`UPDATE notifications SET email_status = 'PENDING',
					email_next_at = now() + $2 * interval '1 millisecond', email_error = $3,
					email_claimed_at = NULL, updated_at = now()
				 WHERE id = $1 AND email_status = 'SENDING'`,
			{ bind: [id, delayMs, error] }
		);
	}

	/** Records the claimed e-mail `id` as given up (FAILED: dead-lettered), with the error. */
	async emailFailed(id: string, error: string): Promise<void> {
		await fastQuery(
			this.db,
			`UPDATE notifications SET email_status = 'FAILED', email_error = $2, email_claimed_at = NULL,
					updated_at = now()
				 WHERE id = $1 AND email_status = 'SENDING'`,
			{ bind: [id, error] }
		);
	}

	/**
	 * E-mails claimed more than `leaseMs` ago and still SENDING: their sender stopped mid-send
	 * (a crash), so whether the server got them is unknown. At most `limit`.
	 */
	async staleSendingEmails(leaseMs: number, limit = 100): Promise<ClaimedEmail[]> {
		const rows = (await fastQuery(
			this.db,
			`SELECT ${CLAIMED_COLUMNS} FROM notifications
				 WHERE email_status = 'SENDING' AND email_claimed_at < now() - $1 * interval '1 millisecond'
				 ORDER BY email_claimed_at LIMIT $2`,
			{ bind: [leaseMs, limit], type: QueryTypes.SELECT }
		)) as ClaimedRow[];
		return rows.map(toClaimed);
	}

	/**
	 * Queues a FAILED e-mail again (an admin's replay of its dead letter): PENDING, due now,
	 * attempts from 0. An e-mail in any other state is left as it is.
	 * @returns false when there is no notification `id`
	 */
	async requeueEmail(id: string): Promise<boolean> {
		const rows = (await fastQuery(this.db, "SELECT id FROM notifications WHERE id = $1", {
			bind: [id],
			type: QueryTypes.SELECT
		})) as { id: string }[];
		if (rows.length === 0) return false;
		await fastQuery(
			this.db,
			`UPDATE notifications SET email_status = 'PENDING', email_attempts = 0, email_next_at = now(),
					email_error = NULL, updated_at = now()
				 WHERE id = $1 AND email_status = 'FAILED'`,
			{ bind: [id] }
		);
		return true;
	}

	/** The consumer of dead letter `id` (platform/events/dead-letters.ts), or null when there is none. */
	async deadLetterConsumer(id: string): Promise<string | null> {
		const rows = (await fastQuery(this.db, "SELECT consumer FROM dead_letters WHERE id = $1", {
			bind: [id],
			type: QueryTypes.SELECT
		})) as { consumer: string }[];
		return rows[0]?.consumer ?? null;
	}
}
