/**
 * A store for moleculer-web's rate limiter (`rateLimit.StoreFactory`) kept in Redis, so that every
 * gateway replica counts the same client against the same number.
 *
 * Algorithm: a fixed window counter, the "Pattern: Rate limiter 1" of the Redis manual's INCR page
 * (https://redis.io/commands/incr/): one counter per client and window, named
 * `<prefix><client key>:<window number>` with `window number = floor(now / windowMs)`, so windows
 * start on multiples of `windowMs` since the epoch and every replica (clocks kept in step by NTP)
 * agrees on them. `INCR` and `PEXPIRE` go together in one MULTI/EXEC transaction, so a counter
 * never exists without its expiry; it expires one window after its own window ended (a margin for
 * clock skew between replicas). moleculer-web compares the count `inc` returns with the limit and
 * reads `resetTime` (the end of the current window, epoch ms) for `X-Rate-Limit-Reset`.
 *
 * Like every fixed window, it lets a client send up to twice the limit across a window boundary
 * (the end of one window and the start of the next); a sliding window would not, at the price of
 * more Redis work per request.
 *
 * Redis unreachable, failing or slower than {@link COMMAND_TIMEOUT_MS}: the store fails open (the
 * request counts as the first of its window, i.e. it is let through) and logs a warning at most
 * every {@link WARN_EVERY_MS}; a rate limiter never turns a request into a 500.
 */
import type { Logger, ServiceBroker } from "moleculer";
import type { RateLimitSettings } from "moleculer-web";
import { Redis } from "ioredis";

/** Longest wait for Redis before a request is let through uncounted, in ms. */
export const COMMAND_TIMEOUT_MS = 500;

/** Least time between two warnings about Redis failures, in ms. */
export const WARN_EVERY_MS = 10_000;

/** Default prefix of the counters' keys. */
export const DEFAULT_KEY_PREFIX = "shop-rate-limit:";

/** moleculer-web's rate limit options plus the Redis this store uses. */
export interface RedisRateLimitSettings extends RateLimitSettings {
	/** `redis://[:password@]host:port[/db]` or `rediss://...` (TLS). */
	redisUrl: string;
	/** Prefix of the counters' keys (default {@link DEFAULT_KEY_PREFIX}). */
	redisKeyPrefix?: string;
}

type WarnLogger = Pick<Logger, "warn" | "info">;

/**
 * The Redis-backed rate limit store. moleculer-web builds it once per route as
 * `new StoreFactory(window, rateLimitOptions, broker)`; the options must carry `redisUrl`.
 * Call {@link RedisRateLimitStore.close} when the gateway stops.
 */
export class RedisRateLimitStore {
	/** End of the current window (epoch ms), as of the last `inc`. */
	resetTime: number;
	/** Length of a window, in ms. */
	readonly windowMs: number;
	/** Prefix of the counters' keys. */
	readonly keyPrefix: string;
	/** The store's own connection (no offline queue: commands fail at once while disconnected). */
	readonly client: Redis;
	private readonly logger: WarnLogger;
	private lastWarnAt = 0;
	private suppressed = 0;
	private failing = false;
	private closed = false;

	/**
	 * @param windowMs - length of a window (moleculer-web passes `rateLimit.window`)
	 * @param opts - moleculer-web's rate limit options, with `redisUrl`
	 * @param broker - for its logger
	 * @throws Error without `opts.redisUrl`
	 */
	constructor(windowMs: number, opts?: Partial<RedisRateLimitSettings>, broker?: ServiceBroker) {
		const o = opts ?? {};
		if (!o.redisUrl) throw new Error("RedisRateLimitStore needs rateLimit.redisUrl");
		if (!Number.isInteger(windowMs) || windowMs <= 0)
			throw new Error(`RedisRateLimitStore: bad window ${windowMs}`);
		this.windowMs = windowMs;
		this.keyPrefix = o.redisKeyPrefix ?? DEFAULT_KEY_PREFIX;
		this.resetTime = this.windowEnd(Date.now());
		this.logger = broker?.getLogger("rate-limit") ?? console;
		this.client = new Redis(o.redisUrl, {
			enableOfflineQueue: false,
			maxRetriesPerRequest: 1,
			commandTimeout: COMMAND_TIMEOUT_MS,
			connectTimeout: 2_000,
			retryStrategy: times => Math.min(times * 200, 2_000)
		});
		// Without a listener ioredis prints every connection error itself.
		this.client.on("error", (err: Error) => this.failed(err));
		this.client.on("ready", () => {
			if (this.failing) this.logger.info("Rate limiter: Redis answers again.");
			this.failing = false;
		});
	}

	/** End (epoch ms) of the window holding `now`. */
	windowEnd(now: number): number {
		return (Math.floor(now / this.windowMs) + 1) * this.windowMs;
	}

	/**
	 * Counts one request of `key` in the current window.
	 * @returns the window's count including this request; 0 when Redis failed (fail open)
	 */
	async inc(key: string): Promise<number> {
		const now = Date.now();
		const windowNo = Math.floor(now / this.windowMs);
		const end = (windowNo + 1) * this.windowMs;
		this.resetTime = end;
		const redisKey = `${this.keyPrefix}${key}:${windowNo}`;
		try {
			const results = await this.client
				.multi()
				.incr(redisKey)
				.pexpire(redisKey, end - now + this.windowMs)
				.exec();
			if (!results) throw new Error("MULTI aborted");
			const [incr, expire] = results;
			if (incr?.[0]) throw incr[0];
			if (expire?.[0]) throw expire[0];
			const count = Number(incr?.[1]);
			if (!Number.isFinite(count)) throw new Error(`INCR answered ${String(incr?.[1])}`);
			return count;
		} catch (err) {
			this.failed(err as Error);
			return 0;
		}
	}

	/** Closes the connection (the gateway's `stopped`). */
	async close(): Promise<void> {
		if (this.closed) return;
		this.closed = true;
		try {
			await this.client.quit();
		} catch {
			this.client.disconnect();
		}
	}

	/** Logs a Redis failure, at most once per WARN_EVERY_MS (counting the ones left out). */
	private failed(err: Error): void {
		if (this.closed) return;
		this.failing = true;
		const now = Date.now();
		if (now - this.lastWarnAt < WARN_EVERY_MS) {
			this.suppressed++;
			return;
		}
		const more = this.suppressed > 0 ? ` (${this.suppressed} more since the last warning)` : "";
		this.lastWarnAt = now;
		this.suppressed = 0;
		this.logger.warn(
			`Rate limiter: Redis failed, requests pass uncounted${more}: ${err.message}`
		);
	}
}
