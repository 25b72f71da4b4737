/**
 * What a real client does with a 503 `ORDERS_OVERLOADED` (the orders node at its adaptive limit
 * on sagas in flight, platform/concurrency-limit.ts): it waits the answer's `Retry-After`
 * (seconds) and sends the same request again with the same `Idempotency-Key`, so a retry can
 * never place a second order. Nothing was stored by the refusal, so the retry is a first try.
 *
 * Suites that load the shop (chaos, crash-restart, the cluster suites) place orders through
 * this, because the limit is on by default (`SAGA_TARGET_LATENCY_MS` = 400) and refuses at once
 * whenever their sagas run slower than that, e.g. around a fault. Any other answer, including
 * other 503s (an outage), is returned as it is, for the suite to judge.
 */
import crypto from "node:crypto";
import { api } from "./shop-process";

/** An answer as the suites' HTTP clients give it; `headers` for `Retry-After`. */
export interface OverloadAnswer {
	status: number;
	body: any;
	headers?: Headers | Record<string, string | undefined>;
}

/** Refusals a `retryOverloaded` call met before its answer, with each one's `Retry-After`. */
export interface OverloadRetries {
	/** 503 `ORDERS_OVERLOADED` answers met and retried. */
	refusals: number;
	/** Their `Retry-After` values (s); `null` where the header was missing. */
	retryAfter: (number | null)[];
}

/** True for the backpressure refusal (and only it): 503 with `type: "ORDERS_OVERLOADED"`. */
export function isOverloaded(a: OverloadAnswer): boolean {
	return a.status === 503 && a.body?.type === "ORDERS_OVERLOADED";
}

/** `Retry-After` in seconds (delta-seconds form, as the gateway sends it), or null. */
export function retryAfterSeconds(a: OverloadAnswer): number | null {
	const h = a.headers;
	const raw = h instanceof Headers ? h.get("retry-after") : (h?.["retry-after"] ?? null);
	const s = raw == null ? NaN : Number(raw);
	return Number.isFinite(s) && s >= 0 ? s : null;
}

/**
 * Sends `send()` until its answer is not 503 `ORDERS_OVERLOADED`, waiting each refusal's
 * `Retry-After` (1 s when missing) between tries; `send` must repeat the same request with the
 * same `Idempotency-Key`.
 * @param opts.deadlineMs - stop retrying after this long (ms, default 120 000) and return the last
 *   refusal: a node that refuses that long is a finding, not backpressure
 * @param opts.stop - checked before each wait: true returns the last refusal at once (a load
 *   generator shutting down)
 * @returns the first answer that is not a refusal (or the last refusal), with the refusals met
 */
export async function retryOverloaded<A extends OverloadAnswer>(
	send: () => Promise<A>,
	opts: { deadlineMs?: number; stop?: () => boolean } = {}
): Promise<A & { retries: OverloadRetries }> {
	const end = Date.now() + (opts.deadlineMs ?? 120_000);
	const retries: OverloadRetries = { refusals: 0, retryAfter: [] };
	for (;;) {
		const a = await send();
		if (!isOverloaded(a) || Date.now() >= end || opts.stop?.())
			return Object.assign(a, { retries });
		const after = retryAfterSeconds(a);
		retries.refusals++;
		retries.retryAfter.push(after);
		await new Promise(r => setTimeout(r, Math.min((after ?? 1) * 1000, end - Date.now())));
	}
}

/**
 * The same for a broker call (`orders.create` in-process, no gateway): retries while it throws
 * `ORDERS_OVERLOADED`, waiting 1 s between tries (the `Retry-After` the gateway gives it);
 * `call` must repeat the same request (same `meta.idempotencyKey` when it has one).
 * @param opts.deadlineMs - stop retrying after this long (ms, default 120 000): the refusal throws
 * @returns what `call` resolves with; rethrows any other error
 */
export async function retryOverloadedCall<T>(
	call: () => Promise<T>,
	opts: { deadlineMs?: number } = {}
): Promise<T> {
	const end = Date.now() + (opts.deadlineMs ?? 120_000);
	for (;;) {
		try {
			return await call();
		} catch (err) {
			if ((err as { type?: string }).type !== "ORDERS_OVERLOADED" || Date.now() >= end)
				throw err;
			await new Promise(r => setTimeout(r, Math.min(1_000, end - Date.now())));
		}
	}
}

/**
 * `POST /api/orders` as a client that honours backpressure: with an `Idempotency-Key` (the
 * caller's, else a fresh UUID) kept across the retries of `retryOverloaded`.
 * @returns the `api()` answer (202 with the order, or any other answer but 503
 *   `ORDERS_OVERLOADED` unless the deadline passed), with the refusals met and the key used
 */
export async function placeOrder(
	base: string,
	opts: {
		token: string;
		body: unknown;
		idempotencyKey?: string;
		headers?: Record<string, string>;
		deadlineMs?: number;
		stop?: () => boolean;
	}
): Promise<Awaited<ReturnType<typeof api>> & { retries: OverloadRetries; idempotencyKey: string }> {
	const idempotencyKey = opts.idempotencyKey ?? crypto.randomUUID();
	const r = await retryOverloaded(
		() =>
			api(base, "POST", "/api/orders", {
				token: opts.token,
				body: opts.body,
				headers: { ...opts.headers, "Idempotency-Key": idempotencyKey }
			}),
		opts
	);
	return Object.assign(r, { idempotencyKey });
}
