/**
 * The gateway's rate limiter: its settings, the store (platform/web/rate-limit-store.ts:
 * rate-limiter-flexible's RateLimiterRedis with a RateLimiterMemory insurance limiter) on a real
 * redis-server, and the gateway (services/api/api.service.ts, a real HTTP server on a free port) with
 * moleculer-web's memory store (no CACHER), switched off (RATE_LIMIT_MAX=0) and with the Redis
 * store while Redis goes away (requests are then counted in the gateway's memory) and comes back.
 * The shared count across two gateway processes is in test/cluster/rate-limit.test.ts.
 */
import type { AddressInfo, Server } from "node:net";
import { ConfigError, loadConfig, RATE_LIMIT_MAX_DEFAULT } from "../../platform/config";
import {
	COMMAND_TIMEOUT_MS,
	DEFAULT_KEY_PREFIX,
	RedisRateLimitStore,
	WARN_EVERY_MS
} from "../../platform/web/rate-limit-store";
import { retryAfterSeconds } from "../../platform/web/rate-limit";
import { startTestBroker, waitFor, type TestBroker } from "../support/broker";
import { startRedis, type RedisServer } from "../support/redis";
import { api } from "../support/shop-process";
import type { ServiceBroker } from "moleculer";
import { Redis } from "ioredis";

const UNKNOWN_PRODUCT = "00000000-0000-4000-8000-00000000abcd";

/**
 * Kills the redis-server of `redis` (SIGKILL: it goes away without a goodbye) and waits until
 * the client of `store` has noticed. `redis.restart()` brings an empty one back on its port.
 */
async function killRedis(redis: RedisServer, store: { client: { status: string } }): Promise<void> {
	process.kill(redis.pid, "SIGKILL");
	await waitFor(
		async () => store.client.status,
		s => s !== "ready"
	);
}

/** A fake broker whose logger records warnings. */
function recordingBroker(): { broker: ServiceBroker; warnings: string[]; infos: string[] } {
	const warnings: string[] = [];
	const infos: string[] = [];
	const logger = {
		warn: (msg: string) => warnings.push(msg),
		info: (msg: string) => infos.push(msg)
	};
	return { broker: { getLogger: () => logger } as unknown as ServiceBroker, warnings, infos };
}

/** Starts api + inventory in this process with `env` on fresh modules (the gateway's settings are
 * read when services/api/api.service.ts is loaded); returns the broker and the gateway's URL. */
async function startGateway(
	env: Record<string, string>,
	without: string[] = []
): Promise<{ t: TestBroker; base: string; stores(): RedisRateLimitStore[] }> {
	jest.resetModules();
	for (const k of without) delete process.env[k];
	const t = await startTestBroker(["api", "inventory"], { env });
	const svc = t.broker.getLocalService("api") as unknown as {
		server: Server;
		routes: { rateLimit?: { store?: unknown } }[];
	};
	const port = (svc.server.address() as AddressInfo).port;
	return {
		t,
		base: `http://127.0.0.1:${port}`,
		// The module instance the gateway loaded (after resetModules), not this file's.
		stores: () =>
			svc.routes
				.map(r => r.rateLimit?.store)
				.filter(
					(s): s is RedisRateLimitStore =>
						s !== undefined && s?.constructor.name === "RedisRateLimitStore"
				)
	};
}

describe("rate limit settings", () => {
	const secret = "s".repeat(32);

	it("defaults to RATE_LIMIT_MAX_DEFAULT requests per 60 s window", () => {
		const c = loadConfig({ JWT_SECRET: secret });
		expect(c.rateLimitMax).toBe(RATE_LIMIT_MAX_DEFAULT);
		expect(c.rateLimitWindowMs).toBe(60_000);
	});

	it("reads RATE_LIMIT_MAX (0 = off) and RATE_LIMIT_WINDOW_MS", () => {
		const c = loadConfig({
			JWT_SECRET: secret,
			RATE_LIMIT_MAX: "0",
			RATE_LIMIT_WINDOW_MS: "1000"
		});
		expect(c.rateLimitMax).toBe(0);
		expect(c.rateLimitWindowMs).toBe(1000);
		expect(loadConfig({ JWT_SECRET: secret, RATE_LIMIT_MAX: "5" }).rateLimitMax).toBe(5);
	});

	it.each([
		["RATE_LIMIT_MAX", "-1"],
		["RATE_LIMIT_MAX", "ten"],
		["RATE_LIMIT_MAX", "1.5"],
		["RATE_LIMIT_WINDOW_MS", "999"],
		["RATE_LIMIT_WINDOW_MS", "0"],
		["RATE_LIMIT_WINDOW_MS", String(24 * 3600_000 + 1)]
	])("rejects %s=%s", (name, value) => {
		expect(() => loadConfig({ JWT_SECRET: secret, [name]: value })).toThrow(ConfigError);
	});
});

describe("retryAfterSeconds", () => {
	const res = (reset: string | undefined) => ({ getHeader: () => reset });

	it("is the whole seconds left until X-Rate-Limit-Reset, at least 1", () => {
		expect(retryAfterSeconds(res("61000"), 1_000)).toBe(60);
		expect(retryAfterSeconds(res("61000"), 1_001)).toBe(60);
		expect(retryAfterSeconds(res("61000"), 1_999)).toBe(60);
		expect(retryAfterSeconds(res("61000"), 60_500)).toBe(1);
		expect(retryAfterSeconds(res("61000"), 61_000)).toBe(1);
		expect(retryAfterSeconds(res("61000"), 70_000)).toBe(1);
	});

	it("is 1 without the header", () => {
		expect(retryAfterSeconds(res(undefined))).toBe(1);
		expect(retryAfterSeconds(res("nonsense"))).toBe(1);
	});
});

describe("RedisRateLimitStore on a real Redis", () => {
	let redis: RedisServer;
	let client: Redis;
	const stores: RedisRateLimitStore[] = [];
	const store = (windowMs = 60_000, broker?: ServiceBroker): RedisRateLimitStore => {
		const s = new RedisRateLimitStore(windowMs, { redisUrl: redis.url }, broker);
		stores.push(s);
		return s;
	};
	const ready = (s: RedisRateLimitStore): Promise<string> =>
		waitFor(
			async () => s.client.status,
			st => st === "ready"
		);

	beforeAll(async () => {
		redis = await startRedis();
		client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
	});
	afterEach(() => jest.restoreAllMocks());
	afterAll(async () => {
		await Promise.all(stores.map(s => s.close()));
		client?.disconnect();
		await redis?.stop();
	});

	it("needs a Redis URL", () => {
		expect(() => new RedisRateLimitStore(60_000, {})).toThrow(/redisUrl/);
	});

	it("counts per key and window; two stores (two gateways) count the same requests", async () => {
		const a = store();
		const b = store();
		await Promise.all([ready(a), ready(b)]);
		expect(await a.inc("10.0.0.1")).toBe(1);
		expect(await b.inc("10.0.0.1")).toBe(2);
		expect(await a.inc("10.0.0.1")).toBe(3);
		expect(await b.inc("10.0.0.2")).toBe(1);
		// Concurrent increments from both: every count from 1 to 40 handed out once (atomic INCR).
		const counts = await Promise.all(
			Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).inc("10.0.0.3"))
		);
		expect([...counts].sort((x, y) => x - y)).toEqual(
			Array.from({ length: 40 }, (_, i) => i + 1)
		);
	});

	it("keys a counter by window number, expires it after its window, resets in the next", async () => {
		const windowMs = 60_000;
		const s = store(windowMs);
		await ready(s);
		const t0 = 1_900_000_000_000 + 12_345; // inside window 31 666 666
		const windowNo = Math.floor(t0 / windowMs);
		const now = jest.spyOn(Date, "now").mockReturnValue(t0);
		expect(await s.inc("k")).toBe(1);
		expect(await s.inc("k")).toBe(2);
		expect(s.resetTime).toBe((windowNo + 1) * windowMs);
		const key = `${DEFAULT_KEY_PREFIX}:k:${windowNo}`;
		expect(await client.get(key)).toBe("2");
		const pttl = await client.pttl(key);
		// 2 windows after its first request: past the end of its own window by at least one
		// window (t0 is inside the window), never longer.
		expect(pttl).toBeGreaterThan((windowNo + 1) * windowMs - t0 + windowMs - 5_000);
		expect(pttl).toBeLessThanOrEqual(2 * windowMs);

		now.mockReturnValue((windowNo + 1) * windowMs);
		expect(await s.inc("k")).toBe(1);
		expect(s.resetTime).toBe((windowNo + 2) * windowMs);
	});

	it("counts in memory while Redis is down (one warning), in Redis again when it is back", async () => {
		const rec = recordingBroker();
		const s = store(60_000, rec.broker);
		await ready(s);
		expect(await s.inc("down")).toBe(1);
		expect(await s.inc("down")).toBe(2);
		await killRedis(redis, s);
		try {
			// The insurance limiter counts from its own start (it never saw Redis's 2).
			for (let i = 1; i <= 5; i++) await expect(s.inc("down")).resolves.toBe(i);
			// Per key, as in Redis.
			await expect(s.inc("other")).resolves.toBe(1);
			// Throttled: one warning per WARN_EVERY_MS however many failures.
			expect(rec.warnings).toHaveLength(1);
			expect(rec.warnings[0]).toMatch(
				/Redis failed, requests are counted in this gateway's memory/
			);
			expect(WARN_EVERY_MS).toBeGreaterThan(1_000);
		} finally {
			await redis.restart();
		}
		await ready(s);
		expect(await s.inc("down")).toBe(1); // an empty Redis: a new count
		expect(rec.infos).toContain("Rate limiter: Redis answers again.");
	}, 30_000);

	it("counts in memory when Redis hangs (after COMMAND_TIMEOUT_MS)", async () => {
		const rec = recordingBroker();
		const s = store(60_000, rec.broker);
		await ready(s);
		// The clock runs from the start of a window, so the test never crosses into the next one
		// (a crossing would reset the count and look like a lost increment).
		const realNow = Date.now.bind(Date);
		const start = realNow();
		const windowStart = (Math.floor(start / 60_000) + 100) * 60_000;
		jest.spyOn(Date, "now").mockImplementation(() => windowStart + (realNow() - start));
		const before = await s.inc("hung");
		expect(before).toBeGreaterThanOrEqual(1);
		process.kill(redis.pid, "SIGSTOP");
		try {
			const at = Date.now();
			await expect(s.inc("hung")).resolves.toBe(1);
			await expect(s.inc("hung")).resolves.toBe(2);
			expect(Date.now() - at).toBeGreaterThanOrEqual(COMMAND_TIMEOUT_MS - 50);
			expect(rec.warnings[0]).toMatch(
				new RegExp(
					`counted in this gateway's memory.*did not answer within ${COMMAND_TIMEOUT_MS} ms`
				)
			);
		} finally {
			process.kill(redis.pid, "SIGCONT");
		}
		const after = await waitFor(
			() => s.inc("hung"),
			n => n > 0
		);
		expect(after).toBeGreaterThan(before);
	}, 30_000);
});

describe("the gateway's rate limit without Redis (moleculer-web's memory store)", () => {
	let gw: Awaited<ReturnType<typeof startGateway>>;

	beforeAll(async () => {
		gw = await startGateway({ RATE_LIMIT_MAX: "3", RATE_LIMIT_WINDOW_MS: "60000" }, ["CACHER"]);
	});
	afterAll(async () => gw?.t.stop());

	it("answers 429 REQUEST_RATE_LIMITED with Retry-After past the limit; probes are exempt", async () => {
		for (let i = 0; i < 3; i++) {
			const r = await api(gw.base, "GET", `/api/inventory/${UNKNOWN_PRODUCT}`);
			expect(r.status).toBe(404);
			expect(r.headers.get("x-rate-limit-limit")).toBe("3");
			expect(r.headers.get("x-rate-limit-remaining")).toBe(String(2 - i));
		}
		const limited = await api(gw.base, "GET", `/api/inventory/${UNKNOWN_PRODUCT}`);
		const at = Date.now();
		expect(limited.status).toBe(429);
		expect(limited.body).toEqual({
			name: "ShopClientError",
			message: "Too many requests.",
			code: 429,
			type: "REQUEST_RATE_LIMITED",
			data: { limit: 3, windowMs: 60_000, retryAfter: expect.any(Number) }
		});
		const retryAfter = Number(limited.headers.get("retry-after"));
		expect(retryAfter).toBe(limited.body.data.retryAfter);
		expect(Number.isInteger(retryAfter)).toBe(true);
		expect(retryAfter).toBeGreaterThanOrEqual(1);
		expect(retryAfter).toBeLessThanOrEqual(60);
		const reset = Number(limited.headers.get("x-rate-limit-reset"));
		expect(Math.abs(retryAfter - Math.ceil((reset - at) / 1000))).toBeLessThanOrEqual(1);
		expect(limited.headers.get("x-rate-limit-remaining")).toBe("0");
		expect(limited.headers.get("x-request-id")).toBeTruthy();
		// Any /api route, authenticated or not, counts against the same address.
		const login = await api(gw.base, "POST", "/api/users/login", {
			body: { email: "a@example.com", password: "whatever-password" }
		});
		expect(login.status).toBe(429);

		for (let i = 0; i < 10; i++) {
			const health = await api(gw.base, "GET", "/health");
			expect(health.status).toBe(200);
			expect(health.headers.get("x-rate-limit-limit")).toBeNull();
			const ready = await api(gw.base, "GET", "/ready");
			expect(ready.status).not.toBe(429); // 503 here: only api and inventory run
			expect(ready.body.checks.inventory).toBe("ok");
		}
	});
});

describe("the gateway with RATE_LIMIT_MAX=0", () => {
	let gw: Awaited<ReturnType<typeof startGateway>>;

	beforeAll(async () => {
		gw = await startGateway({ RATE_LIMIT_MAX: "0" }, ["CACHER"]);
	});
	afterAll(async () => gw?.t.stop());

	it("does not limit and sets no rate limit headers", async () => {
		for (let i = 0; i < 30; i++) {
			const r = await api(gw.base, "GET", `/api/inventory/${UNKNOWN_PRODUCT}`);
			expect(r.status).toBe(404);
			expect(r.headers.get("x-rate-limit-limit")).toBeNull();
		}
	});
});

describe("the gateway with the Redis store (CACHER) while Redis goes away", () => {
	let redis: RedisServer;
	let gw: Awaited<ReturnType<typeof startGateway>>;
	const get = () => api(gw.base, "GET", `/api/inventory/${UNKNOWN_PRODUCT}`);

	beforeAll(async () => {
		redis = await startRedis();
		gw = await startGateway({
			CACHER: redis.url,
			RATE_LIMIT_MAX: "3",
			RATE_LIMIT_WINDOW_MS: "3600000"
		});
	});
	let stopped = false;
	afterAll(async () => {
		if (!stopped) await gw?.t.stop();
		delete process.env.CACHER;
		await redis?.stop();
	});

	it("counts in Redis, in the gateway's memory while it is down, never a 500", async () => {
		const [store] = gw.stores();
		expect(store).toBeDefined();
		expect(gw.stores()).toHaveLength(1);
		await waitFor(
			async () => store!.client.status,
			s => s === "ready"
		);
		for (let i = 0; i < 3; i++) expect((await get()).status).toBe(404);
		const limited = await get();
		expect(limited.status).toBe(429);
		expect(limited.body.type).toBe("REQUEST_RATE_LIMITED");
		const retryAfter = Number(limited.headers.get("retry-after"));
		expect(retryAfter).toBeGreaterThanOrEqual(1);
		expect(retryAfter).toBeLessThanOrEqual(3600);

		await killRedis(redis, store!);
		try {
			// Counted in memory from 1: the limit still holds (before, these passed uncounted).
			for (let i = 0; i < 3; i++) {
				const r = await get();
				expect(r.status).toBe(404);
				expect(r.headers.get("x-rate-limit-remaining")).toBe(String(2 - i));
			}
			for (let i = 0; i < 3; i++) {
				const r = await get();
				expect(r.status).toBe(429);
				expect(r.body.type).toBe("REQUEST_RATE_LIMITED");
			}
			expect((await api(gw.base, "GET", "/health")).status).toBe(200);
		} finally {
			await redis.restart();
		}
		await waitFor(
			async () => store!.client.status,
			s => s === "ready"
		);
		// An empty Redis: a fresh count.
		for (let i = 0; i < 3; i++) expect((await get()).status).toBe(404);
		expect((await get()).status).toBe(429);
	}, 30_000);

	it("closes its Redis connection when the gateway stops", async () => {
		const [store] = gw.stores();
		stopped = true;
		await gw.t.stop();
		expect(store!.client.status).toBe("end");
	});
});
