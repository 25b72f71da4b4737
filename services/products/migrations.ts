/** Schema of the `products` database. */
import type { Migration } from "../../platform/db/database";

export const productsMigrations: readonly Migration[] = [
	{
		name: "001-create-products",
		up: `
CREATE TABLE products (
	id uuid PRIMARY KEY,
	sku text NOT NULL,
	name text NOT NULL,
	description text NOT NULL DEFAULT '',
	price integer NOT NULL CHECK (price >= 0),
	currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
	active boolean NOT NULL DEFAULT true,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX products_sku_key ON products (sku);
CREATE INDEX products_name_idx ON products (lower(name));`,
		down: "DROP TABLE products;"
	}
];
