/**
 * A store for moleculer-web's rate limiter (`rateLimit.StoreFactory`) on rate-limiter-flexible:
 * `RateLimiterRedis` on an ioredis connection, so that every gateway replica counts the same
 * client against the same number, and `RateLimiterMemory` as its `insuranceLimiter`, so that
 * while Redis is away (down, refusing, or slower than {@link COMMAND_TIMEOUT_MS}) each gateway
 * keeps counting in its own memory instead of letting requests through uncounted. The library's
 * own pattern (https://github.com/animir/node-rate-limiter-flexible/wiki/Insurance-Strategy).
 *
 * Windows: fixed and aligned on multiples of `windowMs` since the epoch (every replica, clocks
 * kept in step by NTP, agrees on them): the library's key is `<client key>:<window number>`, with
 * `window number = floor(now / windowMs)`, so a client's count starts again at each window.
 * moleculer-web reads the store's one `resetTime` right after `inc` for `X-Rate-Limit-Reset`; an
 * aligned window's end is the same for every client, so concurrent requests of different clients
 * cannot hand each other a wrong reset time (a per-client window starting at its first request
 * could). A counter expires `2 × windowMs` after its first request, at least one window after
 * its own window ended (a margin for clock skew). Like every fixed window, it lets a client send
 * up to twice the limit across a window boundary.
 *
 * While Redis is away, each gateway's memory counts on its own (a client spreading its requests
 * over N gateways gets up to N times the limit); when Redis answers again the Redis count goes on
 * from what Redis held (the memory counts are not copied back). A warning is logged when the
 * store falls back to memory (at most every {@link WARN_EVERY_MS}); the store never turns a
 * request into a 500.
 */
import type { Logger, ServiceBroker } from "moleculer";
import type { RateLimitSettings } from "moleculer-web";
import { Redis } from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";

/** Longest wait for Redis before a request is counted in memory instead, in ms. */
export const COMMAND_TIMEOUT_MS = 500;

/** Least time between two warnings about Redis failures, in ms. */
export const WARN_EVERY_MS = 10_000;

/** Default prefix of the counters' keys (`<prefix>:<client key>:<window number>`). */
export const DEFAULT_KEY_PREFIX = "shop-rate-limit";

/** moleculer-web's rate limit options plus the Redis this store uses. */
export interface RedisRateLimitSettings extends RateLimitSettings {
	/** `redis://[:password@]host:port[/db]` or `rediss://...` (TLS). */
	redisUrl: string;
	/** Prefix of the counters' keys (default {@link DEFAULT_KEY_PREFIX}). */
	redisKeyPrefix?: string;
}

type WarnLogger = Pick<Logger, "warn" | "info">;

/** The options both limiters share (the library's `IRateLimiterOptions`, not exported). */
type LimiterOptions = ConstructorParameters<typeof RateLimiterMemory>[0];

/** The insurance limiter: rate-limiter-flexible's memory store, telling when it is used. */
class InsuranceMemoryLimiter extends RateLimiterMemory {
	constructor(
		opts: LimiterOptions,
		private readonly onUse: () => void
	) {
		super(opts);
	}

	override consume(
		key: string | number,
		points?: number,
		options?: { [key: string]: unknown }
	): Promise<RateLimiterRes> {
		this.onUse();
		return super.consume(key, points, options);
	}
}

/**
 * The rate limit store. moleculer-web builds it once per route as
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
	private readonly limiter: RateLimiterRedis;
	private readonly logger: WarnLogger;
	private lastWarnAt = 0;
	private suppressed = 0;
	private failing = false;
	private closed = false;

	/**
	 * @param windowMs - length of a window (moleculer-web passes `rateLimit.window`), ms
	 * @param opts - moleculer-web's rate limit options (`limit`), with `redisUrl`
	 * @param broker - for its logger
	 * @throws Error without `opts.redisUrl`, or with a window that is not a positive integer
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
			// The library's advice for ioredis: fail at once while disconnected (the insurance
			// limiter answers) rather than queue the request behind a reconnect.
			enableOfflineQueue: false,
			maxRetriesPerRequest: 1,
			commandTimeout: COMMAND_TIMEOUT_MS,
			connectTimeout: 2_000,
			retryStrategy: times => Math.min(times * 200, 2_000)
		});
		// Without a listener ioredis prints every connection error itself.
		this.client.on("error", (err: Error) => this.failed(err.message));
		this.client.on("ready", () => {
			if (this.failing) this.logger.info("Rate limiter: Redis answers again.");
			this.failing = false;
		});
		const common: LimiterOptions = {
			keyPrefix: this.keyPrefix,
			// moleculer-web compares the count with the limit itself; `points` only decides
			// whether the library resolves or rejects, and `inc` takes the count from either.
			points: Math.max(1, o.limit ?? 1),
			// Whole seconds (Redis EX); at least one window past the end of the counter's window.
			duration: Math.ceil((2 * windowMs) / 1000)
		};
		this.limiter = new RateLimiterRedis({
			...common,
			storeClient: this.client,
			rejectIfRedisNotReady: true,
			insuranceLimiter: new InsuranceMemoryLimiter(common, () =>
				this.failed(
					this.client.status === "ready"
						? `Redis failed or did not answer within ${COMMAND_TIMEOUT_MS} ms`
						: `Redis connection ${this.client.status}`
				)
			)
		});
	}

	/** End (epoch ms) of the window holding `now`. */
	windowEnd(now: number): number {
		return (Math.floor(now / this.windowMs) + 1) * this.windowMs;
	}

	/**
	 * Counts one request of `key` in the current window: in Redis, or in this gateway's memory
	 * while Redis is away.
	 * @returns the window's count including this request (> limit: moleculer-web answers 429)
	 */
	async inc(key: string): Promise<number> {
		const now = Date.now();
		const windowNo = Math.floor(now / this.windowMs);
		this.resetTime = (windowNo + 1) * this.windowMs;
		try {
			return (await this.limiter.consume(`${key}:${windowNo}`)).consumedPoints;
		} catch (res) {
			// Over `points`: the library rejects with the same RateLimiterRes.
			if (res instanceof RateLimiterRes) return res.consumedPoints;
			// Not expected (the memory limiter does not fail): never a 500 for a rate limit.
			this.failed(res instanceof Error ? res.message : String(res));
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
	private failed(reason: string): void {
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
			`Rate limiter: Redis failed, requests are counted in this gateway's memory${more}: ${reason}`
		);
	}
}
