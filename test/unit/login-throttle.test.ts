import crypto from "node:crypto";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Redis } from "ioredis";
import type { ServiceBroker } from "moleculer";
import { resetConfig } from "../../platform/config";
import { LoginThrottle, accountKey } from "../../services/users/login-throttle";
import { startRedis, type RedisServer } from "../support/redis";
import { startTestBroker, type TestBroker } from "../support/broker";

const delay = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));
const email = (tag: string): string =>
	`${tag}-${crypto.randomBytes(4).toString("hex")}@example.com`;

describe("users.login throttling (services/users/login-throttle.ts, in memory)", () => {
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
		const probe = new Redis(redis.url);
		const keys = await probe.keys("t1:*");
		await probe.quit();
		expect(keys).toEqual(expect.arrayContaining([`t1:account:${accountKey(e)}`]));
		expect(keys.join(" ")).not.toContain("@");
	});

	it("shares successful logins between two users nodes", async () => {
		const opts = {
			maxFailuresPerAccount: 3,
			maxFailuresPerIp: 100,
			blockMs: 60_000,
			windowMs: 60_000,
			maxLoginsPerAccount: 2,
			maxLoginsPerIp: 100,
			rateWindowMs: 60_000,
			redisUrl: redis.url,
			keyPrefix: "t2"
		};
		const a = new LoginThrottle(opts);
		const b = new LoginThrottle(opts);
		throttles.push(a, b);
		await Promise.all([ready(a), ready(b)]);
		const e = email("ok-shared");
		await a.succeeded(e, "192.0.2.21");
		expect(await b.check(e, "192.0.2.22")).toBeNull();
		await b.succeeded(e, "192.0.2.22");
		// Two successes, one on each node: the account is at its maximum on both.
		for (const th of [a, b]) {
			const block = await th.check(e, "192.0.2.23");
			expect(block).toMatchObject({ by: "account", reason: "logins" });
			expect(block!.retryAfterMs).toBeGreaterThan(55_000);
		}
		const probe = new Redis(redis.url);
		try {
			const keys = await probe.keys("t2:*");
			expect(keys).toEqual(expect.arrayContaining([`t2:logins-account:${accountKey(e)}`]));
			expect(keys.join(" ")).not.toContain("@");
		} finally {
			probe.disconnect();
		}
	});

	it("keeps counting in memory while Redis is down (the insurance limiter)", async () => {
		// A port nothing listens on: every Redis command fails at once.
		const { freePort } = await import("../../tools/local-servers");
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

/**
 * Issue 16 item 9: the cost of registration and login. Over HTTP through the gateway, so the
 * answers carry the `Retry-After` a client sees; the gateway believes `X-Forwarded-For` from
 * 127.0.0.1 (TRUSTED_PROXIES), so each test speaks from addresses of its own.
 */
describe("sign-ups of a registered e-mail and successful logins are counted too (over HTTP)", () => {
	const env = {
		TRUSTED_PROXIES: "127.0.0.1",
		LOGIN_MAX_FAILURES_PER_ACCOUNT: "3",
		LOGIN_MAX_FAILURES_PER_IP: "5",
		LOGIN_BLOCK_MS: "60000",
		LOGIN_MAX_PER_ACCOUNT: "3",
		LOGIN_MAX_PER_IP: "6",
		LOGIN_RATE_WINDOW_MS: "60000"
	};
	const PASSWORD = "correct horse battery";
	let t: TestBroker;
	let base: string;

	beforeAll(async () => {
		t = await startTestBroker(["api", "users"], { env });
		const api = t.broker.getLocalService("api") as unknown as { server: Server };
		base = `http://127.0.0.1:${(api.server.address() as AddressInfo).port}`;
	});
	afterAll(async () => {
		await t?.stop();
		for (const k of Object.keys(env)) delete process.env[k];
		resetConfig();
	});

	interface Answer {
		status: number;
		type?: string;
		retryAfter: number | null;
		body: { data?: { retryAfter?: number } };
	}
	const post = async (url: string, body: object, from: string): Promise<Answer> => {
		const res = await fetch(base + url, {
			method: "POST",
			headers: { "Content-Type": "application/json", "X-Forwarded-For": from },
			body: JSON.stringify(body)
		});
		const json = (await res.json()) as Answer["body"] & { type?: string };
		const ra = res.headers.get("retry-after");
		return {
			status: res.status,
			type: json.type,
			retryAfter: ra === null ? null : Number(ra),
			body: json
		};
	};
	const register = (e: string, from: string): Promise<Answer> =>
		post("/api/users/register", { email: e, password: PASSWORD, name: "N" }, from);
	const login = (e: string, from: string): Promise<Answer> =>
		post("/api/users/login", { email: e, password: PASSWORD }, from);
	const expectThrottled = (a: Answer, maxSeconds: number): void => {
		expect([a.status, a.type]).toEqual([429, "AUTH_LOGIN_THROTTLED"]);
		expect(a.retryAfter).toBeGreaterThanOrEqual(1);
		expect(a.retryAfter).toBeLessThanOrEqual(maxSeconds);
		expect(a.body.data?.retryAfter).toBe(a.retryAfter);
	};

	it("refuses the (N+1)th sign-up of a registered e-mail with 429 and Retry-After; other e-mails and addresses go on", async () => {
		const e = email("taken");
		expect((await register(e, "198.18.0.1")).status).toBe(201);
		// LOGIN_MAX_FAILURES_PER_ACCOUNT = 3 sign-ups of the taken e-mail, each from its own
		// address: the e-mail's count, not an address's, stops the fourth.
		const seen: number[] = [];
		for (let i = 0; i < 3; i++) seen.push((await register(e, `198.18.1.${i + 1}`)).status);
		expect(seen).toEqual([409, 409, 409]);
		expectThrottled(await register(e, "198.18.1.9"), 60);
		// Counted like failed logins: the e-mail's logins are blocked as well, right password or not.
		expectThrottled(await login(e, "198.18.1.10"), 60);
		// Another e-mail from another address is unaffected.
		expect((await register(email("fresh"), "198.18.1.11")).status).toBe(201);
	});

	it("counts sign-ups of registered e-mails against the client address (LOGIN_MAX_FAILURES_PER_IP)", async () => {
		const taken: string[] = [];
		for (let i = 0; i < 5; i++) {
			const e = email(`enum${i}`);
			expect((await register(e, `198.18.2.${i + 1}`)).status).toBe(201);
			taken.push(e);
		}
		// One address probing which e-mails are registered: five 409s, then 429 whatever it asks.
		const from = "198.18.2.100";
		const seen: number[] = [];
		for (const e of taken) seen.push((await register(e, from)).status);
		expect(seen).toEqual([409, 409, 409, 409, 409]);
		expectThrottled(await register(email("new"), from), 60);
		expectThrottled(await login(taken[0]!, from), 60);
		// Another address registers and logs in as usual.
		const other = email("other");
		expect((await register(other, "198.18.2.101")).status).toBe(201);
		expect((await login(taken[0]!, "198.18.2.102")).status).toBe(200);
	});

	it("refuses a burst of successful logins of one account past LOGIN_MAX_PER_ACCOUNT with 429 and Retry-After", async () => {
		const e = email("burst");
		expect((await register(e, "198.18.3.1")).status).toBe(201);
		const seen: number[] = [];
		for (let i = 0; i < 3; i++) seen.push((await login(e, `198.18.3.${i + 10}`)).status);
		expect(seen).toEqual([200, 200, 200]);
		expectThrottled(await login(e, "198.18.3.20"), 60);
		// Another account from another address is unaffected.
		const other = email("calm");
		expect((await register(other, "198.18.3.2")).status).toBe(201);
		expect((await login(other, "198.18.3.21")).status).toBe(200);
	});

	it("refuses successful logins from one address past LOGIN_MAX_PER_IP, whichever accounts; other addresses go on", async () => {
		const accounts: string[] = [];
		for (let i = 0; i < 7; i++) {
			const e = email(`office${i}`);
			expect((await register(e, `198.18.4.${i + 1}`)).status).toBe(201);
			accounts.push(e);
		}
		const from = "198.18.4.100";
		const seen: number[] = [];
		for (const e of accounts.slice(0, 6)) seen.push((await login(e, from)).status);
		expect(seen).toEqual([200, 200, 200, 200, 200, 200]);
		expectThrottled(await login(accounts[6]!, from), 60);
		expect((await login(accounts[6]!, "198.18.4.101")).status).toBe(200);
	});
});

describe("LoginThrottle: successful logins per window (in memory)", () => {
	it("refuses the account and the address past their maxima until the window ends", async () => {
		const th = new LoginThrottle({
			maxFailuresPerAccount: 10,
			maxFailuresPerIp: 100,
			blockMs: 60_000,
			windowMs: 60_000,
			maxLoginsPerAccount: 2,
			maxLoginsPerIp: 3,
			rateWindowMs: 1_000
		});
		try {
			const a = email("rate-a");
			await th.succeeded(a, "192.0.2.50");
			expect(await th.check(a, "192.0.2.50")).toBeNull();
			await th.succeeded(a, "192.0.2.51");
			const block = await th.check(a, "192.0.2.52");
			expect(block).toMatchObject({ by: "account", reason: "logins" });
			expect(block!.retryAfterMs).toBeGreaterThan(0);
			expect(block!.retryAfterMs).toBeLessThanOrEqual(1_000);
			// Successes are not failures: a sign-up's check does not see them.
			expect(await th.checkFailures(a, "192.0.2.52")).toBeNull();
			// The address: three successes of three accounts.
			await th.succeeded(email("rate-b"), "192.0.2.60");
			await th.succeeded(email("rate-c"), "192.0.2.60");
			await th.succeeded(email("rate-d"), "192.0.2.60");
			expect(await th.check(email("rate-e"), "192.0.2.60")).toMatchObject({
				by: "ip",
				reason: "logins"
			});
			expect(await th.check(email("rate-e"), "192.0.2.61")).toBeNull();
			await delay(1_100);
			expect(await th.check(a, "192.0.2.60")).toBeNull();
		} finally {
			await th.close();
		}
	});
});
