/**
 * The saga lifecycle events: `saga.started`, `saga.stepCompleted`, `saga.compensating`,
 * `saga.completed`, `saga.compensated`, `saga.failed`, each
 * `{ sagaId, name, version, status, step?, failureReason?, data }`, emitted after the transition
 * commits. A failure to emit is logged, never thrown: the saga log is the record.
 */
import type { Logger, ServiceBroker } from "moleculer";
import type { SagaInstance } from "./types";

export async function emitSagaEvent(
	broker: ServiceBroker,
	logger: Logger,
	event: string,
	saga: SagaInstance,
	extra: Record<string, unknown> = {}
): Promise<void> {
	try {
		await broker.emit(event, {
			sagaId: saga.id,
			name: saga.name,
			version: saga.version,
			status: saga.status,
			failureReason: saga.failureReason,
			data: saga.data,
			...extra
		});
	} catch (err) {
		logger.warn(`Could not emit ${event}`, err);
	}
}
