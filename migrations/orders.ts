/** Schema of the `orders` database: orders and the saga log of the order saga. */
import type { Migration } from "../lib/database";
import { sagaMigrations } from "../mixins/saga.mixin";

export const ordersMigrations: readonly Migration[] = [
	{
		name: "001-create-orders",
		up: `
CREATE TABLE orders (
	id uuid PRIMARY KEY,
	user_id uuid NOT NULL,
	customer_email text NOT NULL,
	status text NOT NULL CHECK (status IN ('PENDING', 'STOCK_RESERVED', 'PAID', 'CONFIRMING', 'CONFIRMED', 'CANCELLED')),
	items jsonb NOT NULL,
	total integer NOT NULL CHECK (total >= 0),
	currency char(3) NOT NULL,
	payment_method text NOT NULL,
	cancellation_reason text,
	cancel_requested boolean NOT NULL DEFAULT false,
	idempotency_key text,
	request_hash text,
	saga_id uuid,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX orders_idempotency_key ON orders (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX orders_user_created_idx ON orders (user_id, created_at DESC);`,
		down: "DROP TABLE orders;"
	},
	...sagaMigrations,
	{
		// An order's row is updated with each saga step (its status): room on its page for HOT
		// updates (no index changes), see 903-saga-hot-updates.
		name: "904-orders-fillfactor",
		up: "ALTER TABLE orders SET (fillfactor = 80);",
		down: "ALTER TABLE orders RESET (fillfactor);"
	},
	{
		// The order's reservation was given up before its pivot (inventory's sweeper asked,
		// `orders.lapseReservations`): the pivot is then refused, so an order never passes it
		// without its stock. A constant default: no table rewrite.
		name: "905-orders-reservation-lapsed",
		up: "ALTER TABLE orders ADD COLUMN reservation_lapsed boolean NOT NULL DEFAULT false;",
		down: "ALTER TABLE orders DROP COLUMN reservation_lapsed;"
	}
];
