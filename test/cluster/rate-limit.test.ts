/**
 * The gateway's rate limit shared by gateway processes, for real: every service in its own
 * `moleculer-runner` process over NATS, `CACHER` = a real redis-server (so the gateways count in
 * Redis, platform/web/rate-limit-store.ts: rate-limiter-flexible's RateLimiterRedis), `RATE_LIMIT_MAX=5` per 60 s window. A client over the limit on
 * the first gateway gets 429 with Retry-After; on a second gateway process, which it never called
 * before, its first request is refused as well. The probes stay unlimited.
 */
import { Redis } from "ioredis";
import { DEFAULT_KEY_PREFIX } from "../../platform/web/rate-limit-store";
import { freePort } from "../support/ports";
import { startRedis, type RedisServer } from "../support/redis";
import { api } from "../support/shop-process";
import { startCluster, withOutputOnFailure, type TestCluster } from "../support/cluster";

const LIMIT = 5;
const WINDOW_MS = 60_000;

/**
 * Windows start on multiples of WINDOW_MS (platform/web/rate-limit-store.ts). A test that needs all of its
 * requests in one window waits for the next one when less than `needMs` of this one is left.
 */
async function inOneWindow(needMs: number): Promise<void> {
	const left = WINDOW_MS - (Date.now() % WINDOW_MS);
	if (left < needMs) await new Promise(r => setTimeout(r, left + 50));
}

describe("rate limit in Redis, shared by two gateway processes", () => {
	let redis: RedisServer;
	let client: Redis;
	let cluster: TestCluster;

	beforeAll(async () => {
		redis = await startRedis();
		client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
		cluster = await startCluster({
			env: {
				CACHER: redis.url,
				RATE_LIMIT_MAX: String(LIMIT),
				RATE_LIMIT_WINDOW_MS: String(WINDOW_MS)
			}
		});
	}, 120_000);
	afterAll(async () => {
		await cluster?.stop();
		client?.disconnect();
		await redis?.stop();
	}, 60_000);

	it(
		"429 with Retry-After past the limit; a second gateway shares the count; probes are exempt",
		() =>
			withOutputOnFailure(cluster, async () => {
				const first = cluster.url!;
				// A second gateway process on its own port (started first: the requests below must
				// fall in one window).
				const port = await freePort();
				const second = await cluster.addNode("api", { PORT: String(port) });
				expect(second.nodeID).toBe("api-2");
				const base2 = `http://127.0.0.1:${port}`;
				expect((await api(base2, "GET", "/health")).body.nodeID).toBe("api-2");
				expect((await api(first, "GET", "/health")).body.nodeID).toBe("api-1");

				await inOneWindow(15_000);

				for (let i = 0; i < LIMIT; i++) {
					const r = await api(first, "GET", "/api/products?pageSize=1");
					expect(r.status).toBe(200);
					expect(r.headers.get("x-rate-limit-limit")).toBe(String(LIMIT));
					expect(r.headers.get("x-rate-limit-remaining")).toBe(String(LIMIT - 1 - i));
				}
				const limited = await api(first, "GET", "/api/products?pageSize=1");
				const at = Date.now();
				expect(limited.status).toBe(429);
				expect(limited.body).toMatchObject({
					name: "ShopClientError",
					code: 429,
					type: "REQUEST_RATE_LIMITED",
					data: { limit: LIMIT, windowMs: WINDOW_MS }
				});
				expect(typeof limited.body.message).toBe("string");
				const retryAfter = Number(limited.headers.get("retry-after"));
				expect(Number.isInteger(retryAfter)).toBe(true);
				expect(retryAfter).toBeGreaterThanOrEqual(1);
				expect(retryAfter).toBeLessThanOrEqual(WINDOW_MS / 1000);
				expect(limited.body.data.retryAfter).toBe(retryAfter);
				// Seconds until the end of the fixed window the request fell in.
				const reset = Number(limited.headers.get("x-rate-limit-reset"));
				expect(reset % WINDOW_MS).toBe(0);
				expect(Math.abs(retryAfter - Math.ceil((reset - at) / 1000))).toBeLessThanOrEqual(
					1
				);

				// The count lives in Redis: one counter for this client in this window.
				const keys = await client.keys(`${DEFAULT_KEY_PREFIX}:*`);
				expect(keys).toHaveLength(1);
				expect(keys[0]).toBe(`${DEFAULT_KEY_PREFIX}:127.0.0.1:${reset / WINDOW_MS - 1}`);
				expect(await client.get(keys[0]!)).toBe(String(LIMIT + 1));

				// Probes are never limited.
				for (let i = 0; i < 2 * LIMIT; i++) {
					expect((await api(first, "GET", "/health")).status).toBe(200);
					expect((await api(first, "GET", "/ready")).status).toBe(200);
				}

				// The second gateway: its first /api request, and the client is over the limit there.
				const there = await api(base2, "GET", "/api/products?pageSize=1");
				expect(there.status).toBe(429);
				expect(there.body.type).toBe("REQUEST_RATE_LIMITED");
				expect(Number(there.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
				expect(await client.get(keys[0]!)).toBe(String(LIMIT + 2));
				expect((await api(base2, "GET", "/ready")).status).toBe(200);
			}),
		90_000
	);
});
