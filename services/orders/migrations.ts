/** Schema of the `orders` database: orders and the saga log of the order saga. */
import type { Migration } from "../../platform/db/database";
import { sagaMigrations } from "../../mixins/saga.mixin";

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
	},
	{
		// Per-customer bounds (issue 16, item 6): `settled` turns true with the order's final
		// status (CONFIRMED, CANCELLED), so a customer's orders in flight are one partial index
		// away. Only that final update touches an indexed column: the saga's intermediate status
		// updates stay HOT (904).
		//
		// `orders_admit(user, units, maxOrders, maxUnits)` is called by the order's own INSERT
		// (`orders.create`): under a transaction-scoped advisory lock on the customer (two-key
		// form, class 4290, so it never meets the single-key locks of other code), it counts the
		// customer's unsettled orders and their units on a fresh snapshot (a VOLATILE function
		// under READ COMMITTED), and raises SQLSTATE OC429 with the counts as JSON in DETAIL when
		// the new order would pass a bound (0 = off). The lock is held to the statement's commit,
		// so one customer's concurrent orders, on any orders node, are counted one after the
		// other: the bound holds cluster-wide, exactly.
		name: "906-orders-customer-bounds",
		up: `
ALTER TABLE orders ADD COLUMN settled boolean NOT NULL DEFAULT false;
UPDATE orders SET settled = true WHERE status IN ('CONFIRMED', 'CANCELLED');
CREATE INDEX orders_unsettled_idx ON orders (user_id) WHERE NOT settled;
CREATE FUNCTION orders_admit(p_user uuid, p_units integer, p_max_orders integer, p_max_units integer)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $admit$
DECLARE
	n integer;
	u bigint;
BEGIN
	IF p_max_orders <= 0 AND p_max_units <= 0 THEN
		RETURN true;
	END IF;
	PERFORM pg_advisory_xact_lock(4290, hashtext(p_user::text));
	SELECT count(*), coalesce(sum((SELECT sum((i ->> 'quantity')::integer) FROM jsonb_array_elements(o.items) i)), 0)
		INTO n, u FROM orders o WHERE o.user_id = p_user AND NOT o.settled;
	IF (p_max_orders > 0 AND n >= p_max_orders) OR (p_max_units > 0 AND u + p_units > p_max_units) THEN
		RAISE EXCEPTION 'ORDERS_CUSTOMER_LIMIT'
			USING ERRCODE = 'OC429',
				DETAIL = json_build_object('inFlight', n, 'unitsInFlight', u, 'units', p_units,
					'maxInFlight', p_max_orders, 'maxUnits', p_max_units)::text;
	END IF;
	RETURN true;
END
$admit$;`,
		down: `
DROP FUNCTION orders_admit(uuid, integer, integer, integer);
DROP INDEX orders_unsettled_idx;
ALTER TABLE orders DROP COLUMN settled;`
	},
	{
		// What operators did to parked sagas (issue 16, item 3): who, when, what, why. The
		// order's guard against cancelling past its pivot lets a REFUND_AND_CANCEL through. No
		// foreign key: the audit outlives the saga's own retention (a few rows per operator act).
		name: "907-saga-interventions",
		up: `
CREATE TABLE saga_interventions (
	id bigserial PRIMARY KEY,
	saga_id uuid NOT NULL,
	order_id uuid,
	action text NOT NULL CHECK (action IN ('REDRIVE', 'REFUND_AND_CANCEL')),
	actor_id text,
	actor text NOT NULL,
	note text,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX saga_interventions_saga_idx ON saga_interventions (saga_id, id);
CREATE UNIQUE INDEX saga_interventions_refund_once ON saga_interventions (saga_id) WHERE action = 'REFUND_AND_CANCEL';`,
		down: "DROP TABLE saga_interventions;"
	},
	{
		// Admin refunds (returns, issue 16 item 4): a CONFIRMED order goes REFUNDING (its refund
		// saga runs) then REFUNDED. The request is audited in saga_interventions (`REFUND`, who,
		// when, note), at most one per order (the index that also finds refunds in flight for the
		// stuck-orders gauge); `order_id` indexed for an order's admin view.
		name: "908-order-refunds",
		up: `
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN ('PENDING', 'STOCK_RESERVED', 'PAID',
	'CONFIRMING', 'CONFIRMED', 'CANCELLED', 'REFUNDING', 'REFUNDED'));
ALTER TABLE saga_interventions DROP CONSTRAINT saga_interventions_action_check;
ALTER TABLE saga_interventions ADD CONSTRAINT saga_interventions_action_check
	CHECK (action IN ('REDRIVE', 'REFUND_AND_CANCEL', 'REFUND'));
CREATE UNIQUE INDEX saga_interventions_refund_order_once ON saga_interventions (order_id) WHERE action = 'REFUND';
CREATE INDEX saga_interventions_order_idx ON saga_interventions (order_id);`,
		down: `
DROP INDEX saga_interventions_order_idx;
DROP INDEX saga_interventions_refund_order_once;
DELETE FROM saga_interventions WHERE action = 'REFUND';
ALTER TABLE saga_interventions DROP CONSTRAINT saga_interventions_action_check;
ALTER TABLE saga_interventions ADD CONSTRAINT saga_interventions_action_check
	CHECK (action IN ('REDRIVE', 'REFUND_AND_CANCEL'));
UPDATE orders SET status = 'CONFIRMED' WHERE status IN ('REFUNDING', 'REFUNDED');
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN ('PENDING', 'STOCK_RESERVED', 'PAID',
	'CONFIRMING', 'CONFIRMED', 'CANCELLED'));`
	}
];
