/** Schema of the `users` database. */
import type { Migration } from "../../platform/db/database";

export const usersMigrations: readonly Migration[] = [
	{
		name: "001-create-users",
		up: `
CREATE TABLE users (
	id uuid PRIMARY KEY,
	email text NOT NULL CHECK (email = lower(email)),
	name text NOT NULL,
	password_hash text NOT NULL,
	role text NOT NULL CHECK (role IN ('customer', 'admin')),
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (email);`,
		down: "DROP TABLE users;"
	}
];
