/**
 * Crash recovery and a clean stop. On start and every `recoveryIntervalMs`, a node claims the
 * sagas whose lease expired (their node died or stopped) with `SELECT ... FOR UPDATE SKIP LOCKED`
 * (so two nodes never claim the same one) and resumes them forward or backward from their step
 * log. A step that was STARTED without a recorded outcome is invoked again with the same
 * idempotency key: participants answer a repeat with the first outcome.
 *
 * On stop, running sagas start no further step or attempt; the ones in flight are awaited so
 * their outcome is recorded (the next durable point); then this node gives up its leases, so
 * another node resumes those sagas at once (bounded by the broker's shutdown).
 */
import { updateParkedGauge } from "./metrics";
import { launchSaga } from "./runner";
import type { SagaRuntime } from "./runtime";
import { claimExpiredSagas, handBackLeases } from "./store";

/** Claims up to `limit` sagas whose lease expired and runs them. @returns the ids claimed */
export async function recoverSagas(rt: SagaRuntime, limit = 50): Promise<string[]> {
	if (rt.stopping || rt.recovering) return [];
	rt.recovering = true;
	try {
		const ids = await claimExpiredSagas(rt.host.db, rt.owner, rt.leaseMs, limit);
		for (const id of ids) {
			rt.host.logger.info(`Recovering saga ${id} (its lease had expired)`);
			launchSaga(rt, id);
		}
		await updateParkedGauge(rt);
		return ids;
	} finally {
		rt.recovering = false;
	}
}

/**
 * A recovery pass now, then every `recoveryIntervalMs` until the service stops. Called once the
 * whole broker has started: resuming a saga before its participants are registered would only
 * burn its retries.
 */
export function startRecovery(rt: SagaRuntime): void {
	if (rt.recoveryTimer || rt.stopping) return;
	const tick = (): void => {
		recoverSagas(rt).catch((err: unknown) =>
			rt.host.logger.warn("Saga recovery pass failed", err)
		);
	};
	tick();
	if (rt.recoveryIntervalMs > 0) {
		rt.recoveryTimer = setInterval(tick, rt.recoveryIntervalMs);
		rt.recoveryTimer.unref?.();
	} else rt.recoveryTimer = true;
}

/** Stops driving sagas (see the module comment); a second call does nothing. */
export async function drainSagas(rt: SagaRuntime): Promise<void> {
	if (rt.stopping) return; // stopped twice: the first drain did it all
	rt.stopping = true;
	if (rt.recoveryTimer && rt.recoveryTimer !== true) clearInterval(rt.recoveryTimer);
	await Promise.allSettled([...rt.inFlight]);
	await handBackLeases(rt.host.db, rt.owner).catch((err: unknown) =>
		rt.host.logger.warn("Could not hand back saga leases", err)
	);
}
