/**
 * How a saga ends: COMPLETED or COMPENSATED (`finishSaga`), or parked as FAILED for an operator
 * (`parkSaga`, a dead letter). Each is one transaction holding the saga's final row, the
 * definition's hooks (`onCompleted`, `onCompensated`, `onFailed`, and for the last forward step
 * its outcome, the mirror's status and `onStepSucceeded`), so the orchestrator's own state
 * changes atomically with the saga log; the events follow the commit.
 */
import { acceptDeferredWrites, commitWithDeferredWrites } from "../db/deferred-writes";
import { countParked } from "./metrics";
import { logFinish, logParked } from "./log";
import { mirrorLastStep } from "./mirror";
import type { SagaRuntime } from "./runtime";
import type { SagaDefinition, SagaErrorRecord, SagaInstance, SagaStepOutcome } from "./types";

/**
 * Ends the saga (and runs `onCompleted` / `onCompensated` in the same transaction).
 * `last`: the last forward step's outcome, recorded in that transaction too; its
 * `saga.stepCompleted` is emitted before `saga.completed`.
 */
export async function finishSaga(
	rt: SagaRuntime,
	def: SagaDefinition,
	saga: SagaInstance,
	status: "COMPLETED" | "COMPENSATED",
	reason: string | null,
	last?: SagaStepOutcome
): Promise<SagaInstance> {
	const { host } = rt;
	const seq = host.db;
	const done: SagaInstance = last
		? {
				...saga,
				status,
				data: { ...saga.data, ...last.patch },
				currentStep: last.index + 1
			}
		: { ...saga, status };
	await seq.transaction(async t => {
		// The hooks' outbox rows ride with the COMMIT (platform/db/deferred-writes.ts).
		acceptDeferredWrites(t);
		// The saga's final row goes first and the hooks' statements follow it on the wire
		// without waiting for its answer (pipelined: platform/db/pool.ts); its fence is checked
		// before the COMMIT, so a lost lease rolls all of it back and is the error raised.
		const fence = logFinish(rt, saga, done, last, t);
		fence.catch(() => undefined);
		try {
			if (last) await mirrorLastStep(seq, def, last, done.data, t);
			if (last && def.onStepSucceeded)
				await rt.callMethod(
					def.onStepSucceeded,
					{ ...done, status: saga.status },
					last.stepName,
					t
				);
			if (status === "COMPLETED" && def.onCompleted)
				await rt.callMethod(def.onCompleted, done, t);
			if (status === "COMPENSATED" && def.onCompensated)
				await rt.callMethod(def.onCompensated, done, reason, t);
		} catch (err) {
			await fence;
			throw err;
		}
		await fence;
		await commitWithDeferredWrites(seq, t);
	});
	if (last) {
		rt.crashIf("crash-after", last.stepName, saga.id);
		await host.sagaEmit("saga.stepCompleted", done, { step: last.stepName });
	}
	host.logger.info(`Saga ${saga.id} (${saga.name}) ${status}${reason ? ` (${reason})` : ""}`);
	await host.sagaEmit(status === "COMPLETED" ? "saga.completed" : "saga.compensated", done);
	await host.sagaAfterCommit(done);
	return done;
}

/** Parks the saga as FAILED: an operator must look at it (dead letter). */
export async function parkSaga(
	rt: SagaRuntime,
	def: SagaDefinition,
	saga: SagaInstance,
	rec: SagaErrorRecord
): Promise<SagaInstance> {
	const { host } = rt;
	const parked = { ...saga, status: "FAILED" as const };
	await host.db.transaction(async t => {
		await logParked(rt, saga, t);
		if (def.onFailed) await rt.callMethod(def.onFailed, parked, t);
	});
	host.logger.error(
		`Saga ${saga.id} parked as FAILED at ${rec.step} (${rec.phase}): ${rec.type} ${rec.message}`
	);
	countParked(host.broker, saga);
	await host.sagaEmit("saga.failed", parked, { step: rec.step });
	await host.sagaAfterCommit(parked);
	return parked;
}
