/** Schema of the `notifications` database: the e-mails the shop sends, and each send's state. */
import type { Migration } from "../../platform/db/database";

export const notificationsMigrations: readonly Migration[] = [
	{
		name: "001-create-notifications",
		up: `
CREATE TABLE notifications (
	id uuid PRIMARY KEY,
	user_id uuid NOT NULL,
	order_id uuid NOT NULL,
	kind text NOT NULL CHECK (kind IN ('ORDER_CONFIRMED', 'ORDER_CANCELLED')),
	recipient text NOT NULL,
	subject text NOT NULL,
	body text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX notifications_once ON notifications (order_id, kind);
CREATE INDEX notifications_user_idx ON notifications (user_id, created_at DESC);`,
		down: "DROP TABLE notifications;"
	},
	{
		// An admin's refund (return) of a confirmed order: `order.refunded` (issue 16, item 4).
		name: "002-order-refunded-kind",
		up: `
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check
	CHECK (kind IN ('ORDER_CONFIRMED', 'ORDER_CANCELLED', 'ORDER_REFUNDED'));`,
		down: `
DELETE FROM notifications WHERE kind = 'ORDER_REFUNDED';
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check
	CHECK (kind IN ('ORDER_CONFIRMED', 'ORDER_CANCELLED'));`
	},
	{
		// The e-mail of each notification, sent over SMTP (issue 19 §5; email-sender.ts): its state
		// is the send's own idempotency record. NULL: recorded without SMTP_URL, nothing to send.
		name: "003-email-delivery",
		up: `
ALTER TABLE notifications
	ADD COLUMN email_status text CHECK (email_status IN ('PENDING', 'SENDING', 'SENT', 'FAILED')),
	ADD COLUMN email_attempts integer NOT NULL DEFAULT 0,
	ADD COLUMN email_next_at timestamptz,
	ADD COLUMN email_claimed_at timestamptz,
	ADD COLUMN email_sent_at timestamptz,
	ADD COLUMN email_message_id text,
	ADD COLUMN email_error text;
CREATE INDEX notifications_email_due ON notifications (email_next_at) WHERE email_status = 'PENDING';
CREATE INDEX notifications_email_sending ON notifications (email_claimed_at)
	WHERE email_status = 'SENDING';`,
		down: `
DROP INDEX notifications_email_sending;
DROP INDEX notifications_email_due;
ALTER TABLE notifications DROP COLUMN email_status, DROP COLUMN email_attempts,
	DROP COLUMN email_next_at, DROP COLUMN email_claimed_at, DROP COLUMN email_sent_at,
	DROP COLUMN email_message_id, DROP COLUMN email_error;`
	}
];
