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
 *
 * This file is the Moleculer wiring only, typed as the official Moleculer TypeScript template
 * types its mixins (a `ServiceSchema` whose handlers see `SagaThis`, and the exported
 * `SagaMixinMethods` a service adds to its own `this` type). The engine lives in platform/saga/,
 * one concern per file: `types.ts`, `migrations.ts`, `runtime.ts` (one engine per service
 * instance), `runner.ts` (create, launch, drive), `forward.ts`, `compensation.ts`, `outcome.ts`,
 * `recovery.ts` (leases, drain), `store.ts` and `log.ts` (its SQL), `mirror.ts`, `definition.ts`,
 * `call.ts`, `retry.ts`, `events.ts`, `metrics.ts`, `retention.ts`, `faults.ts`.
 */
import type { Service, ServiceSchema } from "moleculer";
import type { ShopServiceSchema } from "../platform/context";
import { runStoppedFirst } from "../platform/lifecycle";
import { addRetentionTask, startRetention, stopRetention } from "../platform/retention";
import { emitSagaEvent } from "../platform/saga/events";
import { drainSagas, recoverSagas, startRecovery } from "../platform/saga/recovery";
import { sagaRetentionTasks } from "../platform/saga/retention";
import { createSaga, launchSaga, runSaga } from "../platform/saga/runner";
import {
	createSagaRuntime,
	sagaDefinition,
	sagaEngineSettings,
	sagaLoad,
	type SagaRuntime
} from "../platform/saga/runtime";
import { readSaga, readSagaSteps } from "../platform/saga/store";
import type {
	CreatedSaga,
	CreateSagaOptions,
	SagaData,
	SagaDefinition,
	SagaEngineOptions,
	SagaInstance,
	SagaStepLogEntry
} from "../platform/saga/types";
import type { ShopDatabase } from "../platform/db/pool";

// The engine's names, importable from the mixin as before the engine moved to platform/saga/.
export { backoffDelay } from "../platform/saga/retry";
export { sagaIsAfterPivot, sagaStepKey } from "../platform/saga/definition";
export { sagaMigrations } from "../platform/saga/migrations";
export { SagaLeaseLostError } from "../platform/saga/store";
export type {
	CreateSagaOptions,
	SagaData,
	SagaDefinition,
	SagaErrorRecord,
	SagaInstance,
	SagaMirror,
	SagaRetryPolicy,
	SagaStatus,
	SagaStepDefinition,
	SagaStepLogEntry,
	SagaStepOutcome
} from "../platform/saga/types";

/** Options of `SagaMixin` (the engine's: lease, recovery interval, injected faults). Times in ms. */
export type SagaMixinOptions = SagaEngineOptions;

/** What the mixin adds to `this`. */
export interface SagaMixinMethods {
	/** Sagas this service instance is running or about to run now (launched or recovered). */
	sagaLoad(): number;
	/**
	 * Records a new saga instance (status RUNNING), inside the caller's transaction when given,
	 * so it commits atomically with the caller's own state. Run it with `runSaga` after commit.
	 */
	createSaga(name: string, data: SagaData, opts: CreateSagaOptions): Promise<CreatedSaga>;
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
	/** Called after a saga's final transaction commits; services override it to emit events. */
	sagaAfterCommit(saga: SagaInstance): Promise<void>;
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

/** `this` of the mixin's handlers: the service, DbMixin's database, the mixin and its engine. */
type SagaThis = Service &
	SagaMixinMethods & {
		/** DbMixin's Sequelize instance: the orchestrator's own database. */
		db: ShopDatabase;
		/** This service instance's saga engine (platform/saga/runtime.ts). */
		$saga: SagaRuntime;
	};

/**
 * The saga mixin. Needs `DbMixin` (for `this.db`) and the `sagaMigrations` in the
 * service's migrations. Crash recovery and leases: platform/saga/recovery.ts.
 *
 * Events emitted (after the transition commits): `saga.started`, `saga.stepCompleted`,
 * `saga.compensating`, `saga.completed`, `saga.compensated`, `saga.failed`, each
 * `{ sagaId, name, version, status, step?, failureReason?, data }`.
 */
export function SagaMixin(opts: SagaMixinOptions = {}): Partial<ServiceSchema> {
	const settings = sagaEngineSettings(opts);

	/** On stop: platform/saga/recovery.ts `drainSagas`. */
	async function drain(this: SagaThis): Promise<void> {
		await drainSagas(this.$saga);
	}

	const schema: Partial<ShopServiceSchema<SagaThis>> = {
		merged(schema: ServiceSchema): void {
			// Moleculer runs `stopped` handlers in reverse merge order, and DbMixin's (moleculer-db)
			// closes the database. Keep the drain last so that it runs first, whatever the order
			// of the mixins, while the saga log can still be written.
			runStoppedFirst(schema, drain);
			runStoppedFirst(schema, stopRetention);
		},

		created(this: SagaThis): void {
			const methods = this as unknown as Record<string, unknown>;
			this.$saga = createSagaRuntime(this, settings, (name, ...args) => {
				const method = methods[name];
				if (typeof method !== "function")
					throw new TypeError(`Saga hook "${name}" is not a method of ${this.name}`);
				return (method as (...a: unknown[]) => unknown).apply(this, args);
			});
			// Retention (platform/retention.ts): finished sagas and their steps.
			for (const task of sagaRetentionTasks()) addRetentionTask(this, task);
		},

		started(this: SagaThis): void {
			startRetention.call(this);
			// Recovery waits for the whole broker: resuming a saga before its participants are
			// registered would only burn its retries.
			if (this.broker.started) startRecovery(this.$saga);
		},

		events: {
			"$broker.started"(this: SagaThis): void {
				startRecovery(this.$saga);
			}
		},

		stopped: drain,

		methods: {
			sagaLoad(this: SagaThis): number {
				return sagaLoad(this.$saga);
			},

			createSaga(
				this: SagaThis,
				name: string,
				data: SagaData,
				opts: CreateSagaOptions
			): Promise<CreatedSaga> {
				return createSaga(this.$saga, name, data, opts);
			},

			runSaga(
				this: SagaThis,
				id: string,
				owned?: SagaInstance,
				firstLogId: number | null = null
			): Promise<SagaInstance | null> {
				return runSaga(this.$saga, id, owned, firstLogId);
			},

			launchSaga(
				this: SagaThis,
				id: string,
				launch: { fresh?: SagaInstance & { firstLogId?: number | null } } = {}
			): void {
				launchSaga(this.$saga, id, launch);
			},

			recoverSagas(this: SagaThis, limit = 50): Promise<string[]> {
				return recoverSagas(this.$saga, limit);
			},

			getSaga(this: SagaThis, id: string): Promise<SagaInstance | null> {
				return readSaga(this.db, id);
			},

			getSagaSteps(this: SagaThis, id: string): Promise<SagaStepLogEntry[]> {
				return readSagaSteps(this.db, id);
			},

			sagaDefinition(this: SagaThis, name: string, version?: number): SagaDefinition {
				return sagaDefinition(this.$saga, name, version);
			},

			sagaEmit(
				this: SagaThis,
				event: string,
				saga: SagaInstance,
				extra: Record<string, unknown> = {}
			): Promise<void> {
				return emitSagaEvent(this.broker, this.logger, event, saga, extra);
			},

			async sagaAfterCommit(this: SagaThis, _saga: SagaInstance): Promise<void> {}
		}
	};
	return schema as Partial<ServiceSchema>;
}
