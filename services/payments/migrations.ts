/** Schema of the `payments` database: payments and their append-only ledger. */
import type { Migration } from "../../platform/db/database";

export const paymentsMigrations: readonly Migration[] = [
	{
		name: "001-create-payments-and-ledger",
		up: `
CREATE TABLE payments (
	id uuid PRIMARY KEY,
	order_id uuid NOT NULL,
	amount integer NOT NULL CHECK (amount >= 0),
	currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
	method text NOT NULL,
	status text NOT NULL CHECK (status IN ('CAPTURED', 'DECLINED', 'REFUNDED', 'VOIDED')),
	decline_code text,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX payments_order_key ON payments (order_id);
CREATE TABLE ledger_entries (
	id bigserial PRIMARY KEY,
	payment_id uuid NOT NULL REFERENCES payments(id),
	order_id uuid NOT NULL,
	kind text NOT NULL CHECK (kind IN ('CAPTURE', 'REFUND')),
	amount integer NOT NULL CHECK (amount >= 0),
	currency char(3) NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ledger_entries_once ON ledger_entries (payment_id, kind);`,
		down: "DROP TABLE ledger_entries; DROP TABLE payments;"
	}
];
