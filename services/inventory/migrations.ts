/** Schema of the `inventory` database (plus `idempotencyMigrations`, added by the service). */
import type { Migration } from "../../platform/db/database";

export const inventoryMigrations: readonly Migration[] = [
	{
		name: "001-create-stock-and-reservations",
		up: `
CREATE TABLE stock (
	product_id uuid PRIMARY KEY,
	on_hand integer NOT NULL CHECK (on_hand >= 0),
	reserved integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT stock_reserved_le_on_hand CHECK (reserved <= on_hand)
);
CREATE TABLE reservations (
	order_id uuid PRIMARY KEY,
	status text NOT NULL CHECK (status IN ('RESERVED', 'COMMITTED', 'RELEASED', 'REJECTED')),
	items jsonb NOT NULL,
	reason jsonb,
	expires_at timestamptz,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_expiry_idx ON reservations (expires_at) WHERE status = 'RESERVED';`,
		down: "DROP TABLE reservations; DROP TABLE stock;"
	},
	{
		// Reservations carry a TTL (001 already has `expires_at` and its index): the sweeper
		// marks the lapsed ones EXPIRED. Down turns them into RELEASED (their units were given back).
		name: "002-reservation-expired-status",
		up: `
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
	CHECK (status IN ('RESERVED', 'COMMITTED', 'RELEASED', 'REJECTED', 'EXPIRED'));`,
		down: `
UPDATE reservations SET status = 'RELEASED', updated_at = now() WHERE status = 'EXPIRED';
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
	CHECK (status IN ('RESERVED', 'COMMITTED', 'RELEASED', 'REJECTED'));`
	},
	{
		// The retention purge finds reservations in a final status by their last change.
		name: "003-reservations-final-idx",
		up: "CREATE INDEX reservations_final_idx ON reservations (updated_at) WHERE status <> 'RESERVED';",
		down: "DROP INDEX reservations_final_idx;"
	},
	{
		// An admin's refund with restock (`inventory.restock`): a COMMITTED reservation's units
		// go back on hand once, and it is marked RESTOCKED. Down: back to COMMITTED (the units
		// stay on hand).
		name: "004-reservation-restocked-status",
		up: `
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
	CHECK (status IN ('RESERVED', 'COMMITTED', 'RELEASED', 'REJECTED', 'EXPIRED', 'RESTOCKED'));`,
		down: `
UPDATE reservations SET status = 'COMMITTED', updated_at = now() WHERE status = 'RESTOCKED';
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
	CHECK (status IN ('RESERVED', 'COMMITTED', 'RELEASED', 'REJECTED', 'EXPIRED'));`
	}
];
