/**
 * The shop's Redis cacher (platform/resilient-cacher.ts) on a real redis-server that hangs (SIGSTOP:
 * connections stay open, nothing answers) and then goes away: a cached action keeps answering
 * from its handler, and cache writes and cleans resolve (the middleware does not await its write:
 * a rejection there would be unhandled and end the process). Moleculer's own Redis
 * cacher, with the same ioredis options, fails the very same call: the reason the shop has its own.
 */
import { ServiceBroker, type BrokerOptions, type Context } from "moleculer";
import { RESILIENT_REDIS_CACHER, ResilientRedisCacher } from "../../platform/resilient-cacher";
import { startRedis, type RedisServer } from "../support/redis";

/** The ioredis options moleculer.config.ts gives the cacher (500 ms command timeout). */
const redisOptions = (port: number): Record<string, unknown> => ({
	host: "127.0.0.1",
	port,
	maxRetriesPerRequest: 1,
	commandTimeout: 500
});

describe("ResilientRedisCacher", () => {
	let redis: RedisServer;
	const brokers: ServiceBroker[] = [];
	let handled = 0;

	/** A broker with one cached action `echo.get({ id })` that counts its handler's runs. */
	async function brokerWith(type: string): Promise<ServiceBroker> {
		const broker = new ServiceBroker({
			nodeID: `cacher-${type}-${brokers.length}`,
			logger: false,
			cacher: {
				type,
				options: { prefix: "t-cache", ttl: 60, redis: redisOptions(redis.port) }
			} as unknown as BrokerOptions["cacher"]
		});
		broker.createService({
			name: "echo",
			actions: {
				get: {
					cache: { keys: ["id"] },
					handler(ctx: Context<{ id: string }>) {
						handled++;
						return { id: ctx.params.id, at: handled };
					}
				}
			}
		});
		brokers.push(broker);
		await broker.start();
		// Until its client is ready the cacher's middleware bypasses the cache.
		const cacher = broker.cacher as unknown as { connected: boolean };
		for (let i = 0; i < 100 && !cacher.connected; i++)
			await new Promise(r => setTimeout(r, 20));
		expect(cacher.connected).toBe(true);
		return broker;
	}

	beforeAll(async () => {
		redis = await startRedis();
	});

	afterEach(async () => {
		// A stopped server must run again before the brokers close their connections.
		try {
			process.kill(redis.pid, "SIGCONT");
		} catch {
			/* not running */
		}
		for (const b of brokers.splice(0)) await b.stop().catch(() => undefined);
	});

	afterAll(async () => {
		await redis.stop();
	});

	it("is what the cacher type name resolves to", async () => {
		const broker = await brokerWith(RESILIENT_REDIS_CACHER);
		expect(broker.cacher).toBeInstanceOf(ResilientRedisCacher);
	});

	it("caches while Redis answers", async () => {
		const broker = await brokerWith(RESILIENT_REDIS_CACHER);
		const first = await broker.call("echo.get", { id: "a" });
		await new Promise(r => setTimeout(r, 50)); // the cache write is not awaited by the call
		expect(await broker.call("echo.get", { id: "a" })).toEqual(first);
	});

	it("a hung Redis is a miss: the handler answers, the failed write is swallowed", async () => {
		const broker = await brokerWith(RESILIENT_REDIS_CACHER);
		await broker.call("echo.get", { id: "warm" });
		process.kill(redis.pid, "SIGSTOP");
		const before = handled;
		const t0 = Date.now();
		await expect(broker.call("echo.get", { id: "b" })).resolves.toMatchObject({ id: "b" });
		expect(handled).toBe(before + 1);
		// The read waited for the command timeout (500 ms), not for the request timeout.
		expect(Date.now() - t0).toBeLessThan(5_000);
		const cacher = broker.cacher as ResilientRedisCacher;
		// The middleware does not await its write: it must not reject (an unhandled rejection
		// ends the process).
		await expect(cacher.set("echo.get:x", { id: "x" })).resolves.toBeUndefined();
		expect(cacher.degraded.get).toBeGreaterThanOrEqual(1);
		expect(cacher.degraded.set).toBeGreaterThanOrEqual(1);
	});

	it("a Redis that went away is a miss, and clean() does not fail its caller", async () => {
		const broker = await brokerWith(RESILIENT_REDIS_CACHER);
		await broker.call("echo.get", { id: "warm" });
		process.kill(redis.pid, "SIGKILL");
		try {
			for (let i = 0; i < 5; i++)
				await expect(broker.call("echo.get", { id: `c${i}` })).resolves.toMatchObject({
					id: `c${i}`
				});
			await expect(broker.cacher!.clean("echo.**")).resolves.toBeUndefined();
			await expect(broker.cacher!.set("echo.get:y", { id: "y" })).resolves.toBeUndefined();
		} finally {
			await redis.restart();
		}
		// Back: it caches again.
		await new Promise(r => setTimeout(r, 1_000));
		const again = await broker.call("echo.get", { id: "d" });
		await new Promise(r => setTimeout(r, 50));
		expect(await broker.call("echo.get", { id: "d" })).toEqual(again);
	});

	it("Moleculer's own Redis cacher fails the same call while Redis hangs", async () => {
		const broker = await brokerWith("Redis");
		await broker.call("echo.get", { id: "warm" });
		// Its write of "warm" is not awaited by the call: let it land first, or its timeout
		// would be an unhandled rejection here.
		await new Promise(r => setTimeout(r, 100));
		process.kill(redis.pid, "SIGSTOP");
		await expect(broker.call("echo.get", { id: "e" })).rejects.toThrow(/timed out/i);
	});
});
