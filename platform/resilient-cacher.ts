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
