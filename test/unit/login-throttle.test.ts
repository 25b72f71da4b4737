import crypto from "node:crypto";
import type { ServiceBroker } from "moleculer";
import { LoginThrottle, accountKey } from "../../lib/login-throttle";
import { startRedis, type RedisServer } from "../support/redis";
import { startTestBroker, type TestBroker } from "../support/broker";

const delay = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));
const email = (tag: string): string =>
	`${tag}-${crypto.randomBytes(4).toString("hex")}@example.com`;

describe("users.login throttling (lib/login-throttle.ts, in memory)", () => {
	let t: TestBroker;
	let broker: ServiceBroker;
	const PASSWORD = "correct horse battery";

	beforeAll(async () => {
		t = await startTestBroker(["users"], {
			env: {
				LOGIN_MAX_FAILURES_PER_ACCOUNT: "3",
				LOGIN_MAX_FAILURES_PER_IP: "5",
				LOGIN_BLOCK_MS: "2000"
			}
		});
		broker = t.broker;
	});
	afterAll(async () => {
		await t?.stop();
		for (const k of [
			"LOGIN_MAX_FAILURES_PER_ACCOUNT",
			"LOGIN_MAX_FAILURES_PER_IP",
			"LOGIN_BLOCK_MS"
		])
			delete process.env[k];
	});

	const register = async (tag: string): Promise<string> => {
		const e = email(tag);
		await broker.call("users.register", { email: e, password: PASSWORD, name: tag });
		return e;
	};
	const login = (e: string, password: string, clientIp?: string): Promise<unknown> =>
		broker
			.call("users.login", { email: e, password }, { meta: clientIp ? { clientIp } : {} })
			.catch((err: unknown) => err);

	it("blocks an account after LOGIN_MAX_FAILURES_PER_ACCOUNT failures, even with the right password, until LOGIN_BLOCK_MS passes", async () => {
		const e = await register("acc");
		for (let i = 0; i < 3; i++)
			expect(await login(e, "wrong password!", `198.51.100.${i + 1}`)).toMatchObject({
				type: "USERS_INVALID_CREDENTIALS",
				code: 401
			});
		const blocked = await login(e, PASSWORD, "198.51.100.99");
		expect(blocked).toMatchObject({
			type: "AUTH_LOGIN_THROTTLED",
			code: 429,
			retryable: false
		});
		const retryAfter = (blocked as { data: { retryAfter: number } }).data.retryAfter;
		expect(retryAfter).toBeGreaterThanOrEqual(1);
		expect(retryAfter).toBeLessThanOrEqual(2);
		await delay(2_100);
		await expect(login(e, PASSWORD)).resolves.toMatchObject({ user: { email: e } });
	});

	it("forgets an account's failures on a successful login", async () => {
		const e = await register("reset");
		for (let round = 0; round < 3; round++) {
			for (let i = 0; i < 2; i++)
				expect(await login(e, "wrong password!")).toMatchObject({
					type: "USERS_INVALID_CREDENTIALS"
				});
			expect(await login(e, PASSWORD)).toMatchObject({ user: { email: e } });
		}
	});

	it("throttles an unknown e-mail exactly like a registered one (no account enumeration)", async () => {
		const known = await register("known");
		const unknown = email("unknown");
		const answers = async (e: string): Promise<unknown[]> => {
			const out: unknown[] = [];
			for (let i = 0; i < 4; i++) {
				const err = (await login(e, "wrong password!")) as {
					type: string;
					code: number;
					message: string;
					data?: unknown;
				};
				out.push({ type: err.type, code: err.code, message: err.message, data: err.data });
			}
			return out;
		};
		const a = await answers(known);
		const b = await answers(unknown);
		expect(a).toEqual(b);
		expect(a.map(x => (x as { code: number }).code)).toEqual([401, 401, 401, 429]);
	});

	it("blocks a client address after LOGIN_MAX_FAILURES_PER_IP failures on any accounts; other addresses go on", async () => {
		const victim = await register("victim");
		const ip = "203.0.113.7";
		for (let i = 0; i < 5; i++)
			expect(await login(email(`spray${i}`), "wrong password!", ip)).toMatchObject({
				type: "USERS_INVALID_CREDENTIALS"
			});
		expect(await login(victim, PASSWORD, ip)).toMatchObject({
			type: "AUTH_LOGIN_THROTTLED",
			code: 429
		});
		expect(await login(victim, PASSWORD, "203.0.113.8")).toMatchObject({
			user: { email: victim }
		});
		// A success elsewhere does not reset the address's count.
		expect(await login(victim, PASSWORD, ip)).toMatchObject({ type: "AUTH_LOGIN_THROTTLED" });
	});
});

describe("LoginThrottle in Redis (CACHER set)", () => {
	let redis: RedisServer;
	const throttles: LoginThrottle[] = [];
	const make = (prefix: string): LoginThrottle => {
		const th = new LoginThrottle({
			maxFailuresPerAccount: 3,
			maxFailuresPerIp: 100,
			blockMs: 60_000,
			windowMs: 60_000,
			redisUrl: redis.url,
			keyPrefix: prefix
		});
		throttles.push(th);
		return th;
	};
	beforeAll(async () => {
		redis = await startRedis();
	});
	afterAll(async () => {
		for (const th of throttles) await th.close();
		await redis?.stop();
	});

	const ready = async (th: LoginThrottle): Promise<void> => {
		// The connection is made in the background; until it is ready the memory insurance counts.
		const client = (th as unknown as { redis: { status: string } }).redis;
		for (let i = 0; i < 100 && client.status !== "ready"; i++) await delay(20);
		expect(client.status).toBe("ready");
	};

	it("shares the counts between two users nodes, keyed by a hash of the e-mail", async () => {
		const a = make("t1");
		const b = make("t1");
		await Promise.all([ready(a), ready(b)]);
		const e = email("shared");
		await a.failed(e, "192.0.2.1");
		await b.failed(e, "192.0.2.2");
		expect(await b.check(e)).toBeNull();
		await a.failed(e, "192.0.2.3");
		// The third failure, counted on node a, blocks the account on node b too.
		const block = await b.check(e, "192.0.2.4");
		expect(block).toMatchObject({ by: "account" });
		expect(block!.retryAfterMs).toBeGreaterThan(55_000);
		const { Redis } = await import("ioredis");
		const probe = new Redis(redis.url);
		const keys = await probe.keys("t1:*");
		await probe.quit();
		expect(keys).toEqual(expect.arrayContaining([`t1:account:${accountKey(e)}`]));
		expect(keys.join(" ")).not.toContain("@");
	});

	it("keeps counting in memory while Redis is down (the insurance limiter)", async () => {
		// A port nothing listens on: every Redis command fails at once.
		const { freePort } = await import("../../lib/local-servers");
		const th = new LoginThrottle({
			maxFailuresPerAccount: 3,
			maxFailuresPerIp: 100,
			blockMs: 60_000,
			windowMs: 60_000,
			redisUrl: `redis://127.0.0.1:${await freePort()}`
		});
		throttles.push(th);
		const e = email("down");
		for (let i = 0; i < 2; i++) await th.failed(e);
		expect(await th.check(e)).toBeNull();
		await th.failed(e);
		expect(await th.check(e)).toMatchObject({ by: "account" });
		expect(await th.check(email("other"))).toBeNull();
	});
});
