/**
 * The events engine's tables, to include in a service's migrations: `outboxMigrations` in an
 * emitting service (platform/events/outbox.ts), `inboxMigrations` (the inbox and the dead
 * letters) in a consuming one (platform/events/inbox.ts, platform/events/dead-letters.ts).
 *
 * Pattern: eShop's `IntegrationEventLogEntry` table, kept in each service's own database
 * next to its state (dotnet/eShop src/IntegrationEventLogEF).
 */
import type { Migration } from "../db/database";

/** Tables of an emitting service. */
export const outboxMigrations: readonly Migration[] = [
	{
		name: "950-create-outbox",
		up: `
CREATE TABLE outbox (
	seq bigserial PRIMARY KEY,
	id uuid NOT NULL UNIQUE,
	name text NOT NULL,
	aggregate_id text NOT NULL,
	data jsonb NOT NULL,
	request_id text,
	created_at timestamptz NOT NULL DEFAULT now(),
	published_at timestamptz
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE published_at IS NULL;`,
		down: "DROP TABLE outbox;"
	},
	{
		// The retention purge finds published rows by their publication time.
		name: "951-outbox-published-idx",
		up: "CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;",
		down: "DROP INDEX outbox_published_idx;"
	}
];

/** Tables of a consuming service. */
export const inboxMigrations: readonly Migration[] = [
	{
		name: "960-create-inbox",
		up: `
CREATE TABLE inbox (
	consumer text NOT NULL,
	event_id text NOT NULL,
	event_name text NOT NULL,
	processed_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, event_id)
);
CREATE TABLE dead_letters (
	id uuid PRIMARY KEY,
	consumer text NOT NULL,
	event_id text NOT NULL,
	event_name text NOT NULL,
	event jsonb NOT NULL,
	error text NOT NULL,
	deliveries integer NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	replayed_at timestamptz,
	UNIQUE (consumer, event_id)
);`,
		down: "DROP TABLE dead_letters; DROP TABLE inbox;"
	},
	{
		// The retention purge finds old inbox records by their processing time.
		name: "961-inbox-processed-idx",
		up: "CREATE INDEX inbox_processed_idx ON inbox (processed_at);",
		down: "DROP INDEX inbox_processed_idx;"
	}
];
