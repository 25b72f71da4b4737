/**
 * The saga engine's entry points: a saga is created (`createSaga`: recorded RUNNING, leased to
 * this node, inside the caller's statement or transaction), then driven (`runSaga`) forward
 * (forward.ts) and, when it fails up to its pivot, back (compensation.ts), to COMPLETED,
 * COMPENSATED or parked FAILED (outcome.ts). `launchSaga` drives it in the background, tracked so
 * that stopping waits for it; recovery.ts resumes the sagas whose node died.
 *
 * An orchestrated saga (Garcia-Molina & Salem, "Sagas", SIGMOD 1987; the orchestration form of
 * Richardson's microservices.io "Saga" pattern) whose state lives in the orchestrator's own
 * database, so it can be resumed after a crash. Every status change and step outcome is
 * committed before the next call is made.
 */
import crypto from "node:crypto";
import { withRequestId } from "../request-context";
import { compensate } from "./compensation";
import { runForward } from "./forward";
import { sagaDefinition, type SagaRuntime } from "./runtime";
import { claimSaga, insertSaga, readSaga, SagaLeaseLostError } from "./store";
import type { CreatedSaga, CreateSagaOptions, SagaData, SagaInstance } from "./types";

/**
 * Records a new saga instance (status RUNNING, leased to this node), inside the caller's
 * transaction when given, so it commits atomically with the caller's own state.
 */
export function createSaga(
	rt: SagaRuntime,
	name: string,
	data: SagaData,
	opts: CreateSagaOptions
): Promise<CreatedSaga> {
	const def = sagaDefinition(rt, name);
	return insertSaga(rt.host.db, {
		id: opts.id ?? crypto.randomUUID(),
		def,
		data,
		deadlineMs: opts.deadlineMs,
		requestId: opts.requestId ?? null,
		parentSpanId: opts.parentSpanId ?? null,
		owner: rt.owner,
		leaseMs: rt.leaseMs,
		firstStep: opts.startFirstStep ? (def.steps[0]?.name ?? null) : null,
		with: opts.with ?? [],
		transaction: opts.transaction
	});
}

/**
 * Drives saga `id` in the background. `fresh`: the instance `createSaga` just returned (its
 * lease is this node's), so it is neither read nor claimed again; it emits `saga.started`.
 */
export function launchSaga(
	rt: SagaRuntime,
	id: string,
	launch: { fresh?: SagaInstance & { firstLogId?: number | null } } = {}
): void {
	const p: Promise<unknown> = (async () => {
		if (launch.fresh) {
			const { firstLogId, ...fresh } = launch.fresh;
			await rt.host.sagaEmit("saga.started", fresh);
			return runSaga(rt, id, fresh, firstLogId ?? null);
		}
		return runSaga(rt, id);
	})().finally(() => rt.inFlight.delete(p));
	rt.inFlight.add(p);
}

/**
 * Drives a saga to its end, to parking, or to the next durable point when this node stops; one
 * run per saga per node (a second call joins the first). Never throws: an orchestrator-side
 * failure (its own database, a lost lease) leaves the saga resumable by recovery.
 * @returns the saga as this run left it, or null when it was not driven
 */
export function runSaga(
	rt: SagaRuntime,
	id: string,
	owned?: SagaInstance,
	firstLogId: number | null = null
): Promise<SagaInstance | null> {
	const running = rt.runs.get(id);
	if (running) return running;
	const run = drive(rt, id, owned, firstLogId).finally(() => rt.runs.delete(id));
	rt.runs.set(id, run);
	return run;
}

async function drive(
	rt: SagaRuntime,
	id: string,
	owned: SagaInstance | undefined,
	firstLogId: number | null
): Promise<SagaInstance | null> {
	const { host } = rt;
	try {
		// A saga this node just created is already leased to it: no claim round trip.
		const claimed = owned ?? (await claimSaga(host.db, id, rt.owner, rt.leaseMs));
		if (!claimed) {
			const current = await readSaga(host.db, id);
			// Ended sagas answer as they are; a saga held by another node is left to it.
			return current && !["RUNNING", "COMPENSATING"].includes(current.status)
				? current
				: null;
		}
		const def = sagaDefinition(rt, claimed.name, claimed.version);
		// Its log lines carry the request that started it, also when resumed later.
		return await withRequestId(claimed.requestId, async () => {
			let saga = claimed;
			if (saga.status === "RUNNING")
				saga = await runForward(rt, def, saga, owned ? firstLogId : null);
			if (saga.status === "COMPENSATING" && !rt.stopping)
				saga = await compensate(rt, def, saga);
			return saga;
		});
	} catch (err) {
		if (err instanceof SagaLeaseLostError) host.logger.warn(err.message);
		else host.logger.error(`Saga ${id} stopped on an orchestrator error`, err);
		return null;
	}
}
