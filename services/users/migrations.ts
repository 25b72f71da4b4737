/** Schema of the `users` database. */
import type { Migration } from "../../platform/db/database";
import type { DbTransaction } from "../../platform/db/pool";
import { legacyEmailIdentityKey } from "./email-identity";

/** Why an account has no identity key: a row of `email_identity_conflicts`. */
export type EmailIdentityConflictReason = "LOOK_ALIKE" | "NO_KEY";

/**
 * Migration 002's data step: the identity key (services/users/email-identity.ts) of every
 * account, computed here because Postgres cannot run the normaliser. Accounts whose keys
 * collide (look-alike addresses registered before the key existed) are never merged: the
 * oldest (`created_at`, then `id`) keeps the key, each other one is left without a key and
 * reported in `email_identity_conflicts` (`LOOK_ALIKE`, with the account that kept it); an
 * address with no key at all (e.g. an invalid domain) is reported as `NO_KEY`. Accounts
 * without a key still log in with their exact address; the users service logs the count of
 * unresolved conflicts at start (docs/security.md: "One person, one account").
 */
async function keyExistingAccounts(t: DbTransaction): Promise<void> {
	const { rows } = await t.query(
		"SELECT id, email FROM users ORDER BY created_at ASC, id ASC FOR UPDATE"
	);
	const owner = new Map<string, string>();
	const keyed: { ids: string[]; keys: string[] } = { ids: [], keys: [] };
	const conflicts: {
		ids: string[];
		emails: string[];
		keys: (string | null)[];
		kept: (string | null)[];
		reasons: EmailIdentityConflictReason[];
	} = { ids: [], emails: [], keys: [], kept: [], reasons: [] };
	for (const row of rows as { id: string; email: string }[]) {
		const key = legacyEmailIdentityKey(row.email);
		const kept = key === null ? undefined : owner.get(key);
		if (key !== null && kept === undefined) {
			owner.set(key, row.id);
			keyed.ids.push(row.id);
			keyed.keys.push(key);
			continue;
		}
		conflicts.ids.push(row.id);
		conflicts.emails.push(row.email);
		conflicts.keys.push(key);
		conflicts.kept.push(kept ?? null);
		conflicts.reasons.push(key === null ? "NO_KEY" : "LOOK_ALIKE");
	}
	await t.query(
		`UPDATE users SET email_key = k.key
		 FROM unnest($1::uuid[], $2::text[]) AS k (id, key) WHERE users.id = k.id`,
		[keyed.ids, keyed.keys]
	);
	await t.query(
		`INSERT INTO email_identity_conflicts (user_id, email, email_key, kept_user_id, reason)
		 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[])`,
		[conflicts.ids, conflicts.emails, conflicts.keys, conflicts.kept, conflicts.reasons]
	);
}

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
	},
	{
		// One account per identity key; the exact-address index stays (an unkeyed account's
		// address is still its own).
		name: "002-email-identity-key",
		up: async t => {
			await t.query(`
ALTER TABLE users ADD COLUMN email_key text;
CREATE TABLE email_identity_conflicts (
	user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
	email text NOT NULL,
	email_key text,
	kept_user_id uuid REFERENCES users (id) ON DELETE SET NULL,
	reason text NOT NULL CHECK (reason IN ('LOOK_ALIKE', 'NO_KEY')),
	found_at timestamptz NOT NULL DEFAULT now()
);`);
			await keyExistingAccounts(t);
			await t.query("CREATE UNIQUE INDEX users_email_identity_key ON users (email_key);");
		},
		down: "DROP TABLE email_identity_conflicts; ALTER TABLE users DROP COLUMN email_key;"
	}
];
