/**
 * Login throttling across nodes (issue #6, part 3): two users nodes behind the gateway, with
 * `CACHER` set, count failed logins in that Redis (services/users/login-throttle.ts), so the gateway's
 * round-robin between them does not halve the limit: the failures of one account spread over
 * both nodes block it on both. Issue 16 item 9: sign-ups of a registered e-mail count like failed
 * logins, and successful logins are counted too (`LOGIN_MAX_PER_ACCOUNT`), in the same Redis.
 */
import { Redis } from "ioredis";
import { api } from "../support/shop-process";
import { startCluster, withOutputOnFailure, type TestCluster } from "../support/cluster";
import { startRedis, type RedisServer } from "../support/redis";

describe("login throttling shared by two users nodes through Redis", () => {
	let redis: RedisServer;
	let cluster: TestCluster;
	const PASSWORD = "shared throttle pw 5d1e";

	beforeAll(async () => {
		redis = await startRedis();
		cluster = await startCluster({
			replicas: { users: 2 },
			env: {
				CACHER: redis.url,
				LOGIN_MAX_FAILURES_PER_ACCOUNT: "4",
				LOGIN_BLOCK_MS: "30000",
				LOGIN_MAX_PER_ACCOUNT: "4",
				LOGIN_RATE_WINDOW_MS: "60000"
			}
		});
	}, 180_000);
	afterAll(async () => {
		await cluster?.stop();
		await redis?.stop();
	}, 60_000);

	it("blocks the account after 4 failures spread over both nodes, on both", async () => {
		await withOutputOnFailure(cluster, async () => {
			const base = cluster.url!;
			const email = "shared-throttle@example.com";
			expect(
				(
					await api(base, "POST", "/api/users/register", {
						body: { email, password: PASSWORD, name: "Shared" }
					})
				).status
			).toBe(201);
			const seen: number[] = [];
			for (let i = 0; i < 4; i++)
				seen.push(
					(
						await api(base, "POST", "/api/users/login", {
							body: { email, password: "wrong wrong wrong" }
						})
					).status
				);
			expect(seen).toEqual([401, 401, 401, 401]);
			// The gateway balances users.login round robin over both users nodes: neither alone
			// saw 4 failures, so only shared counts block the account now.
			const usersNodes = cluster.broker.registry
				.getServiceList({ onlyAvailable: true })
				.filter(s => s.name === "users")
				.map(s => s.nodeID)
				.sort();
			expect(usersNodes).toEqual(["users-1", "users-2"]);
			for (let i = 0; i < 2; i++) {
				const blocked = await api(base, "POST", "/api/users/login", {
					body: { email, password: PASSWORD }
				});
				expect([blocked.status, blocked.body.type]).toEqual([429, "AUTH_LOGIN_THROTTLED"]);
				expect(Number(blocked.headers.get("retry-after"))).toBeGreaterThan(20);
			}
			const probe = new Redis(redis.url);
			try {
				const keys = await probe.keys(`shop-login:${cluster.prefix}*`);
				expect(keys.some(k => k.includes(":account:"))).toBe(true);
				expect(keys.join(" ")).not.toContain(email);
			} finally {
				probe.disconnect();
			}
		});
	}, 60_000);

	it("counts sign-ups of a registered e-mail and successful logins over both nodes", async () => {
		await withOutputOnFailure(cluster, async () => {
			const base = cluster.url!;
			const statuses = async (
				n: number,
				path: string,
				body: Record<string, string>
			): Promise<number[]> => {
				const out: number[] = [];
				for (let i = 0; i < n; i++)
					out.push((await api(base, "POST", path, { body })).status);
				return out;
			};
			const expectThrottled = async (path: string, body: object): Promise<void> => {
				const r = await api(base, "POST", path, { body });
				expect([r.status, r.body.type]).toEqual([429, "AUTH_LOGIN_THROTTLED"]);
				expect(Number(r.headers.get("retry-after"))).toBeGreaterThan(20);
			};

			// Four sign-ups of a registered e-mail, balanced over both nodes, then a fifth: 429.
			const taken = { email: "taken-twice@example.com", password: PASSWORD, name: "Taken" };
			expect(await statuses(1, "/api/users/register", taken)).toEqual([201]);
			expect(await statuses(4, "/api/users/register", taken)).toEqual([409, 409, 409, 409]);
			await expectThrottled("/api/users/register", taken);

			// Four successful logins of one account over both nodes, then a fifth: 429.
			const busy = { email: "busy-login@example.com", password: PASSWORD, name: "Busy" };
			expect(await statuses(1, "/api/users/register", busy)).toEqual([201]);
			const creds = { email: busy.email, password: PASSWORD };
			expect(await statuses(4, "/api/users/login", creds)).toEqual([200, 200, 200, 200]);
			await expectThrottled("/api/users/login", creds);
		});
	}, 60_000);
});
