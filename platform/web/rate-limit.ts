/**
 * The gateway's rate limit (moleculer-web's `rateLimit`) from the config, and the `Retry-After`
 * of its 429. Moved out of services/api/api.service.ts (issue 17). The counters live in
 * `RedisRateLimitStore` (rate-limit-store.ts: rate-limiter-flexible in Redis, shared by every
 * gateway, counting in the gateway's memory while Redis is away) when `CACHER` is set, else in
 * moleculer-web's memory store.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { RateLimitSettings, RateLimitStore } from "moleculer-web";
import { config } from "../config";
import { clientAddress } from "./client-address";
import { RedisRateLimitStore, type RedisRateLimitSettings } from "./rate-limit-store";

/**
 * moleculer-web's `rateLimit` of the `/api` route from the config; `undefined` (no limit) when
 * `RATE_LIMIT_MAX` is 0. The key is the client's address as `clientAddress` finds it (the TCP
 * peer; `X-Forwarded-For` only from `TRUSTED_PROXIES`): moleculer-web's default key prefers
 * `X-Forwarded-For`, which any client can set to escape its limit.
 */
export function apiRateLimit(): RateLimitSettings | RedisRateLimitSettings | undefined {
	const c = config();
	if (c.rateLimitMax === 0) return undefined;
	const settings: RateLimitSettings = {
		window: c.rateLimitWindowMs,
		limit: c.rateLimitMax,
		headers: true,
		key: (req: IncomingMessage) => clientAddress(req)
	};
	if (!c.cacher) return settings;
	return {
		...settings,
		StoreFactory: RedisRateLimitStore as unknown as typeof RateLimitStore,
		redisUrl: c.cacher
	};
}
/**
 * Seconds until the rate limit window of an answer ends (`X-Rate-Limit-Reset`, epoch ms, set by
 * moleculer-web), at least 1; 1 when the header is missing.
 */
export function retryAfterSeconds(
	res: Pick<ServerResponse, "getHeader">,
	now = Date.now()
): number {
	const reset = Number(res.getHeader("X-Rate-Limit-Reset"));
	if (!Number.isFinite(reset) || reset <= 0) return 1;
	return Math.max(1, Math.ceil((reset - now) / 1000));
}
