/**
 * The saga tables (`sagas`: one row per saga instance with its lease; `saga_steps`: the step log,
 * one row per attempt of a step or compensation), for the orchestrator's own migrations
 * (platform/db/migrations.ts runs them with umzug).
 */
import type { Migration } from "../db/database";

/** The saga tables, to include in the orchestrator's migrations. */
export const sagaMigrations: readonly Migration[] = [
	{
		name: "900-create-sagas",
		up: `
CREATE TABLE sagas (
	id uuid PRIMARY KEY,
	name text NOT NULL,
	version integer NOT NULL,
	status text NOT NULL CHECK (status IN ('RUNNING','COMPENSATING','COMPLETED','COMPENSATED','FAILED')),
	current_step integer NOT NULL DEFAULT 0,
	data jsonb NOT NULL,
	failure_reason text,
	errors jsonb NOT NULL DEFAULT '[]',
	attempts integer NOT NULL DEFAULT 0,
	lease_owner text,
	lease_expires_at timestamptz,
	deadline_at timestamptz NOT NULL,
	request_id text,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sagas_active_idx ON sagas (lease_expires_at) WHERE status IN ('RUNNING','COMPENSATING');
CREATE INDEX sagas_status_idx ON sagas (status, updated_at DESC);
CREATE TABLE saga_steps (
	id bigserial PRIMARY KEY,
	saga_id uuid NOT NULL REFERENCES sagas(id) ON DELETE CASCADE,
	step_index integer NOT NULL,
	step_name text NOT NULL,
	phase text NOT NULL CHECK (phase IN ('forward','compensate')),
	status text NOT NULL CHECK (status IN ('STARTED','SUCCEEDED','FAILED')),
	attempt integer NOT NULL DEFAULT 1,
	result jsonb,
	error jsonb,
	started_at timestamptz NOT NULL DEFAULT now(),
	finished_at timestamptz
);
CREATE INDEX saga_steps_saga_idx ON saga_steps (saga_id, id);`,
		down: "DROP TABLE saga_steps; DROP TABLE sagas;"
	},
	{
		name: "901-saga-redrives",
		up: "ALTER TABLE sagas ADD COLUMN redrives integer NOT NULL DEFAULT 0;",
		down: "ALTER TABLE sagas DROP COLUMN redrives;"
	},
	{
		name: "902-saga-parent-span",
		up: "ALTER TABLE sagas ADD COLUMN parent_span_id text;",
		down: "ALTER TABLE sagas DROP COLUMN parent_span_id;"
	},
	{
		// A step's writes (current step, data, attempts, lease, updated_at) touch no indexed
		// column any more, so Postgres can make them HOT updates (heap-only tuples: no index
		// entry per update) when the row's page has room, which the fillfactor leaves. Before,
		// none of the saga updates were HOT (`HOT=1 npm run bench:saga`). Recovery scans the
		// active sagas (few: the ones in flight) by the partial index and filters on the lease.
		name: "903-saga-hot-updates",
		up: `
DROP INDEX sagas_active_idx;
CREATE INDEX sagas_active_idx ON sagas (created_at) WHERE status IN ('RUNNING','COMPENSATING');
DROP INDEX sagas_status_idx;
CREATE INDEX sagas_status_idx ON sagas (status, created_at DESC);
ALTER TABLE sagas SET (fillfactor = 70);
ALTER TABLE saga_steps SET (fillfactor = 70);`,
		down: `
DROP INDEX sagas_active_idx;
CREATE INDEX sagas_active_idx ON sagas (lease_expires_at) WHERE status IN ('RUNNING','COMPENSATING');
DROP INDEX sagas_status_idx;
CREATE INDEX sagas_status_idx ON sagas (status, updated_at DESC);
ALTER TABLE sagas RESET (fillfactor);
ALTER TABLE saga_steps RESET (fillfactor);`
	}
];
