/**
 * The saga engine's types: a saga as declared (`SagaDefinition`, its steps, retry policies and
 * `SagaMirror`), a saga as stored (`SagaInstance`, its step log and error records) and the
 * engine's options. The engine is the rest of platform/saga/ (start with `runner.ts`);
 * `mixins/saga.mixin.ts` wires it into a Moleculer service.
 */
import type { DeferredWrite } from "../db/deferred-writes";
import type { ErrorType } from "../errors";
import type { Transaction } from "../db/fast-query";

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
	 * The orchestrator's own row for the saga's subject, kept by the saga's own
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
	phase: SagaPhase;
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
	phase: SagaPhase;
	status: "STARTED" | "SUCCEEDED" | "FAILED";
	attempt: number;
	result: unknown;
	error: SagaErrorRecord | null;
	startedAt: Date;
	finishedAt: Date | null;
}

/** Which way a step call goes: the step itself, or its compensation. */
export type SagaPhase = "forward" | "compensate";

/** Where a crash can be injected (failure tests): before invoking, or right after recording, a step. */
export type SagaFaultKind = "crash-before" | "crash-after";

/** The deployed definitions of a service, by saga name: one, or every version still deployed. */
export type SagaRegistry = Readonly<Record<string, SagaDefinition | readonly SagaDefinition[]>>;

/** Options of `createSaga`. */
export interface CreateSagaOptions {
	id?: string;
	deadlineMs: number;
	requestId?: string | null;
	/** The span that starts the saga (`ctx.span?.id`): its step calls become its children. */
	parentSpanId?: string | null;
	transaction?: Transaction;
	/**
	 * Record the first step's intent in the same statement (one round trip less); the
	 * caller vouches nothing can refuse that step yet (`beforeStep` and `mirror.refuse`
	 * are not checked for it): e.g. the subject is created in the same transaction.
	 */
	startFirstStep?: boolean;
	/**
	 * The caller's own writes (e.g. the subject's row, its outbox event), made by the same
	 * statement: atomic with the saga without a transaction (platform/db/deferred-writes.ts).
	 */
	with?: readonly DeferredWrite[];
}

/** A saga just created: the instance and, with `startFirstStep`, its first step's log id. */
export type CreatedSaga = SagaInstance & { firstLogId: number | null };

/** Options of the saga engine (`SagaMixin(options)`). Times in ms. */
export interface SagaEngineOptions {
	/** How long a claim on a saga lasts without renewal (renewed at every step attempt). */
	readonly leaseMs?: number;
	/** How often to look for sagas whose lease expired; 0 turns periodic recovery off. */
	readonly recoveryIntervalMs?: number;
	/**
	 * Injected faults (failure tests): crash before invoking, or right after recording, a step.
	 * A list (`SAGA_FAULTS`), or a predicate asked at every such point.
	 */
	readonly faults?:
		| readonly { kind: SagaFaultKind; step: string }[]
		| ((point: { kind: SagaFaultKind; step: string; sagaId: string }) => boolean);
	/** What a crash is; default: the process SIGKILLs itself (no cleanup, nothing flushed). */
	readonly crash?: () => void;
}
