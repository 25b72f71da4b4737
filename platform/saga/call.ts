/**
 * How a saga step calls its participant: a remote action through the broker (or a local service
 * method), with the step's idempotency key in `ctx.meta.idempotencyKey`, the step's timeout, the
 * broker's retries off (the step's retry policy, retry.ts, is the only retry layer), and the
 * call kept in the trace of the request that started the saga.
 */
import type { CallingOptions } from "moleculer";
import type { SagaRuntime } from "./runtime";
import type { SagaDefinition, SagaInstance, SagaStepDefinition } from "./types";

/**
 * Call options that keep a saga's step calls in the trace of the request that started it
 * (Moleculer's trace id is the request id): children of its span when one was recorded.
 */
function sagaTraceOptions(saga: SagaInstance): Pick<CallingOptions, "requestID" | "parentSpan"> {
	if (!saga.requestId) return {};
	if (!saga.parentSpanId) return { requestID: saga.requestId };
	return {
		requestID: saga.requestId,
		parentSpan: { id: saga.parentSpanId, traceID: saga.requestId, sampled: true }
	};
}

/** The broker call options of a step's (or its compensation's) call with key `key`. */
function stepCallOptions(
	def: SagaDefinition,
	step: SagaStepDefinition,
	saga: SagaInstance,
	key: string
): CallingOptions {
	return {
		timeout: step.timeout ?? def.stepTimeoutMs,
		// The step's retry policy is the only retry layer: no broker retries inside it.
		retries: 0,
		...sagaTraceOptions(saga),
		meta: { idempotencyKey: key }
	};
}

/** Invokes forward step `step` (its action, or its local `method`). @returns its result */
export async function invokeStep(
	rt: SagaRuntime,
	def: SagaDefinition,
	step: SagaStepDefinition,
	saga: SagaInstance,
	key: string
): Promise<unknown> {
	const params = step.params ? step.params(saga.data, key) : {};
	if (step.method) return rt.callMethod(step.method, saga, key, params);
	if (!step.action) throw new Error(`Step ${step.name} has no action`);
	return rt.host.broker.call(step.action, params, stepCallOptions(def, step, saga, key));
}

/** Invokes `step`'s compensation `action` with the params already built. @returns its result */
export function invokeCompensation(
	rt: SagaRuntime,
	def: SagaDefinition,
	step: SagaStepDefinition,
	action: string,
	saga: SagaInstance,
	key: string,
	params: Record<string, unknown>
): Promise<unknown> {
	return rt.host.broker.call(action, params, stepCallOptions(def, step, saga, key));
}
