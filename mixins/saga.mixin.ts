/**
 * `SagaMixin()`: an orchestrated saga (Garcia-Molina & Salem, "Sagas", SIGMOD 1987; the
 * orchestration form of Richardson's microservices.io "Saga" pattern) whose state lives in the
 * orchestrator's own database, so it can be resumed after a crash.
 *
 * A saga is declared as data in the service schema under `sagas`:
 * ```ts
 * sagas: { order: { name: "order", version: 1, steps: [
 *     { name: "reserveStock", action: "inventory.reserve", params: d => ({ ... }),
 *       compensation: { action: "inventory.release", params: d => ({ ... }) } },
 *     ...
 * ], failureReason: err => "OUT_OF_STOCK", businessErrors: ["INVENTORY_OUT_OF_STOCK"], ... } }
 * ```
 * The steps run in order. Before a step is invoked its intent (`STARTED`) is written to the step
 * log, and its outcome (`SUCCEEDED`/`FAILED`) after, so a step whose answer was lost is still
 * compensated. When a step fails with a business error (declared in `businessErrors`), when a
 * transient error outlasts the step's retries, or when the saga's deadline passes, the saga
 * compensates: every step that was started, in reverse order, including the one that failed
 * (participants treat compensating what never took effect as a no-op success). A compensation
 * that keeps failing parks the saga as `FAILED` with its error history.
 *
 * Steps after the last compensable one (the pivot) cannot be undone: their transient failures are
 * retried and, if they persist, the saga is parked `FAILED` rather than compensated; the deadline
 * no longer applies to them. Whether the pivot has passed is also read from its effect
 * (`mirror.pivotStatuses`) before compensating, so a pivot whose outcome was not recorded (a crash
 * between its effect and the log) is never undone by recovery: the saga goes forward. A step's
 * retry policy is the only retry layer: its calls are made with the broker's retry policy off
 * (`retries: 0`).
 *
 * Stopping the service starts no further step: the calls in flight are awaited and recorded, and
 * the saga stays `RUNNING`/`COMPENSATING`, to be resumed with `runSaga`.
 *
 * Statuses: `RUNNING` → `COMPLETED`, or `RUNNING` → `COMPENSATING` → `COMPENSATED`, or `FAILED`
 * (parked). Every status change and step outcome is committed before the next call is made.
 *
 * Hooks (service methods named in the definition) run inside the transaction that records the
 * saga's transition, so the orchestrator's own state (e.g. the order's status) changes atomically
 * with the saga log: `onStepSucceeded(saga, stepName, transaction)`, `onCompleted(saga, transaction)`,
 * `onCompensated(saga, reason, transaction)`, `onFailed(saga, transaction)`. A `mirror` does the
 * commonest of them declaratively and cheaper: the subject row's status after each step and a
 * refusal flag, in the step's own statement (`SagaMirror`).
 */
import crypto from "node:crypto";
import type { ServiceSchema } from "moleculer";
import { QueryTypes, type Sequelize, type Transaction } from "sequelize";
import type { Migration } from "../platform/db/database";
import { isErrorType, shopError, type ErrorType } from "../platform/errors";
import { countMetric, observeMetric, setMetric } from "../platform/metrics";
import { withRequestId } from "../platform/request-context";
import { runStoppedFirst } from "../platform/lifecycle";
import { fastQuery } from "../platform/db/fast-query";
import { config } from "../platform/config";
import { addRetentionTask, startRetention, stopRetention } from "../platform/retention";
import { prependWrites, type DeferredWrite } from "../platform/db/deferred-writes";

export type SagaStatus = "RUNNING" | "COMPENSATING" | "COMPLETED" | "COMPENSATED" | "FAILED";

/** Saga data: JSON-safe. */
export type SagaData = Record<string, unknown>;

/** Retry policy of a step or compensation: exponential backoff with full jitter (AWS
 * Architecture Blog, "Exponential Backoff And Jitter", 2015). Delays in ms. */
export interface SagaRetryPolicy {
	/** Attempts in all, the first included. */
	readonly maxAttempts: number;
	readonly baseDelayMs: number;
	readonly maxDelayMs: number;
}

export interface SagaStepDefinition<D extends SagaData = SagaData> {
	/** Unique in the saga; also the suffix of the step's idempotency key `<sagaId>:<name>`. */
	readonly name: string;
	/** Remote action invoked by the step, e.g. `inventory.reserve`. Exclusive with `method`. */
	readonly action?: string;
	/** Local service method invoked instead: `(saga, idempotencyKey) => result`. */
	readonly method?: string;
	/** Builds the call's params from the saga data. */
	readonly params?: (data: D, idempotencyKey: string) => Record<string, unknown>;
	/** Merges the step's result into the saga data. */
	readonly result?: (data: D, result: unknown) => Partial<D>;
	/** The compensating call; a step without one is not undone (after the pivot). */
	readonly compensation?: {
		readonly action: string;
		readonly params: (data: D, idempotencyKey: string) => Record<string, unknown>;
	};
	/** Call timeout in ms (default: the definition's). */
	readonly timeout?: number;
	readonly retry?: SagaRetryPolicy;
}

export interface SagaDefinition<D extends SagaData = SagaData> {
	readonly name: string;
	/** A saga in flight finishes on the definition version it started with. */
	readonly version: number;
	readonly steps: readonly SagaStepDefinition<D>[];
	/** Error `type`s that are business failures: compensate at once, never retry. */
	readonly businessErrors: readonly string[];
	/** Maps the error that ended the forward path to the saga's failure reason (e.g. `OUT_OF_STOCK`). */
	readonly failureReason: (error: SagaErrorRecord) => string;
	/** Default step call timeout in ms. */
	readonly stepTimeoutMs: number;
	/** Default retry policy of forward steps. */
	readonly retry: SagaRetryPolicy;
	/**
	 * Retry policy of compensations (default: `retry` with at least 8 attempts). Compensations
	 * retry every error, business or not: undoing must eventually succeed, or the saga is parked.
	 */
	readonly compensationRetry?: SagaRetryPolicy;
	/**
	 * A service method run before every forward step up to the pivot, `(saga) => void`; throwing a
	 * business error there compensates (e.g. the customer asked to cancel).
	 */
	readonly beforeStep?: string;
	/**
	 * The orchestrator's own row for the saga's subject (e.g. the order), kept by the saga's own
	 * statements rather than by hooks: a step's outcome, the refusal check, the status mirror and
	 * the next step's intent are then ONE statement (no transaction, no extra round trips).
	 */
	readonly mirror?: SagaMirror;
	readonly onStepSucceeded?: string;
	readonly onCompleted?: string;
	readonly onCompensated?: string;
	readonly onFailed?: string;
}

/**
 * A saga's subject row, updated in the saga's own statements. Identifiers come from the
 * definition (code), never from input.
 */
export interface SagaMirror {
	/** The row's table; its primary key is `id`. */
	readonly table: string;
	/** The saga data field holding the row's `id`. */
	readonly idField: string;
	/** Its status column. */
	readonly statusColumn: string;
	/** The status a forward step's success sets, by step name. */
	readonly statusAfterStep: Readonly<Record<string, string>>;
	/** Statuses that a step's success leaves alone (e.g. already past the pivot, or final). */
	readonly keepStatuses: readonly string[];
	/** A timestamp column set to `now()` with the status. */
	readonly updatedAtColumn?: string;
	/**
	 * A boolean column: while it is true, no forward step up to the pivot starts and the saga
	 * compensates with the shop error `error` (e.g. the customer asked to cancel). Like
	 * `beforeStep`, checked before every such step.
	 */
	readonly refuse?: { readonly column: string; readonly error: ErrorType };
	/**
	 * Statuses of the subject that say the pivot has passed (e.g. `CONFIRMING`, `CONFIRMED`), set
	 * by the pivot step itself. When the pivot's effect committed but its outcome was not recorded
	 * (a crash, a lost connection), the saga would otherwise be resumed before its pivot and
	 * compensate what cannot be undone; with these, before compensating the saga reads the
	 * subject's status (one statement, on the compensation path only) and, past the pivot, goes
	 * forward instead: the deadline no longer applies and a failure parks it.
	 */
	readonly pivotStatuses?: readonly string[];
}

/** A forward step's outcome, as the saga records it. */
export interface SagaStepOutcome {
	index: number;
	stepName: string;
	/** Its STARTED row in the step log. */
	logId: number;
	result: unknown;
	/** What the step's `result` merged into the saga data. */
	patch: SagaData;
}

/** An error as the saga log keeps it. */
export interface SagaErrorRecord {
	step: string;
	phase: "forward" | "compensate";
	type: string;
	code: number | null;
	message: string;
	at: string;
}

/** A saga instance as stored. */
export interface SagaInstance<D extends SagaData = SagaData> {
	id: string;
	name: string;
	version: number;
	status: SagaStatus;
	/** Index of the step being run (forward) or the last one started. */
	currentStep: number;
	data: D;
	/** Failure reason once compensating, e.g. `OUT_OF_STOCK`. */
	failureReason: string | null;
	errors: SagaErrorRecord[];
	attempts: number;
	leaseOwner: string | null;
	leaseExpiresAt: Date | null;
	deadlineAt: Date;
	requestId: string | null;
	/** The tracing span that started the saga: its step calls are its children, in its trace. */
	parentSpanId: string | null;
	/** Times an operator redrove the saga (part of its step keys). */
	redrives: number;
	createdAt: Date;
	updatedAt: Date;
}

/** One row of the step log. */
export interface SagaStepLogEntry {
	id: number;
	sagaId: string;
	stepIndex: number;
	stepName: string;
	phase: "forward" | "compensate";
	status: "STARTED" | "SUCCEEDED" | "FAILED";
	attempt: number;
	result: unknown;
	error: SagaErrorRecord | null;
	startedAt: Date;
	finishedAt: Date | null;
}

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

/**
 * SQL for `sagas.errors` with the error record in parameter `param` appended, keeping only the
 * newest `SAGA_ERRORS_KEEP` entries (bounded at write time: a saga retried for long does not
 * grow its row without bound; every attempt's error also stays in its `saga_steps` row).
 */
function appendError(param: string): string {
	const keep = config().retention.sagaErrorsKeep;
	return `(SELECT COALESCE(jsonb_agg(e ORDER BY i), '[]'::jsonb)
		FROM jsonb_array_elements(errors || jsonb_build_array(${param}::jsonb)) WITH ORDINALITY AS x(e, i)
		WHERE i > jsonb_array_length(errors) + 1 - ${keep})`;
}

/**
 * Call options that keep a saga's step calls in the trace of the request that started it
 * (Moleculer's trace id is the request id): children of its span when one was recorded.
 */
function sagaTraceOptions(saga: SagaInstance): {
	requestID?: string;
	parentSpan?: { id: string; traceID: string; sampled: boolean };
} {
	if (!saga.requestId) return {};
	if (!saga.parentSpanId) return { requestID: saga.requestId };
	return {
		requestID: saga.requestId,
		parentSpan: { id: saga.parentSpanId, traceID: saga.requestId, sampled: true }
	};
}

/**
 * The idempotency key of a step call: `<sagaId>:<step>` (`:compensate` for its compensation),
 * plus `:r<N>` once an operator has redriven the saga N times, so a redriven step is really
 * tried again instead of replaying the outcome that parked it.
 */
export function sagaStepKey(
	saga: Pick<SagaInstance, "id" | "redrives">,
	step: string,
	compensate = false
): string {
	return `${saga.id}:${step}${compensate ? ":compensate" : ""}${saga.redrives > 0 ? `:r${saga.redrives}` : ""}`;
}

/** What the mixin adds to `this`. */
export interface SagaMixinMethods {
	/** Sagas this service instance is running or about to run now (launched or recovered). */
	sagaLoad(): number;
	/**
	 * Records a new saga instance (status RUNNING), inside the caller's transaction when given,
	 * so it commits atomically with the caller's own state. Run it with `runSaga` after commit.
	 */
	createSaga(
		name: string,
		data: SagaData,
		opts: {
			id?: string;
			deadlineMs: number;
			requestId?: string | null;
			/** The span that starts the saga (`ctx.span?.id`): its step calls become its children. */
			parentSpanId?: string | null;
			transaction?: Transaction;
			/**
			 * Record the first step's intent in the same statement (one round trip less); the
			 * caller vouches nothing can refuse that step yet (`beforeStep` and `mirror.refuse`
			 * are not checked for it).
			 */
			startFirstStep?: boolean;
			/**
			 * The caller's own writes (e.g. the order row, its outbox event), made by the same
			 * statement: atomic with the saga without a transaction (platform/db/deferred-writes.ts).
			 */
			with?: readonly DeferredWrite[];
		}
	): Promise<SagaInstance & { firstLogId: number | null }>;
	/**
	 * Drives a saga to its end (or to parking). Never throws: failures are recorded. `owned`: the
	 * saga as this node holds its lease (not claimed again); `firstLogId`: with `owned`, its
	 * current step's intent is already recorded (`createSaga` with `startFirstStep`).
	 */
	runSaga(
		id: string,
		owned?: SagaInstance,
		firstLogId?: number | null
	): Promise<SagaInstance | null>;
	/**
	 * Starts `runSaga` in the background, tracked so that stopping the service waits for it.
	 * `fresh`: the instance `createSaga` returned, once its transaction committed; it emits
	 * `saga.started` and is driven without reading or claiming it again (the lease is ours), from
	 * its first step's recorded intent when it was created with `startFirstStep`.
	 */
	launchSaga(id: string, opts?: { fresh?: SagaInstance & { firstLogId?: number | null } }): void;
	/**
	 * Claims up to `limit` sagas whose lease expired (their node died or stopped) and runs them.
	 * Runs on start and every `recoveryIntervalMs`. @returns the ids claimed
	 */
	recoverSagas(limit?: number): Promise<string[]>;
	getSaga(id: string): Promise<SagaInstance | null>;
	getSagaSteps(id: string): Promise<SagaStepLogEntry[]>;
	/** The definition of saga `name`: that version, or the highest deployed. Throws if absent. */
	sagaDefinition(name: string, version?: number): SagaDefinition;
	/**
	 * Emits a saga lifecycle event (`saga.compensating`, ...) as the mixin does, e.g. for an
	 * operator's transition; a failure to emit is logged, never thrown.
	 */
	sagaEmit(event: string, saga: SagaInstance, extra?: Record<string, unknown>): Promise<void>;
}

declare module "moleculer" {
	interface ServiceSchema {
		/**
		 * Saga definitions of a service using SagaMixin, by name: one definition, or every version
		 * still deployed (sagas in flight finish on the version they started with; new ones use the
		 * highest).
		 */
		sagas?: Record<string, SagaDefinition<any> | readonly SagaDefinition<any>[]>;
	}
}

/** Options of `SagaMixin`. Times in ms. */
export interface SagaMixinOptions {
	/** How long a claim on a saga lasts without renewal (renewed at every step attempt). */
	readonly leaseMs?: number;
	/** How often to look for sagas whose lease expired; 0 turns periodic recovery off. */
	readonly recoveryIntervalMs?: number;
	/**
	 * Injected faults (failure tests): crash before invoking, or right after recording, a step.
	 * A list (`SAGA_FAULTS`), or a predicate asked at every such point.
	 */
	readonly faults?:
		| readonly { kind: "crash-before" | "crash-after"; step: string }[]
		| ((point: {
				kind: "crash-before" | "crash-after";
				step: string;
				sagaId: string;
		  }) => boolean);
	/** What a crash is; default: the process SIGKILLs itself (no cleanup, nothing flushed). */
	readonly crash?: () => void;
}

/** Thrown when this node no longer holds a saga's lease: it stops driving that saga. */
export class SagaLeaseLostError extends Error {
	constructor(sagaId: string) {
		super(`Lease of saga ${sagaId} lost to another node`);
		this.name = "SagaLeaseLostError";
	}
}

interface SagaRow {
	id: string;
	name: string;
	version: number;
	status: SagaStatus;
	current_step: number;
	data: SagaData;
	failure_reason: string | null;
	errors: SagaErrorRecord[];
	attempts: number;
	lease_owner: string | null;
	lease_expires_at: Date | null;
	deadline_at: Date;
	request_id: string | null;
	parent_span_id?: string | null;
	redrives?: number;
	created_at: Date;
	updated_at: Date;
}

function toInstance(r: SagaRow): SagaInstance {
	return {
		id: r.id,
		name: r.name,
		version: r.version,
		status: r.status,
		currentStep: r.current_step,
		data: r.data,
		failureReason: r.failure_reason,
		errors: r.errors,
		attempts: r.attempts,
		leaseOwner: r.lease_owner,
		leaseExpiresAt: r.lease_expires_at,
		deadlineAt: r.deadline_at,
		requestId: r.request_id,
		parentSpanId: r.parent_span_id ?? null,
		redrives: r.redrives ?? 0,
		createdAt: r.created_at,
		updatedAt: r.updated_at
	};
}

/** Error types that are transient: retried with backoff. */
const TRANSIENT_TYPES = [
	"REQUEST_TIMEOUT",
	"SERVICE_NOT_AVAILABLE",
	"SERVICE_NOT_FOUND",
	"CIRCUIT_BREAKER_OPEN",
	"QUEUE_FULL",
	"SERVICE_UNAVAILABLE",
	"PAYMENTS_PROCESSOR_UNAVAILABLE"
];

/** Whether an error is transient (worth retrying): retryable Moleculer errors and the list above. */
export function isTransientError(err: unknown): boolean {
	if (typeof err !== "object" || err === null) return false;
	const e = err as { retryable?: unknown; type?: unknown };
	return e.retryable === true || isErrorType(err, ...TRANSIENT_TYPES);
}

/** Delay before attempt `attempt` (2, 3, ...): full jitter over an exponential cap, in ms. */
export function backoffDelay(
	policy: SagaRetryPolicy,
	attempt: number,
	random = Math.random
): number {
	const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 2));
	return Math.floor(random() * cap);
}

function errorRecord(step: string, phase: "forward" | "compensate", err: unknown): SagaErrorRecord {
	const e = (err ?? {}) as { type?: unknown; code?: unknown; message?: unknown; name?: unknown };
	return {
		step,
		phase,
		type: typeof e.type === "string" && e.type ? e.type : String(e.name ?? "Error"),
		code: typeof e.code === "number" ? e.code : null,
		message: String(e.message ?? err),
		at: new Date().toISOString()
	};
}

/** `name` quoted as an SQL identifier (names come from saga definitions, i.e. code). */
function ident(name: string): string {
	return `"${name.replace(/"/g, '""')}"`;
}

/**
 * The mirror's status update: the row `$<id>` takes status `$<status>` unless its status is one
 * of `$<keep>` (text[]); `also` is more of the WHERE clause.
 */
function mirrorStatusUpdate(
	m: SagaMirror,
	p: { id: number; status: number; keep: number },
	also = ""
): string {
	const col = ident(m.statusColumn);
	const touch = m.updatedAtColumn ? `, ${ident(m.updatedAtColumn)} = now()` : "";
	return `UPDATE ${ident(m.table)} SET ${col} = $${p.status}${touch}
		WHERE id = $${p.id} AND ${col} <> ALL($${p.keep}::text[])${also}`;
}

/**
 * Whether step `i` lies after the saga's pivot: the first step following the last compensable
 * one. A failure up to the pivot is compensated; after it the saga can only go forward.
 */
export function sagaIsAfterPivot(def: SagaDefinition<any>, i: number): boolean {
	let lastCompensable = -1;
	def.steps.forEach((s, idx) => {
		if (s.compensation) lastCompensable = idx;
	});
	return i > lastCompensable + 1;
}

const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

/** Every deployed version of a schema's saga `name`. */
function versionsOf(schema: ServiceSchema, name: string): readonly SagaDefinition[] {
	const entry = schema.sagas?.[name];
	if (!entry) return [];
	return (Array.isArray(entry) ? entry : [entry]) as readonly SagaDefinition[];
}

/**
 * The saga mixin. Needs `DbMixin` (for `this.sequelize`) and the `sagaMigrations` in the
 * service's migrations.
 *
 * Crash recovery and ownership: every saga carries a lease (`lease_owner`, `lease_expires_at`).
 * The node driving a saga renews it at every step attempt, and every write it makes is fenced on
 * still owning it (`WHERE lease_owner = me`): a node that lost its lease stops. On start and
 * every `recoveryIntervalMs`, a node claims sagas whose lease expired with
 * `SELECT ... FOR UPDATE SKIP LOCKED` (so two nodes never claim the same one) and resumes them
 * forward or backward from their step log. A step that was STARTED without a recorded outcome is
 * invoked again with the same idempotency key: participants answer a repeat with the first outcome.
 *
 * Events emitted (after the transition commits): `saga.started`, `saga.stepCompleted`,
 * `saga.compensating`, `saga.completed`, `saga.compensated`, `saga.failed`, each
 * `{ sagaId, name, version, status, step?, failureReason?, data }`.
 */
export function SagaMixin(opts: SagaMixinOptions = {}): Partial<ServiceSchema> {
	const leaseMs = opts.leaseMs ?? 15_000;
	const recoveryIntervalMs = opts.recoveryIntervalMs ?? 5_000;
	const faults = opts.faults ?? [];

	/**
	 * On stop: running sagas start no further step or attempt; the ones in flight are awaited so
	 * their outcome is recorded (the next durable point); then this node gives up its leases, so
	 * another node resumes those sagas at once (bounded by the broker's shutdown).
	 */
	async function drainSagas(this: any): Promise<void> {
		if (this.$sagaStopping) return; // stopped twice: the first drain did it all
		this.$sagaStopping = true;
		if (this.$sagaRecoveryTimer && this.$sagaRecoveryTimer !== true)
			clearInterval(this.$sagaRecoveryTimer);
		await Promise.allSettled([...this.$sagasInFlight]);
		await (this.sequelize as Sequelize)
			.query(
				`UPDATE sagas SET lease_expires_at = now() WHERE lease_owner = $1 AND status IN ('RUNNING','COMPENSATING')`,
				{ bind: [this.$sagaOwner] }
			)
			.catch((err: unknown) => this.logger.warn("Could not hand back saga leases", err));
	}

	const crash = opts.crash ?? (() => process.kill(process.pid, "SIGKILL"));
	function crashIf(kind: "crash-before" | "crash-after", step: string, sagaId: string): void {
		const hit =
			typeof faults === "function"
				? faults({ kind, step, sagaId })
				: faults.some(f => f.kind === kind && f.step === step);
		if (hit) crash();
	}

	return {
		merged(schema: ServiceSchema): void {
			// Moleculer runs `stopped` handlers in reverse merge order, and DbMixin's (moleculer-db)
			// closes the database. Keep the drain last so that it runs first, whatever the order
			// of the mixins, while the saga log can still be written.
			runStoppedFirst(schema, drainSagas);
			runStoppedFirst(schema, stopRetention);
		},

		created(this: any): void {
			this.$sagasInFlight = new Set<Promise<unknown>>();
			/** Sagas this instance is driving now: one run per saga per node. */
			this.$sagaRuns = new Map<string, Promise<SagaInstance | null>>();
			this.$sagaStopping = false;
			this.$sagaRecovering = false;
			// A fresh owner token per service instance: a restarted node with the same nodeID
			// does not mistake the dead process's leases for its own.
			this.$sagaOwner = `${this.broker.nodeID}:${crypto.randomBytes(4).toString("hex")}`;
			// Retention (platform/retention.ts): finished sagas (never running, compensating or
			// parked ones), their steps first, SAGA_RETENTION_MS after they were created and last
			// changed.
			const finished = `SELECT id FROM sagas WHERE status IN ('COMPLETED','COMPENSATED')
				AND created_at < now() - $2::float8 * interval '1 millisecond'
				AND updated_at < now() - $2::float8 * interval '1 millisecond'`;
			const windowMs = config().retention.sagaMs;
			addRetentionTask(this, {
				table: "saga_steps",
				sql: `DELETE FROM saga_steps WHERE id IN (SELECT id FROM saga_steps
					WHERE saga_id IN (${finished}) LIMIT $1)`,
				windowMs
			});
			addRetentionTask(this, {
				table: "sagas",
				sql: `DELETE FROM sagas WHERE id IN (${finished} ORDER BY created_at LIMIT $1)`,
				windowMs
			});
		},

		started(this: any): void {
			startRetention.call(this);
			// Recovery waits for the whole broker: resuming a saga before its participants are
			// registered would only burn its retries.
			if (this.broker.started) this.sagaStartRecovery();
		},

		events: {
			"$broker.started"(this: any): void {
				this.sagaStartRecovery();
			}
		},

		stopped: drainSagas,

		methods: {
			async createSaga(
				this: any,
				name: string,
				data: SagaData,
				opts: {
					id?: string;
					deadlineMs: number;
					requestId?: string | null;
					parentSpanId?: string | null;
					transaction?: Transaction;
					/**
					 * Also record the first step's intent (STARTED, attempt 1) in the same
					 * statement, for `launchSaga`. The caller vouches that nothing can refuse
					 * that step yet (`beforeStep`, `mirror.refuse` are not checked for it): e.g.
					 * the subject is created in the same transaction.
					 */
					startFirstStep?: boolean;
					/** Writes made by the same statement (see the interface). */
					with?: readonly DeferredWrite[];
				}
			): Promise<SagaInstance & { firstLogId: number | null }> {
				const def = this.sagaDefinition(name) as SagaDefinition;
				const id = opts.id ?? crypto.randomUUID();
				const first = opts.startFirstStep ? (def.steps[0]?.name ?? null) : null;
				const statement = prependWrites(
					`WITH s AS (
						INSERT INTO sagas (id, name, version, status, current_step, data, deadline_at, request_id,
							lease_owner, lease_expires_at, parent_span_id, attempts)
						VALUES ($1, $2, $3, 'RUNNING', 0, $4::jsonb, now() + ($5 || ' milliseconds')::interval, $6,
							$7, now() + ($8 || ' milliseconds')::interval, $9, CASE WHEN $10::text IS NULL THEN 0 ELSE 1 END)
						RETURNING *),
					 f AS (
						INSERT INTO saga_steps (saga_id, step_index, step_name, phase, status, attempt)
						SELECT id, 0, $10, 'forward', 'STARTED', 1 FROM s WHERE $10::text IS NOT NULL RETURNING id)
					 SELECT s.*, (SELECT id FROM f) AS first_log_id FROM s`,
					[
						id,
						def.name,
						def.version,
						JSON.stringify(data),
						String(opts.deadlineMs),
						opts.requestId ?? null,
						this.$sagaOwner,
						String(leaseMs),
						opts.parentSpanId ?? null,
						first
					],
					opts.with ?? []
				);
				const rows = (await fastQuery(this.sequelize as Sequelize, statement.sql, {
					bind: statement.bind,
					type: QueryTypes.SELECT,
					transaction: opts.transaction
				})) as (SagaRow & { first_log_id: string | number | null })[];
				const firstLogId = rows[0]!.first_log_id;
				return {
					...toInstance(rows[0]!),
					firstLogId: firstLogId === null ? null : Number(firstLogId)
				};
			},

			/** A recovery pass now, then every `recoveryIntervalMs` until the service stops. */
			sagaStartRecovery(this: any): void {
				if (this.$sagaRecoveryTimer || this.$sagaStopping) return;
				const tick = (): void => {
					this.recoverSagas().catch((err: unknown) =>
						this.logger.warn("Saga recovery pass failed", err)
					);
				};
				tick();
				if (recoveryIntervalMs > 0) {
					this.$sagaRecoveryTimer = setInterval(tick, recoveryIntervalMs);
					this.$sagaRecoveryTimer.unref?.();
				} else this.$sagaRecoveryTimer = true;
			},

			sagaLoad(this: any): number {
				return Math.max(this.$sagasInFlight.size, this.$sagaRuns.size);
			},

			/**
			 * Drives saga `id` in the background. `launch.fresh`: the instance `createSaga` just
			 * returned (its lease is this node's), so it is neither read nor claimed again.
			 */
			launchSaga(
				this: any,
				id: string,
				launch: { fresh?: SagaInstance & { firstLogId?: number | null } } = {}
			): void {
				const p: Promise<unknown> = (async () => {
					if (launch.fresh) {
						const { firstLogId, ...fresh } = launch.fresh;
						await this.sagaEmit("saga.started", fresh);
						return this.runSaga(id, fresh, firstLogId ?? null);
					}
					return this.runSaga(id);
				})().finally(() => this.$sagasInFlight.delete(p));
				this.$sagasInFlight.add(p);
			},

			async recoverSagas(this: any, limit = 50): Promise<string[]> {
				if (this.$sagaStopping || this.$sagaRecovering) return [];
				this.$sagaRecovering = true;
				try {
					const rows = (await fastQuery(
						this.sequelize as Sequelize,
						`UPDATE sagas SET lease_owner = $1, lease_expires_at = now() + ($2 || ' milliseconds')::interval
						 WHERE id IN (
							SELECT id FROM sagas
							WHERE status IN ('RUNNING','COMPENSATING')
							  AND (lease_expires_at IS NULL OR lease_expires_at < now())
							ORDER BY updated_at LIMIT $3
							FOR UPDATE SKIP LOCKED)
						 RETURNING id`,
						{ bind: [this.$sagaOwner, String(leaseMs), limit], type: QueryTypes.SELECT }
					)) as { id: string }[];
					for (const r of rows) {
						this.logger.info(`Recovering saga ${r.id} (its lease had expired)`);
						this.launchSaga(r.id);
					}
					await this.sagaCountParked();
					return rows.map(r => r.id);
				} finally {
					this.$sagaRecovering = false;
				}
			},

			/** Sets the `shop.sagas.parked` gauge from the database (with metrics on). */
			async sagaCountParked(this: any): Promise<void> {
				if (!this.broker.isMetricsEnabled()) return;
				const rows = (await fastQuery(
					this.sequelize as Sequelize,
					"SELECT name, count(*)::int AS n FROM sagas WHERE status = 'FAILED' GROUP BY name",
					{ type: QueryTypes.SELECT }
				)) as { name: string; n: number }[];
				const counts = new Map<string, number>(
					Object.keys(this.schema.sagas ?? {}).map(name => [name, 0])
				);
				for (const r of rows) counts.set(r.name, r.n);
				for (const [saga, n] of counts)
					setMetric(this.broker, "sagasParkedNow", n, { saga });
			},

			async getSaga(this: any, id: string): Promise<SagaInstance | null> {
				const rows = (await fastQuery(
					this.sequelize as Sequelize,
					"SELECT * FROM sagas WHERE id = $1",
					{ bind: [id], type: QueryTypes.SELECT }
				)) as SagaRow[];
				return rows[0] ? toInstance(rows[0]) : null;
			},

			async getSagaSteps(this: any, id: string): Promise<SagaStepLogEntry[]> {
				const rows = (await fastQuery(
					this.sequelize as Sequelize,
					"SELECT * FROM saga_steps WHERE saga_id = $1 ORDER BY id",
					{ bind: [id], type: QueryTypes.SELECT }
				)) as Record<string, any>[];
				return rows.map(r => ({
					id: Number(r.id),
					sagaId: r.saga_id,
					stepIndex: r.step_index,
					stepName: r.step_name,
					phase: r.phase,
					status: r.status,
					attempt: r.attempt,
					result: r.result,
					error: r.error,
					startedAt: r.started_at,
					finishedAt: r.finished_at
				}));
			},

			/**
			 * The definition of saga `name`: the given version, or the highest deployed.
			 * @throws Error when that version is not deployed on this node
			 */
			sagaDefinition(this: any, name: string, version?: number): SagaDefinition {
				const all = versionsOf(this.schema, name);
				if (all.length === 0) throw new Error(`Unknown saga "${name}"`);
				if (version === undefined)
					return all.reduce((a, b) => (b.version > a.version ? b : a));
				const def = all.find(d => d.version === version);
				if (!def)
					throw new Error(
						`Saga "${name}" v${version} is not deployed here (have v${all.map(d => d.version).join(", v")})`
					);
				return def;
			},

			/**
			 * Claims the saga (it is unowned, its lease expired, or this node owns it) and renews
			 * the lease. @returns the saga, or null when another node holds it or it has ended
			 */
			async sagaClaim(this: any, id: string): Promise<SagaInstance | null> {
				const rows = (await fastQuery(
					this.sequelize as Sequelize,
					`UPDATE sagas SET lease_owner = $2, lease_expires_at = now() + ($3 || ' milliseconds')::interval
					 WHERE id = $1 AND status IN ('RUNNING','COMPENSATING')
					   AND (lease_owner = $2 OR lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < now())
					 RETURNING *`,
					{ bind: [id, this.$sagaOwner, String(leaseMs)], type: QueryTypes.SELECT }
				)) as SagaRow[];
				return rows[0] ? toInstance(rows[0]) : null;
			},

			/**
			 * Drives a saga to its end, to parking, or to the next durable point when this node
			 * stops. Never throws: an orchestrator-side failure (its own database, a lost lease)
			 * leaves the saga resumable by recovery.
			 * @returns the saga as this run left it, or null when it was not driven
			 */
			runSaga(
				this: any,
				id: string,
				owned?: SagaInstance,
				firstLogId: number | null = null
			): Promise<SagaInstance | null> {
				const running = this.$sagaRuns.get(id);
				if (running) return running;
				const run: Promise<SagaInstance | null> = this.sagaDrive(
					id,
					owned,
					firstLogId
				).finally(() => this.$sagaRuns.delete(id));
				this.$sagaRuns.set(id, run);
				return run;
			},

			async sagaDrive(
				this: any,
				id: string,
				owned?: SagaInstance,
				firstLogId: number | null = null
			): Promise<SagaInstance | null> {
				try {
					// A saga this node just created is already leased to it: no claim round trip.
					let saga: SagaInstance | null = owned ?? (await this.sagaClaim(id));
					if (!saga) {
						const current: SagaInstance | null = await this.getSaga(id);
						// Ended sagas answer as they are; a saga held by another node is left to it.
						return current && !["RUNNING", "COMPENSATING"].includes(current.status)
							? current
							: null;
					}
					const def: SagaDefinition = this.sagaDefinition(saga.name, saga.version);
					// Its log lines carry the request that started it, also when resumed later.
					return await withRequestId(saga.requestId, async () => {
						if (saga!.status === "RUNNING")
							saga = await this.sagaForward(def, saga!, owned ? firstLogId : null);
						if (saga && saga.status === "COMPENSATING" && !this.$sagaStopping)
							saga = await this.sagaCompensate(def, saga);
						return saga;
					});
				} catch (err) {
					if (err instanceof SagaLeaseLostError) this.logger.warn(err.message);
					else this.logger.error(`Saga ${id} stopped on an orchestrator error`, err);
					return null;
				}
			},

			/** Whether the deadline has passed (it applies only up to the pivot). */
			sagaDeadlinePassed(
				this: any,
				def: SagaDefinition,
				saga: SagaInstance,
				i: number
			): boolean {
				return (
					!sagaIsAfterPivot(def, i) && Date.now() >= new Date(saga.deadlineAt).getTime()
				);
			},

			/** Runs the forward steps from `currentStep`. */
			async sagaForward(
				this: any,
				def: SagaDefinition,
				saga: SagaInstance,
				firstLogId: number | null = null
			): Promise<SagaInstance> {
				const deadlineRecord = (step: string): SagaErrorRecord => ({
					step,
					phase: "forward",
					type: "SAGA_DEADLINE_EXCEEDED",
					code: null,
					message: "The saga's deadline passed",
					at: new Date().toISOString()
				});
				// The log id of the next step's first attempt when its intent was recorded in the
				// same transaction as the previous step's outcome (one round trip less per step).
				// `firstLogId`: the current step's intent, recorded when the saga was created.
				let preStarted: number | null = firstLogId;
				// Whether the subject says the pivot has passed (`mirror.pivotStatuses`): read only
				// when the saga is about to compensate, and from then on it only goes forward.
				let pastPivot = false;
				const mayCompensate = async (i: number): Promise<boolean> => {
					if (sagaIsAfterPivot(def, i) || pastPivot) return false;
					pastPivot = await this.sagaPivotPassed(def, saga);
					if (pastPivot)
						this.logger.warn(
							`Saga ${saga.id} (${saga.name}): its subject is past the pivot, going forward`
						);
					return !pastPivot;
				};
				for (let i = saga.currentStep; i < def.steps.length; i++) {
					const step = def.steps[i]!;
					const policy = step.retry ?? def.retry;
					let attempt = 0;
					for (;;) {
						let logId: number;
						if (preStarted !== null) {
							// Stopping, the deadline and `beforeStep` were checked before it was recorded.
							logId = preStarted;
							preStarted = null;
							attempt++;
						} else {
							// Stopping: leave the saga RUNNING here, to be resumed.
							if (this.$sagaStopping) return saga;
							if (
								!pastPivot &&
								this.sagaDeadlinePassed(def, saga, i) &&
								(await mayCompensate(i))
							)
								return this.sagaBeginCompensation(
									def,
									saga,
									deadlineRecord(step.name),
									i
								);
							attempt++;
							if (
								(def.beforeStep || def.mirror?.refuse) &&
								!sagaIsAfterPivot(def, i) &&
								!pastPivot
							) {
								try {
									if (def.beforeStep) await this[def.beforeStep](saga);
									await this.sagaCheckRefusal(def, saga);
								} catch (err) {
									const rec = errorRecord(step.name, "forward", err);
									await this.sagaAppendError(saga, rec);
									return this.sagaBeginCompensation(def, saga, rec, i);
								}
							}
							logId = await this.sagaLogStart(saga, i, step.name, "forward", attempt);
						}
						crashIf("crash-before", step.name, saga.id);
						const key = sagaStepKey(saga, step.name);
						let result: unknown;
						try {
							result = await this.sagaTimed(saga, step.name, "forward", () =>
								this.sagaInvoke(def, step, saga, key)
							);
						} catch (err) {
							const rec = errorRecord(step.name, "forward", err);
							await this.sagaLogFailure(saga, logId, rec);
							saga.errors.push(rec);
							const business = isErrorType(err, ...def.businessErrors);
							const transient = !business && isTransientError(err);
							if (transient && attempt < policy.maxAttempts) {
								await sleep(backoffDelay(policy, attempt + 1));
								continue;
							}
							if (!(await mayCompensate(i))) return this.sagaPark(def, saga, rec);
							return this.sagaBeginCompensation(def, saga, rec, i);
						}
						// Recording the outcome is the orchestrator's own business: a failure here
						// is not the step's; it leaves the saga to recovery, which re-invokes the
						// step with the same idempotency key.
						const patch = step.result ? step.result(saga.data, result) : {};
						const done = { index: i, stepName: step.name, logId, result, patch };
						if (i + 1 === def.steps.length)
							// The last step's outcome and the saga's completion: one transaction.
							return this.sagaFinish(def, saga, "COMPLETED", null, done);
						// The next step's intent goes with this outcome when it may start now (a
						// refusal is then met by the loop's own checks, on the outcome alone).
						const upcoming: SagaInstance = {
							...saga,
							data: { ...saga.data, ...patch },
							currentStep: i + 1
						};
						const next = (await this.sagaMayStart(def, upcoming, i + 1))
							? def.steps[i + 1]!.name
							: null;
						const recorded: { saga: SagaInstance; nextLogId: number | null } =
							await this.sagaLogSuccess(def, saga, done, next);
						saga = recorded.saga;
						preStarted = recorded.nextLogId;
						crashIf("crash-after", step.name, saga.id);
						await this.sagaEmit("saga.stepCompleted", saga, { step: step.name });
						break;
					}
				}
				return this.sagaFinish(def, saga, "COMPLETED", null);
			},

			/**
			 * Whether the saga's subject says its pivot has passed (`def.mirror.pivotStatuses`),
			 * whatever the step log says. One statement; false without `pivotStatuses`.
			 */
			async sagaPivotPassed(
				this: any,
				def: SagaDefinition,
				saga: SagaInstance
			): Promise<boolean> {
				const m = def.mirror;
				if (!m?.pivotStatuses?.length) return false;
				const rows = (await fastQuery(
					this.sequelize as Sequelize,
					`SELECT ${ident(m.statusColumn)} AS status FROM ${ident(m.table)} WHERE id = $1`,
					{ bind: [saga.data[m.idField]], type: QueryTypes.SELECT }
				)) as { status: string }[];
				return rows[0] !== undefined && m.pivotStatuses.includes(rows[0].status);
			},

			/**
			 * Whether forward step `i` may start now: the node is not stopping, the deadline has
			 * not passed, and `beforeStep` (up to the pivot) does not refuse. Never throws.
			 */
			async sagaMayStart(
				this: any,
				def: SagaDefinition,
				saga: SagaInstance,
				i: number
			): Promise<boolean> {
				if (this.$sagaStopping || this.sagaDeadlinePassed(def, saga, i)) return false;
				if (def.beforeStep && !sagaIsAfterPivot(def, i)) {
					try {
						await this[def.beforeStep](saga);
					} catch {
						return false;
					}
				}
				return true;
			},

			/**
			 * Runs one step or compensation call and records its duration and outcome in the
			 * `shop.saga.step.duration` histogram (platform/metrics.ts).
			 */
			async sagaTimed<T>(
				this: any,
				saga: SagaInstance,
				step: string,
				phase: "forward" | "compensate",
				call: () => Promise<T>
			): Promise<T> {
				const t0 = performance.now();
				let outcome = "failed";
				try {
					const result = await call();
					outcome = "succeeded";
					return result;
				} finally {
					observeMetric(this.broker, "sagaStepDuration", performance.now() - t0, {
						saga: saga.name,
						step,
						phase,
						outcome
					});
				}
			},

			async sagaInvoke(
				this: any,
				def: SagaDefinition,
				step: SagaStepDefinition,
				saga: SagaInstance,
				key: string
			): Promise<unknown> {
				const params = step.params ? step.params(saga.data, key) : {};
				if (step.method) return this[step.method](saga, key, params);
				if (!step.action) throw new Error(`Step ${step.name} has no action`);
				return this.broker.call(step.action, params, {
					timeout: step.timeout ?? def.stepTimeoutMs,
					// The step's retry policy is the only retry layer: no broker retries inside it.
					retries: 0,
					...sagaTraceOptions(saga),
					meta: { idempotencyKey: key }
				});
			},

			/** Runs `sql` fenced on this node's lease; throws SagaLeaseLostError if it was lost. */
			async sagaFenced(
				this: any,
				saga: SagaInstance,
				sql: string,
				bind: unknown[],
				transaction?: Transaction
			): Promise<Record<string, unknown>[]> {
				const rows = (await fastQuery(this.sequelize as Sequelize, sql, {
					bind: [saga.id, this.$sagaOwner, ...bind],
					type: QueryTypes.SELECT,
					transaction
				})) as Record<string, unknown>[];
				if (rows.length === 0) throw new SagaLeaseLostError(saga.id);
				return rows;
			},

			/** Records a step attempt's intent (STARTED) and renews the lease, in one statement. */
			async sagaLogStart(
				this: any,
				saga: SagaInstance,
				index: number,
				stepName: string,
				phase: "forward" | "compensate",
				attempt: number
			): Promise<number> {
				const rows = await this.sagaFenced(
					saga,
					`WITH s AS (
						UPDATE sagas SET current_step = CASE WHEN $6 = 'forward' THEN $3 ELSE current_step END,
							attempts = attempts + 1, updated_at = now(),
							lease_expires_at = now() + ($7 || ' milliseconds')::interval
						WHERE id = $1 AND lease_owner = $2 RETURNING id)
					 INSERT INTO saga_steps (saga_id, step_index, step_name, phase, status, attempt)
					 SELECT id, $3, $4, $6, 'STARTED', $5 FROM s RETURNING id`,
					[index, stepName, attempt, phase, String(leaseMs)]
				);
				if (phase === "forward") saga.currentStep = index;
				return Number(rows[0]!.id);
			},

			/**
			 * Records a forward step's outcome (SUCCEEDED, its result, the saga's data) and, with
			 * `next`, the next step's intent (STARTED, attempt 1), renewing the lease, fenced on it,
			 * in one statement. With `def.mirror` the same statement sets the subject's status
			 * (`statusAfterStep`) and writes the next intent only if the subject does not refuse it
			 * (`refuse`; the loop's own check then compensates). With `def.onStepSucceeded` that
			 * hook runs in the same transaction.
			 * @returns the saga as recorded and the next step's log id (null: not started)
			 */
			async sagaLogSuccess(
				this: any,
				def: SagaDefinition,
				saga: SagaInstance,
				done: SagaStepOutcome,
				next: string | null
			): Promise<{ saga: SagaInstance; nextLogId: number | null }> {
				const seq = this.sequelize as Sequelize;
				const data = { ...saga.data, ...done.patch };
				const m = def.mirror;
				const status = m?.statusAfterStep[done.stepName] ?? null;
				const refuse =
					m?.refuse && next !== null && !sagaIsAfterPivot(def, done.index + 1)
						? m.refuse.column
						: null;
				// $1 saga, $2 owner (sagaFenced), $3 next index, $4 data, $5 log id, $6 result,
				// $7 lease ms, $8 next step's name or null, then $9 the subject's id, $10 status,
				// $11 statuses kept.
				const bind: unknown[] = [
					done.index + 1,
					JSON.stringify(data),
					done.logId,
					JSON.stringify(done.result ?? null),
					String(leaseMs),
					next
				];
				const ctes: string[] = [];
				let go = "$8::text IS NOT NULL";
				if (m && (status || refuse)) bind.push(data[m.idField]);
				if (m && refuse) {
					ctes.push(
						`r AS (SELECT NOT coalesce((SELECT ${ident(refuse)} FROM ${ident(m.table)} WHERE id = $9), false) AS go)`
					);
					go += " AND (SELECT go FROM r)";
				}
				ctes.push(
					`s AS (UPDATE sagas SET current_step = $3, data = $4::jsonb,
						attempts = attempts + CASE WHEN ${go} THEN 1 ELSE 0 END, updated_at = now(),
						lease_expires_at = now() + ($7 || ' milliseconds')::interval
					 WHERE id = $1 AND lease_owner = $2 RETURNING id)`,
					`d AS (UPDATE saga_steps SET status = 'SUCCEEDED', result = $6::jsonb, finished_at = now()
					 WHERE id = $5 AND saga_id IN (SELECT id FROM s) RETURNING id)`
				);
				if (m && status) {
					bind.push(status, m.keepStatuses);
					ctes.push(
						`m AS (${mirrorStatusUpdate(m, { id: 9, status: 10, keep: 11 }, " AND EXISTS (SELECT 1 FROM s)")} RETURNING id)`
					);
				}
				ctes.push(
					`n AS (INSERT INTO saga_steps (saga_id, step_index, step_name, phase, status, attempt)
					 SELECT id, $3, $8, 'forward', 'STARTED', 1 FROM s WHERE ${go} RETURNING id)`
				);
				const sql = `WITH ${ctes.join(",\n")}\nSELECT id, (SELECT id FROM n) AS next_log_id FROM s`;
				const record = async (t?: Transaction): Promise<number | null> => {
					const rows = await this.sagaFenced(saga, sql, bind, t);
					const nextLogId = rows[0]!.next_log_id;
					return nextLogId === null || nextLogId === undefined ? null : Number(nextLogId);
				};
				const after: SagaInstance = { ...saga, data, currentStep: done.index + 1 };
				let nextLogId: number | null;
				if (def.onStepSucceeded)
					nextLogId = await seq.transaction(async t => {
						const id = await record(t);
						await this[def.onStepSucceeded!](after, done.stepName, t);
						return id;
					});
				else nextLogId = await record();
				return { saga: after, nextLogId };
			},

			/**
			 * The in-statement refusal of `def.mirror.refuse`, checked on its own (before a step
			 * whose intent was not recorded with the previous outcome).
			 * @throws the shop error `mirror.refuse.error` when the subject refuses
			 */
			async sagaCheckRefusal(
				this: any,
				def: SagaDefinition,
				saga: SagaInstance
			): Promise<void> {
				const m = def.mirror;
				if (!m?.refuse) return;
				const id = saga.data[m.idField];
				const rows = (await fastQuery(
					this.sequelize as Sequelize,
					`SELECT ${ident(m.refuse.column)} AS refused FROM ${ident(m.table)} WHERE id = $1`,
					{ bind: [id], type: QueryTypes.SELECT }
				)) as { refused: boolean }[];
				if (rows[0]?.refused)
					throw shopError(m.refuse.error, undefined, { [m.idField]: id as string });
			},

			async sagaLogFailure(
				this: any,
				saga: SagaInstance,
				logId: number,
				rec: SagaErrorRecord
			): Promise<void> {
				const seq = this.sequelize as Sequelize;
				await seq.transaction(async t => {
					await this.sagaFenced(
						saga,
						`UPDATE sagas SET errors = ${appendError("$3")}, updated_at = now()
						 WHERE id = $1 AND lease_owner = $2 RETURNING id`,
						[JSON.stringify(rec)],
						t
					);
					await fastQuery(
						seq,
						`UPDATE saga_steps SET status = 'FAILED', error = $2::jsonb, finished_at = now() WHERE id = $1`,
						{ bind: [logId, JSON.stringify(rec)], transaction: t }
					);
				});
			},

			/** Adds an error to the saga's history (a refusal before any step was invoked). */
			async sagaAppendError(
				this: any,
				saga: SagaInstance,
				rec: SagaErrorRecord
			): Promise<void> {
				await this.sagaFenced(
					saga,
					`UPDATE sagas SET errors = ${appendError("$3")}, updated_at = now()
					 WHERE id = $1 AND lease_owner = $2 RETURNING id`,
					[JSON.stringify(rec)]
				);
				saga.errors.push(rec);
			},

			async sagaBeginCompensation(
				this: any,
				def: SagaDefinition,
				saga: SagaInstance,
				rec: SagaErrorRecord,
				failedIndex: number
			): Promise<SagaInstance> {
				const reason = def.failureReason(rec);
				await this.sagaFenced(
					saga,
					`UPDATE sagas SET status = 'COMPENSATING', failure_reason = $3, current_step = $4,
						errors = CASE WHEN errors @> jsonb_build_array($5::jsonb) THEN errors ELSE ${appendError("$5")} END,
						updated_at = now() WHERE id = $1 AND lease_owner = $2 RETURNING id`,
					[reason, failedIndex, JSON.stringify(rec)]
				);
				const next: SagaInstance = {
					...saga,
					status: "COMPENSATING",
					failureReason: reason,
					currentStep: failedIndex
				};
				this.logger.info(
					`Saga ${saga.id} (${saga.name}) compensating: ${reason} (${rec.type} at ${rec.step})`
				);
				countMetric(this.broker, "sagaCompensations", { saga: saga.name, reason });
				await this.sagaEmit("saga.compensating", next, { step: rec.step });
				return next;
			},

			/** Compensates every started step, newest first, skipping those already compensated. */
			async sagaCompensate(
				this: any,
				def: SagaDefinition,
				saga: SagaInstance
			): Promise<SagaInstance> {
				const log: SagaStepLogEntry[] = await this.getSagaSteps(saga.id);
				const started = new Set(
					log.filter(l => l.phase === "forward").map(l => l.stepIndex)
				);
				const done = new Set(
					log
						.filter(l => l.phase === "compensate" && l.status === "SUCCEEDED")
						.map(l => l.stepIndex)
				);
				const policy: SagaRetryPolicy = def.compensationRetry ?? {
					...def.retry,
					maxAttempts: Math.max(8, def.retry.maxAttempts)
				};
				for (let i = Math.min(saga.currentStep, def.steps.length - 1); i >= 0; i--) {
					const step = def.steps[i]!;
					if (!step.compensation || !started.has(i) || done.has(i)) continue;
					let attempt = 0;
					for (;;) {
						// Stopping: leave the saga COMPENSATING here, to be resumed.
						if (this.$sagaStopping) return saga;
						attempt++;
						const logId: number = await this.sagaLogStart(
							saga,
							i,
							step.name,
							"compensate",
							attempt
						);
						const key = sagaStepKey(saga, step.name, true);
						let result: unknown;
						try {
							const params = step.compensation.params(saga.data, key);
							result = await this.sagaTimed(saga, step.name, "compensate", () =>
								this.broker.call(step.compensation!.action, params, {
									timeout: step.timeout ?? def.stepTimeoutMs,
									retries: 0,
									...sagaTraceOptions(saga),
									meta: { idempotencyKey: key }
								})
							);
						} catch (err) {
							const rec = errorRecord(step.name, "compensate", err);
							await this.sagaLogFailure(saga, logId, rec);
							saga.errors.push(rec);
							if (attempt < policy.maxAttempts) {
								await sleep(backoffDelay(policy, attempt + 1));
								continue;
							}
							return this.sagaPark(def, saga, rec);
						}
						await fastQuery(
							this.sequelize as Sequelize,
							`UPDATE saga_steps SET status = 'SUCCEEDED', result = $2::jsonb, finished_at = now() WHERE id = $1`,
							{ bind: [logId, JSON.stringify(result ?? null)] }
						);
						break;
					}
				}
				return this.sagaFinish(def, saga, "COMPENSATED", saga.failureReason);
			},

			/**
			 * Ends the saga (and runs `onCompleted` / `onCompensated` in the same transaction).
			 * `last`: the last forward step's outcome, recorded in that transaction too; its
			 * `saga.stepCompleted` is emitted before `saga.completed`.
			 */
			async sagaFinish(
				this: any,
				def: SagaDefinition,
				saga: SagaInstance,
				status: "COMPLETED" | "COMPENSATED",
				reason: string | null,
				last?: SagaStepOutcome
			): Promise<SagaInstance> {
				const seq = this.sequelize as Sequelize;
				const done: SagaInstance = last
					? {
							...saga,
							status,
							data: { ...saga.data, ...last.patch },
							currentStep: last.index + 1
						}
					: { ...saga, status };
				await seq.transaction(async t => {
					if (last)
						await this.sagaFenced(
							saga,
							`WITH s AS (
								UPDATE sagas SET status = $3, current_step = $4, data = $5::jsonb,
									lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
								WHERE id = $1 AND lease_owner = $2 RETURNING id)
							 UPDATE saga_steps SET status = 'SUCCEEDED', result = $7::jsonb, finished_at = now()
							 WHERE id = $6 AND saga_id IN (SELECT id FROM s) RETURNING id`,
							[
								status,
								done.currentStep,
								JSON.stringify(done.data),
								last.logId,
								JSON.stringify(last.result ?? null)
							],
							t
						);
					else
						await this.sagaFenced(
							saga,
							`UPDATE sagas SET status = $3, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
							 WHERE id = $1 AND lease_owner = $2 RETURNING id`,
							[status],
							t
						);
					const lastStatus = last && def.mirror?.statusAfterStep[last.stepName];
					if (lastStatus) {
						const m = def.mirror!;
						await fastQuery(seq, mirrorStatusUpdate(m, { id: 1, status: 2, keep: 3 }), {
							bind: [done.data[m.idField], lastStatus, m.keepStatuses],
							transaction: t
						});
					}
					if (last && def.onStepSucceeded)
						await this[def.onStepSucceeded](
							{ ...done, status: saga.status },
							last.stepName,
							t
						);
					if (status === "COMPLETED" && def.onCompleted)
						await this[def.onCompleted](done, t);
					if (status === "COMPENSATED" && def.onCompensated)
						await this[def.onCompensated](done, reason, t);
				});
				if (last) {
					crashIf("crash-after", last.stepName, saga.id);
					await this.sagaEmit("saga.stepCompleted", done, { step: last.stepName });
				}
				this.logger.info(
					`Saga ${saga.id} (${saga.name}) ${status}${reason ? ` (${reason})` : ""}`
				);
				await this.sagaEmit(
					status === "COMPLETED" ? "saga.completed" : "saga.compensated",
					done
				);
				await this.sagaAfterCommit(done);
				return done;
			},

			/** Parks the saga as FAILED: an operator must look at it (dead letter). */
			async sagaPark(
				this: any,
				def: SagaDefinition,
				saga: SagaInstance,
				rec: SagaErrorRecord
			): Promise<SagaInstance> {
				const seq = this.sequelize as Sequelize;
				const parked = { ...saga, status: "FAILED" as const };
				await seq.transaction(async t => {
					await this.sagaFenced(
						saga,
						`UPDATE sagas SET status = 'FAILED', lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
						 WHERE id = $1 AND lease_owner = $2 RETURNING id`,
						[],
						t
					);
					if (def.onFailed) await this[def.onFailed](parked, t);
				});
				this.logger.error(
					`Saga ${saga.id} parked as FAILED at ${rec.step} (${rec.phase}): ${rec.type} ${rec.message}`
				);
				countMetric(this.broker, "sagaParked", { saga: saga.name });
				await this.sagaEmit("saga.failed", parked, { step: rec.step });
				await this.sagaAfterCommit(parked);
				return parked;
			},

			/** Emits a saga lifecycle event; a failure to emit is logged, never thrown. */
			async sagaEmit(
				this: any,
				event: string,
				saga: SagaInstance,
				extra: Record<string, unknown> = {}
			): Promise<void> {
				try {
					await this.broker.emit(event, {
						sagaId: saga.id,
						name: saga.name,
						version: saga.version,
						status: saga.status,
						failureReason: saga.failureReason,
						data: saga.data,
						...extra
					});
				} catch (err) {
					this.logger.warn(`Could not emit ${event}`, err);
				}
			},

			/** Called after a saga's final transaction commits; services override to emit events. */
			async sagaAfterCommit(this: any, _saga: SagaInstance): Promise<void> {}
		}
	};
}
