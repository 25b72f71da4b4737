/** Schema of the `notifications` database: the e-mails the shop would send. */
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
	}
];
