/**
 * Brute-force and cost protection of `users.login` and `users.register` with rate-limiter-flexible:
 * failed logins (and sign-ups of an e-mail that is already registered) are counted per account and
 * per client address, and either count reaching its maximum blocks further attempts for a while;
 * successful logins are counted too, per account and per address over a window of their own, and
 * either count at its maximum refuses further logins until that window ends.
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
 * - Sign-ups: a sign-up of a registered e-mail is a failure of that e-mail and that address
 *   (`failed`), checked before the database and the hash (`checkFailures`): probing which e-mails
 *   are registered, or making the shop look one up again and again, costs what guessing does,
 *   from the same budget.
 * - Successful logins (`succeeded`) each cost a password hash too; an account or an address may
 *   have `maxLoginsPerAccount` / `maxLoginsPerIp` of them per `rateWindowMs` (a fixed window, the
 *   library's plain `consume`), checked before the hash (`check`). They never block longer than
 *   the window, and a sign-up is not refused for them.
 *
 * - Account key: SHA-256 of the e-mail's identity key (services/users/email-identity.ts: every
 *   form of an address counts as one; the lower-cased e-mail for a login of an address with no
 *   key), so Redis holds no addresses. Unknown e-mails are counted exactly like registered
 *   ones, so throttling says nothing about which exist.
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

/** Settings of the throttle (platform/config.ts: `LOGIN_*`). */
export interface LoginThrottleOptions {
	/** Failures of one account (from anywhere) before it is blocked; 0 = not counted. */
	readonly maxFailuresPerAccount: number;
	/** Failures from one client address (on any accounts) before it is blocked; 0 = not counted. */
	readonly maxFailuresPerIp: number;
	/** How long a block lasts, in ms (rounded up to whole seconds). */
	readonly blockMs: number;
	/** How long a failure is remembered, in ms (rounded up to whole seconds). */
	readonly windowMs: number;
	/** Successful logins of one account per `rateWindowMs`; 0 or absent = not counted. */
	readonly maxLoginsPerAccount?: number;
	/** Successful logins from one client address per `rateWindowMs`; 0 or absent = not counted. */
	readonly maxLoginsPerIp?: number;
	/** Window of the successful-login counts, in ms (whole seconds, rounded up; default 60 s). */
	readonly rateWindowMs?: number;
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
	/** `failures`: failed logins or sign-ups of a registered e-mail; `logins`: successful logins. */
	readonly reason: "failures" | "logins";
}

const WARN_EVERY_MS = 10_000;

/** The key of an account's counter: no e-mail addresses in Redis. */
export function accountKey(email: string): string {
	return crypto.createHash("sha256").update(email.trim().toLowerCase()).digest("hex");
}

/** Failed and successful logins counted per account and per client address; see above. */
export class LoginThrottle {
	private readonly byAccount: RateLimiterAbstract | null;
	private readonly byIp: RateLimiterAbstract | null;
	private readonly loginsByAccount: RateLimiterAbstract | null;
	private readonly loginsByIp: RateLimiterAbstract | null;
	private readonly redis: Redis | null = null;
	private readonly blockSeconds: number;
	private lastWarnAt = 0;
	private closed = false;

	constructor(private readonly opts: LoginThrottleOptions) {
		const prefix = opts.keyPrefix ?? "shop-login";
		this.blockSeconds = Math.max(1, Math.ceil(opts.blockMs / 1000));
		const duration = Math.max(1, Math.ceil(opts.windowMs / 1000));
		const rateDuration = Math.max(1, Math.ceil((opts.rateWindowMs ?? 60_000) / 1000));
		const maxLoginsPerAccount = opts.maxLoginsPerAccount ?? 0;
		const maxLoginsPerIp = opts.maxLoginsPerIp ?? 0;
		const counting = [
			opts.maxFailuresPerAccount,
			opts.maxFailuresPerIp,
			maxLoginsPerAccount,
			maxLoginsPerIp
		].some(max => max > 0);
		if (opts.redisUrl && counting) {
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
		// Failures block for `blockMs` once at the maximum; successes only fill their window.
		const limiter = (
			name: string,
			points: number,
			window: number,
			blockDuration: number
		): RateLimiterAbstract | null => {
			if (points <= 0) return null;
			const common = { keyPrefix: `${prefix}:${name}`, points, duration: window };
			const memory = new RateLimiterMemory({ ...common, blockDuration });
			if (!this.redis) return memory;
			return new RateLimiterRedis({
				...common,
				blockDuration,
				storeClient: this.redis,
				rejectIfRedisNotReady: true,
				insuranceLimiter: memory
			});
		};
		this.byAccount = limiter(
			"account",
			opts.maxFailuresPerAccount,
			duration,
			this.blockSeconds
		);
		this.byIp = limiter("ip", opts.maxFailuresPerIp, duration, this.blockSeconds);
		this.loginsByAccount = limiter("logins-account", maxLoginsPerAccount, rateDuration, 0);
		this.loginsByIp = limiter("logins-ip", maxLoginsPerIp, rateDuration, 0);
	}

	/**
	 * Whether a login attempt may go on; call before checking the password. Looks at the
	 * failures and at the successful logins of the account and of the address.
	 * @param email - as the client sent it
	 * @param ip - the client's address; absent for calls from inside the cluster
	 * @returns `null` when allowed, else the block that ends last
	 */
	async check(email: string, ip?: string | null): Promise<ThrottleBlock | null> {
		return this.longestBlock(email, ip, true);
	}

	/**
	 * Whether a sign-up may go on; call before looking the e-mail up. Looks at the failures of
	 * the e-mail and of the address only (successful logins do not hold a sign-up back).
	 * @returns `null` when allowed, else the block that ends last
	 */
	async checkFailures(email: string, ip?: string | null): Promise<ThrottleBlock | null> {
		return this.longestBlock(email, ip, false);
	}

	/**
	 * Counts a failed attempt against the account and the address: a failed login, or a sign-up
	 * of a registered e-mail.
	 */
	async failed(email: string, ip?: string | null): Promise<void> {
		await Promise.all([
			this.count(this.byAccount, accountKey(email)),
			ip ? this.count(this.byIp, ip) : undefined
		]);
	}

	/**
	 * A successful login: the account's failures are forgotten (the address's are not), and the
	 * login is counted against the account's and the address's successful-login windows.
	 */
	async succeeded(email: string, ip?: string | null): Promise<void> {
		const key = accountKey(email);
		await Promise.all([
			this.byAccount?.delete(key).catch(() => undefined),
			this.consume(this.loginsByAccount, key),
			ip ? this.consume(this.loginsByIp, ip) : undefined
		]);
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

	/** The longest of the blocks that apply (`withLogins`: the successful-login counts too). */
	private async longestBlock(
		email: string,
		ip: string | null | undefined,
		withLogins: boolean
	): Promise<ThrottleBlock | null> {
		const key = accountKey(email);
		const look = (
			limiter: RateLimiterAbstract | null,
			k: string | null | undefined
		): Promise<RateLimiterRes | null> =>
			limiter && k ? limiter.get(k).catch(() => null) : Promise.resolve(null);
		const [acc, addr, accLogins, addrLogins] = await Promise.all([
			look(this.byAccount, key),
			look(this.byIp, ip),
			look(withLogins ? this.loginsByAccount : null, key),
			look(withLogins ? this.loginsByIp : null, ip)
		]);
		// A failure counter blocks once over its maximum (the block set by `count`); a login
		// counter refuses once at it (the next success would exceed it).
		const candidates: [
			RateLimiterRes | null,
			RateLimiterAbstract | null,
			ThrottleBlock["by"],
			ThrottleBlock["reason"],
			number
		][] = [
			[addr, this.byIp, "ip", "failures", 1],
			[acc, this.byAccount, "account", "failures", 1],
			[addrLogins, this.loginsByIp, "ip", "logins", 0],
			[accLogins, this.loginsByAccount, "account", "logins", 0]
		];
		let worst: ThrottleBlock | null = null;
		for (const [res, limiter, by, reason, over] of candidates) {
			if (!res || !limiter || res.consumedPoints < limiter.points + over) continue;
			const retryAfterMs = Math.max(1, res.msBeforeNext);
			if (!worst || retryAfterMs > worst.retryAfterMs) worst = { retryAfterMs, by, reason };
		}
		return worst;
	}

	/** One successful login on `key`; past the maximum the window simply fills (no block). */
	private async consume(limiter: RateLimiterAbstract | null, key: string): Promise<void> {
		if (!limiter) return;
		try {
			await limiter.consume(key);
		} catch (err) {
			if (err instanceof RateLimiterRes) return;
			this.warn(err as Error);
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
