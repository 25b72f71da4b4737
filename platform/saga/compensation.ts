/**
 * The saga's way back: turning to COMPENSATING with a failure reason (`beginCompensation`), then
 * compensating every step that was started, newest first, including the one that failed
 * (participants treat compensating what never took effect as a no-op success), skipping those
 * already compensated (`compensate`; a resumed saga reads its step log). A compensation retries
 * every error (retry.ts `compensationRetry`); one that keeps failing parks the saga.
 */
import { errorRecord, sagaStepKey } from "./definition";
import { invokeCompensation } from "./call";
import { logCompensated, logCompensating, logFailure, logStart } from "./log";
import { countCompensation, timed } from "./metrics";
import { finishSaga, parkSaga } from "./outcome";
import { backoffDelay, compensationRetry, sleep } from "./retry";
import type { SagaRuntime } from "./runtime";
import { readSagaSteps } from "./store";
import type { SagaDefinition, SagaErrorRecord, SagaInstance } from "./types";

/** Records the turn to COMPENSATING (reason: `def.failureReason(rec)`) and emits it. */
export async function beginCompensation(
	rt: SagaRuntime,
	def: SagaDefinition,
	saga: SagaInstance,
	rec: SagaErrorRecord,
	failedIndex: number
): Promise<SagaInstance> {
	const reason = def.failureReason(rec);
	await logCompensating(rt, saga, reason, failedIndex, rec);
	const next: SagaInstance = {
		...saga,
		status: "COMPENSATING",
		failureReason: reason,
		currentStep: failedIndex
	};
	rt.host.logger.info(
		`Saga ${saga.id} (${saga.name}) compensating: ${reason} (${rec.type} at ${rec.step})`
	);
	countCompensation(rt.host.broker, saga, reason);
	await rt.host.sagaEmit("saga.compensating", next, { step: rec.step });
	return next;
}

/**
 * Compensates every started step, newest first, skipping those already compensated. Stopping
 * leaves the saga COMPENSATING where it is, to be resumed.
 */
export async function compensate(
	rt: SagaRuntime,
	def: SagaDefinition,
	saga: SagaInstance
): Promise<SagaInstance> {
	const log = await readSagaSteps(rt.host.db, saga.id);
	const started = new Set(log.filter(l => l.phase === "forward").map(l => l.stepIndex));
	const done = new Set(
		log.filter(l => l.phase === "compensate" && l.status === "SUCCEEDED").map(l => l.stepIndex)
	);
	const policy = compensationRetry(def);
	for (let i = Math.min(saga.currentStep, def.steps.length - 1); i >= 0; i--) {
		const step = def.steps[i]!;
		const compensation = step.compensation;
		if (!compensation || !started.has(i) || done.has(i)) continue;
		let attempt = 0;
		for (;;) {
			// Stopping: leave the saga COMPENSATING here, to be resumed.
			if (rt.stopping) return saga;
			attempt++;
			const logId = await logStart(rt, saga, i, step.name, "compensate", attempt);
			const key = sagaStepKey(saga, step.name, true);
			let result: unknown;
			try {
				const params = compensation.params(saga.data, key);
				result = await timed(rt.host.broker, saga, step.name, "compensate", () =>
					invokeCompensation(rt, def, step, compensation.action, saga, key, params)
				);
			} catch (err) {
				const rec = errorRecord(step.name, "compensate", err);
				await logFailure(rt, saga, logId, rec);
				saga.errors.push(rec);
				if (attempt < policy.maxAttempts) {
					await sleep(backoffDelay(policy, attempt + 1));
					continue;
				}
				return parkSaga(rt, def, saga, rec);
			}
			await logCompensated(rt, logId, result);
			break;
		}
	}
	return finishSaga(rt, def, saga, "COMPENSATED", saga.failureReason);
}
