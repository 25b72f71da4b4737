/**
 * The saga engine's metrics (declared in platform/metrics.ts): `shop.saga.step.duration` per
 * step call, compensations and parkings counted by saga, and the `shop.sagas.parked` gauge
 * recounted from the database on every recovery pass.
 */
import type { ServiceBroker } from "moleculer";
import { countMetric, observeMetric, setMetric } from "../metrics";
import type { SagaRuntime } from "./runtime";
import { countParkedSagas } from "./store";
import type { SagaInstance, SagaPhase } from "./types";

/**
 * Runs one step or compensation call and records its duration and outcome in the
 * `shop.saga.step.duration` histogram.
 */
export async function timed<T>(
	broker: ServiceBroker,
	saga: SagaInstance,
	step: string,
	phase: SagaPhase,
	call: () => Promise<T>
): Promise<T> {
	const t0 = performance.now();
	let outcome = "failed";
	try {
		const result = await call();
		outcome = "succeeded";
		return result;
	} finally {
		observeMetric(broker, "sagaStepDuration", performance.now() - t0, {
			saga: saga.name,
			step,
			phase,
			outcome
		});
	}
}

/** Counts a saga turning to compensation, by its failure reason. */
export function countCompensation(broker: ServiceBroker, saga: SagaInstance, reason: string): void {
	countMetric(broker, "sagaCompensations", { saga: saga.name, reason });
}

/** Counts a saga parked as FAILED. */
export function countParked(broker: ServiceBroker, saga: SagaInstance): void {
	countMetric(broker, "sagaParked", { saga: saga.name });
}

/** Sets the `shop.sagas.parked` gauge from the database (with metrics on). */
export async function updateParkedGauge(rt: SagaRuntime): Promise<void> {
	const { broker } = rt.host;
	if (!broker.isMetricsEnabled()) return;
	const rows = await countParkedSagas(rt.host.db);
	const counts = new Map<string, number>(
		Object.keys(rt.host.schema.sagas ?? {}).map(name => [name, 0])
	);
	for (const r of rows) counts.set(r.name, r.n);
	for (const [saga, n] of counts) setMetric(broker, "sagasParkedNow", n, { saga });
}
