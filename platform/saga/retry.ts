/**
 * A saga step's retry policy, declared in its definition (Temporal's habit: retries are declared,
 * not hand-rolled in each step): exponential backoff with full jitter (AWS Architecture Blog,
 * "Exponential Backoff And Jitter", 2015). The size and shape of moleculer's
 * src/middlewares/retry.js: one policy, one file. The step calls themselves are made with the
 * broker's own retries off, so this is the only retry layer of a saga.
 */
import type { SagaDefinition, SagaRetryPolicy } from "./types";

/** Delay before attempt `attempt` (2, 3, ...): full jitter over an exponential cap, in ms. */
export function backoffDelay(
	policy: SagaRetryPolicy,
	attempt: number,
	random = Math.random
): number {
	const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 2));
	return Math.floor(random() * cap);
}

/**
 * The retry policy of compensations: `compensationRetry`, or `retry` with at least 8 attempts.
 * Compensations retry every error, business or not: undoing must eventually succeed, or the saga
 * is parked.
 */
export function compensationRetry(def: SagaDefinition): SagaRetryPolicy {
	return (
		def.compensationRetry ?? {
			...def.retry,
			maxAttempts: Math.max(8, def.retry.maxAttempts)
		}
	);
}

export const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));
