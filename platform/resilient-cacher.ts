/**
 * The Redis cacher of the shop (`CACHER=redis://...`): Moleculer's own `Cachers.Redis` whose
 * failures degrade instead of failing the action. A cache is an optimisation; Redis being down,
 * restarting or slow must not turn a cached action (`products.get`, `products.list`,
 * `users.resolveToken`, hence every authenticated request) into a 500.
 *
 * Moleculer's Redis cacher rejects while Redis is unreachable: its middleware skips the cache only
 * once ioredis has reported a connection error (`connected === false`), and commands issued in
 * between (queued while ioredis reconnects, then failed with `MaxRetriesPerRequestError`) reject
 * the call. Its `set` after a miss is not even awaited: a rejection there is an unhandled
 * rejection, which ends a Node >= 15 process. Here:
 * - `get` / `getWithTTL` failing is a miss: the handler runs and answers from the database;
 * - `set` failing is ignored: the result is simply not cached;
 * - `del` / `clean` failing is logged and ignored: the write that asked for it has committed, and
 *   answering it with an error would only make the client repeat it. An entry that could not be
 *   removed (Redis unreachable from this node only, or restarted with its data) lives until its
 *   TTL at most (products: 60 s for lists, 300 s for one product; tokens: 30 s).
 * Each failure is logged as a warning at most every {@link WARN_EVERY_MS} per cacher (with how many
 * were left out), and counted. With `commandTimeout` in the ioredis options (moleculer.config.ts),
 * a Redis that hangs instead of refusing degrades the same way.
 *
 * Registered with Moleculer as cacher type `"ResilientRedis"` (moleculer.config.ts's `cacher`
 * block), so the broker options stay plain data.
 */
import { Cachers } from "moleculer";

/**
 * The memory cacher's `clone` option (moleculer.config.ts, when `CACHER` is not set): Moleculer's
 * memory cacher calls it on the value it stores (`set`) and on every hit (`get`). On `set` it
 * returns a copy of the value's arrays and plain objects, each frozen (the handler's own result,
 * which its first caller receives, stays as it was); on `get` the stored value, already frozen,
 * is returned as is. `clone: true`
 * (lodash `cloneDeep` on every hit) cost the cached product read 1.1-1.4 % of its time, and the
 * copy only protected the cache from callers that mutate what they get: none do (the gateway
 * serializes the answer; `inventory.setStock` only checks that `products.get` answers; the user of
 * `users.resolveToken` becomes `ctx.meta.user`, which nothing assigns into), and a caller that
 * tried would now throw a `TypeError` (strict mode) instead of silently changing the cache.
 * The same hit object is shared by concurrent callers. Redis (`ResilientRedisCacher`) deserializes
 * a fresh value on every hit and needs none of this.
 * @param data - a cached action's result (JSON-like: the answers are serialized to clients and,
 *   with Redis, to the cache)
 * @returns `data` itself when frozen (or not an object), else the frozen copy
 */
export function frozenCopy<T>(data: T): T {
	if (data === null || typeof data !== "object" || Object.isFrozen(data)) return data;
	return frozenPlainCopy(data);
}

/**
 * A copy of the arrays and plain objects of `value`, each frozen; any other object (a `Date`, a
 * `Buffer`, a class instance) is shared as it is, neither copied nor frozen (a typed array cannot
 * be frozen).
 */
function frozenPlainCopy<T>(value: T): T {
	if (value === null || typeof value !== "object") return value;
	if (Array.isArray(value)) return Object.freeze(value.map(frozenPlainCopy)) as T;
	const proto: unknown = Object.getPrototypeOf(value);
	if (proto !== Object.prototype && proto !== null) return value;
	const copy: Record<string, unknown> = proto === null ? Object.create(null) : {};
	for (const [k, v] of Object.entries(value)) copy[k] = frozenPlainCopy(v);
	return Object.freeze(copy) as T;
}

/** Least time between two warnings about cache failures, in ms. */
export const WARN_EVERY_MS = 10_000;

/** The cacher type name to use in broker options. */
export const RESILIENT_REDIS_CACHER = "ResilientRedis";

type Operation = "get" | "getWithTTL" | "set" | "del" | "clean";

export class ResilientRedisCacher extends Cachers.Redis {
	/** Cache operations that failed and were degraded, since start (by operation). */
	readonly degraded: Record<Operation, number> = {
		get: 0,
		getWithTTL: 0,
		set: 0,
		del: 0,
		clean: 0
	};
	private lastWarnAt = 0;
	private suppressed = 0;

	/**
	 * A failed read is a miss: exactly `opts.missingResponse` (the middleware compares with it;
	 * anything else would be served as a cached result).
	 */
	override get(key: string): Promise<Record<string, unknown> | null> {
		return this.guard("get", key, () => super.get(key), this.missing());
	}

	/** A failed read is a miss (no TTL). */
	override getWithTTL(key: string): Promise<Record<string, unknown> | null> {
		return this.guard("getWithTTL", key, () => super.getWithTTL(key), {
			data: this.missing(),
			ttl: null
		});
	}

	/** A failed write leaves the result uncached. */
	override set(key: string, data: unknown, ttl?: number): Promise<void> {
		return this.guard("set", key, () => super.set(key, data, ttl), undefined);
	}

	/** A failed delete leaves the entry to its TTL. */
	override del(key: string | string[]): Promise<void> {
		return this.guard("del", String(key), () => super.del(key), undefined);
	}

	/** A failed clean leaves the entries to their TTL. */
	override clean(match?: string | string[]): Promise<void> {
		return this.guard("clean", String(match ?? "*"), () => super.clean(match), undefined);
	}

	private missing(): Record<string, unknown> | null {
		return (this.opts as { missingResponse?: unknown }).missingResponse as Record<
			string,
			unknown
		> | null;
	}

	private async guard<T>(
		op: Operation,
		key: string,
		run: () => Promise<T>,
		fallback: T
	): Promise<T> {
		try {
			// `run` may throw synchronously (e.g. a serializer error) as well as reject.
			return await run();
		} catch (err) {
			this.degraded[op]++;
			this.warn(op, key, err);
			return fallback;
		}
	}

	private warn(op: Operation, key: string, err: unknown): void {
		const now = Date.now();
		if (now - this.lastWarnAt < WARN_EVERY_MS) {
			this.suppressed++;
			return;
		}
		const more = this.suppressed > 0 ? ` (${this.suppressed} more since the last warning)` : "";
		this.lastWarnAt = now;
		this.suppressed = 0;
		this.logger.warn(
			`Cache ${op} of "${key}" failed, served without the cache${more}: ${(err as Error)?.message ?? String(err)}`
		);
	}
}

Cachers.register(
	RESILIENT_REDIS_CACHER,
	ResilientRedisCacher as unknown as Parameters<typeof Cachers.register>[1]
);
