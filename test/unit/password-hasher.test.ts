import os from "node:os";
import argon2 from "argon2";
import { ConfigError, loadConfig } from "../../platform/config";
import { ERRORS } from "../../platform/errors";
import { PASSWORD_HASH_PARAMS, PasswordHasher } from "../../services/users/password-hasher";

const busy = { type: "USERS_BUSY", code: ERRORS.USERS_BUSY.code, retryable: true };

describe("PasswordHasher (services/users/password-hasher.ts)", () => {
	it("hashes with Argon2id m = 19456 KiB, t = 2, p = 1, and verifies what it hashed", async () => {
		const hasher = new PasswordHasher({ concurrency: 2, maxQueue: 10, maxWaitMs: 5_000 });
		const hash = await hasher.hash("correct horse battery");
		expect(hash.startsWith("$argon2id$v=19$")).toBe(true);
		expect(hash).toMatch(/[$,]m=19456[,$]/);
		expect(hash).toMatch(/[$,]t=2[,$]/);
		expect(hash).toMatch(/[$,]p=1[,$]/);
		await expect(hasher.verify(hash, "correct horse battery")).resolves.toBe(true);
		await expect(hasher.verify(hash, "wrong horse battery")).resolves.toBe(false);
		expect(hasher.needsRehash(hash)).toBe(false);
	});

	it("verifies hashes of the former parameters and says they need re-hashing", async () => {
		const hasher = new PasswordHasher({ concurrency: 1, maxQueue: 10, maxWaitMs: 5_000 });
		const old = await argon2.hash("legacy password", { type: argon2.argon2id });
		await expect(hasher.verify(old, "legacy password")).resolves.toBe(true);
		expect(hasher.needsRehash(old)).toBe(true);
		const argon2i = await argon2.hash("legacy password", {
			...PASSWORD_HASH_PARAMS,
			type: argon2.argon2i
		});
		expect(hasher.needsRehash(argon2i)).toBe(true);
	});

	it("answers false, not an error, for a malformed hash", async () => {
		const hasher = new PasswordHasher({ concurrency: 1, maxQueue: 10, maxWaitMs: 5_000 });
		await expect(hasher.verify("not a hash", "whatever")).resolves.toBe(false);
		expect(hasher.needsRehash("not a hash")).toBe(true);
		expect(hasher.load).toEqual({ running: 0, queued: 0 });
	});

	it("runs at most `concurrency` at once and the rest in arrival order", async () => {
		const hasher = new PasswordHasher({ concurrency: 2, maxQueue: 10, maxWaitMs: 10_000 });
		let peak = 0;
		const finished: number[] = [];
		const all = Array.from({ length: 6 }, (_, i) =>
			hasher.hash(`password ${i}`).then(() => {
				peak = Math.max(peak, hasher.load.running);
				finished.push(i);
			})
		);
		expect(hasher.load).toEqual({ running: 2, queued: 4 });
		await Promise.all(all);
		expect(peak).toBeLessThanOrEqual(2);
		// 0 and 1 start first, so one of them finishes first.
		expect([0, 1]).toContain(finished[0]);
		expect(hasher.load).toEqual({ running: 0, queued: 0 });

		// One at a time: strictly in arrival order.
		const single = new PasswordHasher({ concurrency: 1, maxQueue: 10, maxWaitMs: 10_000 });
		const order: number[] = [];
		await Promise.all(
			Array.from({ length: 4 }, (_, i) =>
				single.hash(`password ${i}`).then(() => order.push(i))
			)
		);
		expect(order).toEqual([0, 1, 2, 3]);
	});

	it("refuses at once with USERS_BUSY when the queue is full, and serves the others", async () => {
		const hasher = new PasswordHasher({ concurrency: 1, maxQueue: 2, maxWaitMs: 10_000 });
		const results = await Promise.allSettled(
			Array.from({ length: 5 }, (_, i) => hasher.hash(`password ${i}`))
		);
		expect(results.map(r => r.status)).toEqual([
			"fulfilled",
			"fulfilled",
			"fulfilled",
			"rejected",
			"rejected"
		]);
		for (const r of results.slice(3))
			expect((r as PromiseRejectedResult).reason).toMatchObject(busy);
		expect(hasher.load).toEqual({ running: 0, queued: 0 });
	});

	it("refuses with USERS_BUSY a task that waited maxWaitMs for a slot", async () => {
		// A hash takes 20 ms or more (19 MiB, two passes): the queued ones cannot start in 5 ms.
		const hasher = new PasswordHasher({ concurrency: 1, maxQueue: 100, maxWaitMs: 5 });
		const t0 = Date.now();
		const results = await Promise.allSettled(
			Array.from({ length: 4 }, (_, i) => hasher.hash(`password ${i}`))
		);
		expect(results.map(r => r.status)).toEqual([
			"fulfilled",
			"rejected",
			"rejected",
			"rejected"
		]);
		for (const r of results.slice(1))
			expect((r as PromiseRejectedResult).reason).toMatchObject(busy);
		expect(Date.now() - t0).toBeLessThan(2_000);
		expect(hasher.load).toEqual({ running: 0, queued: 0 });
	});
});

describe("PASSWORD_HASH_* settings (platform/config.ts)", () => {
	const base = { JWT_SECRET: "s".repeat(32) };

	it("defaults to the available CPUs (at most 3), a queue of 200 and a 7 s wait", () => {
		const c = loadConfig(base);
		expect(c.passwordHashConcurrency).toBe(Math.max(1, Math.min(os.availableParallelism(), 3)));
		expect(c.passwordHashMaxQueue).toBe(200);
		expect(c.passwordHashMaxWaitMs).toBe(7_000);
	});

	it("reads them, and refuses a concurrency of 0 or a wait of 0", () => {
		const c = loadConfig({
			...base,
			PASSWORD_HASH_CONCURRENCY: "4",
			PASSWORD_HASH_MAX_QUEUE: "0",
			PASSWORD_HASH_MAX_WAIT_MS: "250"
		});
		expect([
			c.passwordHashConcurrency,
			c.passwordHashMaxQueue,
			c.passwordHashMaxWaitMs
		]).toEqual([4, 0, 250]);
		expect(() => loadConfig({ ...base, PASSWORD_HASH_CONCURRENCY: "0" })).toThrow(ConfigError);
		expect(() => loadConfig({ ...base, PASSWORD_HASH_MAX_WAIT_MS: "0" })).toThrow(ConfigError);
		expect(() => loadConfig({ ...base, PASSWORD_HASH_MAX_QUEUE: "-1" })).toThrow(
			/PASSWORD_HASH_MAX_QUEUE/
		);
	});
});
