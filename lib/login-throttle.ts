/**
 * Brute-force protection of `users.login` with rate-limiter-flexible: failed logins are counted
 * per account and per client address, and either count reaching its maximum blocks further
 * attempts for a while.
 *
 * The pattern is the library's "Login endpoint protection" (its wiki's brute-force examples,
 * https://github.com/animir/node-rate-limiter-flexible/wiki/Overall-example#login-endpoint-protection):
 * before checking the password, look both counters up and refuse while either is blocked; count a
 * failure in both; a success deletes the account's counter ("consecutive failures") and keeps the
 * address's (so an attacker cannot reset it by logging into an account of their own between
 * guesses). Unlike the wiki's username-and-IP counter, the account's counter here counts failures
 * from every address: a guesser spreading over many addresses is limited too, at the price that
 * anyone can lock an account for `blockMs` by failing on purpose (docs/security.md).
 *
 * - Account key: SHA-256 of the lower-cased e-mail, so Redis holds no addresses. Unknown e-mails
 *   are counted exactly like registered ones, so throttling says nothing about which exist.
 * - Store: `RateLimiterRedis` on an ioredis connection when a Redis URL is given (every users
 *   node shares the counts), else `RateLimiterMemory` (this process only). Redis failing: each
 *   Redis limiter falls back to an in-memory one (`insuranceLimiter`), so logins go on, still
 *   throttled per node.
 * - Concurrent attempts checked before any of them failed can exceed the maximum by their number.
 */
import crypto from "node:crypto";
import { Redis } from "ioredis";
import {
	RateLimiterMemory,
	RateLimiterRedis,
	RateLimiterRes,
	type RateLimiterAbstract
} from "rate-limiter-flexible";

/** Settings of the throttle (lib/config.ts: `LOGIN_*`). */
export interface LoginThrottleOptions {
	/** Failures of one account (from anywhere) before it is blocked; 0 = not counted. */
	readonly maxFailuresPerAccount: number;
	/** Failures from one client address (on any accounts) before it is blocked; 0 = not counted. */
	readonly maxFailuresPerIp: number;
	/** How long a block lasts, in ms (rounded up to whole seconds). */
	readonly blockMs: number;
	/** How long a failure is remembered, in ms (rounded up to whole seconds). */
	readonly windowMs: number;
	/** `redis://...`: counts shared by every node; absent: this process's memory. */
	readonly redisUrl?: string | null;
	/** Prefix of the Redis keys (default `shop-login`). */
	readonly keyPrefix?: string;
	/** Told about Redis failures (at most one warning per 10 s). */
	readonly logger?: { warn(message: string): void };
}

/** A refusal: how long until the caller may try again. */
export interface ThrottleBlock {
	/** Milliseconds until the block ends (at least 1). */
	readonly retryAfterMs: number;
	/** Which counter blocked. */
	readonly by: "account" | "ip";
}

const WARN_EVERY_MS = 10_000;

/** The key of an account's counter: no e-mail addresses in Redis. */
export function accountKey(email: string): string {
	return crypto.createHash("sha256").update(email.trim().toLowerCase()).digest("hex");
}

/** Failed-login counters per account and per client address; see the module's comment. */
export class LoginThrottle {
	private readonly byAccount: RateLimiterAbstract | null;
	private readonly byIp: RateLimiterAbstract | null;
	private readonly redis: Redis | null = null;
	private readonly blockSeconds: number;
	private lastWarnAt = 0;
	private closed = false;

	constructor(private readonly opts: LoginThrottleOptions) {
		const prefix = opts.keyPrefix ?? "shop-login";
		this.blockSeconds = Math.max(1, Math.ceil(opts.blockMs / 1000));
		const duration = Math.max(1, Math.ceil(opts.windowMs / 1000));
		if (opts.redisUrl && (opts.maxFailuresPerAccount > 0 || opts.maxFailuresPerIp > 0)) {
			this.redis = new Redis(opts.redisUrl, {
				// The library's advice for ioredis: fail at once while disconnected (the
				// insurance limiter answers) rather than queue the login behind a reconnect.
				enableOfflineQueue: false,
				maxRetriesPerRequest: 1,
				commandTimeout: 1_000,
				connectTimeout: 2_000,
				retryStrategy: times => Math.min(times * 200, 2_000)
			});
			this.redis.on("error", (err: Error) => this.warn(err));
		}
		const limiter = (name: string, points: number): RateLimiterAbstract | null => {
			if (points <= 0) return null;
			const common = { keyPrefix: `${prefix}:${name}`, points, duration };
			const memory = new RateLimiterMemory({ ...common, blockDuration: this.blockSeconds });
			if (!this.redis) return memory;
			return new RateLimiterRedis({
				...common,
				blockDuration: this.blockSeconds,
				storeClient: this.redis,
				rejectIfRedisNotReady: true,
				insuranceLimiter: memory
			});
		};
		this.byAccount = limiter("account", opts.maxFailuresPerAccount);
		this.byIp = limiter("ip", opts.maxFailuresPerIp);
	}

	/**
	 * Whether a login attempt may go on; call before checking the password.
	 * @param email - as the client sent it
	 * @param ip - the client's address; absent for calls from inside the cluster
	 * @returns `null` when allowed, else the block
	 */
	async check(email: string, ip?: string | null): Promise<ThrottleBlock | null> {
		const [acc, addr] = await Promise.all([
			this.byAccount?.get(accountKey(email)).catch(() => null) ?? null,
			ip && this.byIp ? this.byIp.get(ip).catch(() => null) : null
		]);
		const blocked = (
			res: RateLimiterRes | null,
			limiter: RateLimiterAbstract | null
		): number | null =>
			res && limiter && res.consumedPoints > limiter.points
				? Math.max(1, res.msBeforeNext)
				: null;
		const ipMs = blocked(addr, this.byIp);
		if (ipMs !== null) return { retryAfterMs: ipMs, by: "ip" };
		const accMs = blocked(acc, this.byAccount);
		if (accMs !== null) return { retryAfterMs: accMs, by: "account" };
		return null;
	}

	/** Counts a failed attempt against the account and the address. */
	async failed(email: string, ip?: string | null): Promise<void> {
		await Promise.all([
			this.count(this.byAccount, accountKey(email)),
			ip ? this.count(this.byIp, ip) : undefined
		]);
	}

	/** A successful login: the account's failures are forgotten (the address's are not). */
	async succeeded(email: string): Promise<void> {
		await this.byAccount?.delete(accountKey(email)).catch(() => undefined);
	}

	/** Closes the Redis connection, if any. */
	async close(): Promise<void> {
		if (this.closed) return;
		this.closed = true;
		if (!this.redis) return;
		// Not connected: quit() would wait for a reconnection that is not coming.
		if (this.redis.status !== "ready") return this.redis.disconnect();
		try {
			await this.redis.quit();
		} catch {
			this.redis.disconnect();
		}
	}

	/** One failure on `key`; the one that reaches the maximum blocks the key for `blockMs`. */
	private async count(limiter: RateLimiterAbstract | null, key: string): Promise<void> {
		if (!limiter) return;
		try {
			const res = await limiter.consume(key);
			if (res.consumedPoints >= limiter.points) await limiter.block(key, this.blockSeconds);
		} catch (err) {
			// Over the maximum already: consume() blocked the key itself (blockDuration).
			if (err instanceof RateLimiterRes) return;
			this.warn(err as Error);
		}
	}

	private warn(err: Error): void {
		if (this.closed) return;
		const now = Date.now();
		if (now - this.lastWarnAt < WARN_EVERY_MS) return;
		this.lastWarnAt = now;
		this.opts.logger?.warn(
			`Login throttle: Redis failed, counting in this process meanwhile: ${err.message}`
		);
	}
}
