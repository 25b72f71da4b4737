/**
 * The saga's way forward: the steps in order from `currentStep`, each attempt's intent recorded
 * before its call and its outcome after (log.ts), transient failures retried by the step's
 * policy (retry.ts). Up to the pivot, a business error, a transient error past its retries, the
 * deadline, `beforeStep` or the mirror's refusal turn the saga to compensation; after the pivot
 * (or once the subject says the pivot passed, `mirror.pivotStatuses`) the saga only goes
 * forward, and a failure that persists parks it.
 */
import { isErrorType, isTransientError } from "../errors";
import { invokeStep } from "./call";
import { beginCompensation } from "./compensation";
import { deadlineRecord, errorRecord, sagaIsAfterPivot, sagaStepKey } from "./definition";
import { appendSagaError, logFailure, logStart, logSuccess } from "./log";
import { timed } from "./metrics";
import { mirrorCheckRefusal, mirrorPivotPassed } from "./mirror";
import { finishSaga, parkSaga } from "./outcome";
import { backoffDelay, sleep } from "./retry";
import type { SagaRuntime } from "./runtime";
import type { SagaDefinition, SagaInstance } from "./types";

/** Whether the deadline has passed (it applies only up to the pivot). */
function deadlinePassed(def: SagaDefinition, saga: SagaInstance, i: number): boolean {
	return !sagaIsAfterPivot(def, i) && Date.now() >= new Date(saga.deadlineAt).getTime();
}

/**
 * Whether forward step `i` may start now: the node is not stopping, the deadline has not
 * passed, and `beforeStep` (up to the pivot) does not refuse. Never throws.
 */
async function mayStart(
	rt: SagaRuntime,
	def: SagaDefinition,
	saga: SagaInstance,
	i: number
): Promise<boolean> {
	if (rt.stopping || deadlinePassed(def, saga, i)) return false;
	if (def.beforeStep && !sagaIsAfterPivot(def, i)) {
		try {
			await rt.callMethod(def.beforeStep, saga);
		} catch {
			return false;
		}
	}
	return true;
}

/**
 * Runs the forward steps from `currentStep`. `firstLogId`: the current step's intent, recorded
 * when the saga was created. @returns the saga as it left the forward path (COMPLETED,
 * COMPENSATING, FAILED, or still RUNNING when the node stops)
 */
export async function runForward(
	rt: SagaRuntime,
	def: SagaDefinition,
	saga: SagaInstance,
	firstLogId: number | null = null
): Promise<SagaInstance> {
	const { host } = rt;
	// The log id of the next step's first attempt when its intent was recorded in the
	// same transaction as the previous step's outcome (one round trip less per step).
	// `firstLogId`: the current step's intent, recorded when the saga was created.
	let preStarted: number | null = firstLogId;
	// Whether the subject says the pivot has passed (`mirror.pivotStatuses`): read only
	// when the saga is about to compensate, and from then on it only goes forward.
	let pastPivot = false;
	const mayCompensate = async (i: number): Promise<boolean> => {
		if (sagaIsAfterPivot(def, i) || pastPivot) return false;
		pastPivot = await mirrorPivotPassed(host.db, def, saga);
		if (pastPivot)
			host.logger.warn(
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
				if (rt.stopping) return saga;
				if (!pastPivot && deadlinePassed(def, saga, i) && (await mayCompensate(i)))
					return beginCompensation(rt, def, saga, deadlineRecord(step.name), i);
				attempt++;
				if (
					(def.beforeStep || def.mirror?.refuse) &&
					!sagaIsAfterPivot(def, i) &&
					!pastPivot
				) {
					try {
						if (def.beforeStep) await rt.callMethod(def.beforeStep, saga);
						await mirrorCheckRefusal(host.db, def, saga);
					} catch (err) {
						const rec = errorRecord(step.name, "forward", err);
						await appendSagaError(rt, saga, rec);
						return beginCompensation(rt, def, saga, rec, i);
					}
				}
				logId = await logStart(rt, saga, i, step.name, "forward", attempt);
			}
			rt.crashIf("crash-before", step.name, saga.id);
			const key = sagaStepKey(saga, step.name);
			let result: unknown;
			try {
				result = await timed(host.broker, saga, step.name, "forward", () =>
					invokeStep(rt, def, step, saga, key)
				);
			} catch (err) {
				const rec = errorRecord(step.name, "forward", err);
				await logFailure(rt, saga, logId, rec);
				saga.errors.push(rec);
				const business = isErrorType(err, ...def.businessErrors);
				const transient = !business && isTransientError(err);
				if (transient && attempt < policy.maxAttempts) {
					await sleep(backoffDelay(policy, attempt + 1));
					continue;
				}
				if (!(await mayCompensate(i))) return parkSaga(rt, def, saga, rec);
				return beginCompensation(rt, def, saga, rec, i);
			}
			// Recording the outcome is the orchestrator's own business: a failure here
			// is not the step's; it leaves the saga to recovery, which re-invokes the
			// step with the same idempotency key.
			const patch = step.result ? step.result(saga.data, result) : {};
			const done = { index: i, stepName: step.name, logId, result, patch };
			if (i + 1 === def.steps.length)
				// The last step's outcome and the saga's completion: one transaction.
				return finishSaga(rt, def, saga, "COMPLETED", null, done);
			// The next step's intent goes with this outcome when it may start now (a
			// refusal is then met by the loop's own checks, on the outcome alone).
			const upcoming: SagaInstance = {
				...saga,
				data: { ...saga.data, ...patch },
				currentStep: i + 1
			};
			const next = (await mayStart(rt, def, upcoming, i + 1)) ? def.steps[i + 1]!.name : null;
			const recorded = await logSuccess(rt, def, saga, done, next);
			saga = recorded.saga;
			preStarted = recorded.nextLogId;
			rt.crashIf("crash-after", step.name, saga.id);
			await host.sagaEmit("saga.stepCompleted", saga, { step: step.name });
			break;
		}
	}
	return finishSaga(rt, def, saga, "COMPLETED", null);
}
