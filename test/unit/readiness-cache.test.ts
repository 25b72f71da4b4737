/**
 * `cachedFor` (platform/node-health.ts), what keeps `/ready` to one computation a second per node:
 * concurrent callers share the computation in flight, callers within the TTL after it settled
 * get its outcome, and the first call after the TTL starts a new one. The flood against the real
 * shop is test/e2e/ready-flood.e2e.test.ts.
 */
import { cachedFor } from "../../platform/node-health";

describe("cachedFor", () => {
	it("shares one computation between concurrent callers and reuses it for the TTL", async () => {
		let now = 0;
		let runs = 0;
		let finish!: (v: number) => void;
		const get = cachedFor(
			1_000,
			() => {
				runs++;
				return new Promise<number>(r => (finish = r));
			},
			() => now
		);
		const concurrent = Array.from({ length: 2_000 }, () => get());
		expect(runs).toBe(1);
		now = 5_000; // a slow computation: still in flight, still shared
		expect(get()).toBe(concurrent[0]);
		finish(1);
		expect(new Set(await Promise.all(concurrent))).toEqual(new Set([1]));
		expect(runs).toBe(1);

		now = 5_999; // within the TTL of its end
		expect(await get()).toBe(1);
		expect(runs).toBe(1);
		now = 6_000; // the TTL is over: computed again
		const next = get();
		expect(runs).toBe(2);
		finish(2);
		expect(await next).toBe(2);
	});

	it("reuses a failure for the TTL too, then tries again", async () => {
		let now = 0;
		let runs = 0;
		const get = cachedFor(
			1_000,
			async () => {
				runs++;
				if (runs === 1) throw new Error("down");
				return "up";
			},
			() => now
		);
		await expect(get()).rejects.toThrow("down");
		await expect(get()).rejects.toThrow("down");
		expect(runs).toBe(1);
		now = 1_000;
		await expect(get()).resolves.toBe("up");
		expect(runs).toBe(2);
	});
});
