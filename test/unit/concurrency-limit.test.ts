/**
 * The adaptive concurrency limit (platform/concurrency-limit.ts, Netflix's Gradient2Limit behind
 * WindowedLimit, steered to a target latency): its update rule figure by figure, its bounds, its
 * windows, and, on a simulated server with a fixed capacity, that at twice the capacity it
 * settles where Little's law says (in flight ≈ throughput × target + queueSize) with latency
 * near the target. Deterministic: the clock is passed in, nothing waits.
 */
import { AdaptiveConcurrencyLimit } from "../../platform/concurrency-limit";

/** Feeds one full window of `n` samples of `latency` ms with `inFlight`, ending after `now`. */
function window(
	l: AdaptiveConcurrencyLimit,
	now: number,
	latency: number,
	inFlight: number,
	n = 10
): number {
	for (let i = 0; i < n; i++) l.sample(latency, inFlight, now + i);
	// The sample that closes the window (its time is up: 2 × min latency, clamped to 100..1000).
	l.sample(latency, inFlight, now + 2000);
	return now + 2001;
}

describe("AdaptiveConcurrencyLimit", () => {
	it("starts at Gradient2's initial limit, clamped to [minLimit, maxLimit]", () => {
		expect(
			new AdaptiveConcurrencyLimit({ targetLatencyMs: 100, minLimit: 5, maxLimit: 400 }).limit
		).toBe(20);
		expect(
			new AdaptiveConcurrencyLimit({ targetLatencyMs: 100, minLimit: 5, maxLimit: 3 }).limit
		).toBe(5);
		expect(
			new AdaptiveConcurrencyLimit({ targetLatencyMs: 100, minLimit: 1, maxLimit: 3 }).limit
		).toBe(3);
		const l = new AdaptiveConcurrencyLimit({
			targetLatencyMs: 100,
			minLimit: 1,
			maxLimit: 400,
			initialLimit: 7
		});
		expect([l.admits(6), l.admits(7)]).toEqual([true, false]);
		expect(
			() => new AdaptiveConcurrencyLimit({ targetLatencyMs: 0, minLimit: 1, maxLimit: 2 })
		).toThrow(RangeError);
	});

	it("grows by queueSize × smoothing per window while latency is under the target", () => {
		const l = new AdaptiveConcurrencyLimit({
			targetLatencyMs: 100,
			minLimit: 1,
			maxLimit: 400
		});
		let now = window(l, 0, 1, 1, 1); // the very first sample closes an empty window
		const limits: number[] = [];
		for (let i = 0; i < 5; i++) {
			now = window(l, now, 50, 20);
			limits.push(l.limit);
		}
		// 20 → 20 + 0.2 × 4 = 20.8 → 21.6 → 22.4 → 23.2 → 24.0
		expect(limits).toEqual([20, 21, 22, 23, 24]);
	});

	it("does not grow while app-limited (the window's most in flight under half the limit)", () => {
		const l = new AdaptiveConcurrencyLimit({
			targetLatencyMs: 100,
			minLimit: 1,
			maxLimit: 400
		});
		let now = 0;
		for (let i = 0; i < 20; i++) now = window(l, now, 10, 9);
		expect(l.limit).toBe(20);
		// Nor shrink: the slow window says nothing about a node that is not full.
		for (let i = 0; i < 20; i++) now = window(l, now, 10_000, 9);
		expect(l.limit).toBe(20);
	});

	it("shrinks by the gradient target / latency, at most halving per estimate, to the floor", () => {
		const l = new AdaptiveConcurrencyLimit({
			targetLatencyMs: 100,
			minLimit: 3,
			maxLimit: 400,
			initialLimit: 100
		});
		let now = window(l, 0, 1, 1, 1);
		// Latency 200 ms = 2 × target: gradient 0.5; 100 → 0.8 × 100 + 0.2 × (50 + 4) = 90.8.
		now = window(l, now, 200, 100);
		expect(l.limit).toBe(90);
		// 125 ms: gradient 0.8; 90.8 → 0.8 × 90.8 + 0.2 × (72.64 + 4) = 87.968.
		now = window(l, now, 125, 100);
		expect(l.limit).toBe(87);
		// 10 s: still at most halved (0.5), so an outlier window cannot empty the node.
		now = window(l, now, 10_000, 100);
		expect(l.limit).toBe(79); // 0.8 × 87.968 + 0.2 × (43.984 + 4) = 79.97
		for (let i = 0; i < 200; i++) now = window(l, now, 10_000, 100);
		// The fixed point of a gradient pinned at 0.5: limit = queueSize / 0.5 = 8, above the floor.
		expect(l.limit).toBe(8);
		const floored = new AdaptiveConcurrencyLimit({
			targetLatencyMs: 100,
			minLimit: 12,
			maxLimit: 400
		});
		for (let i = 0; i < 200; i++) now = window(floored, now, 10_000, 400);
		expect(floored.limit).toBe(12);
	});

	it("never exceeds maxLimit, the hard ceiling", () => {
		const l = new AdaptiveConcurrencyLimit({ targetLatencyMs: 100, minLimit: 1, maxLimit: 30 });
		let now = 0;
		for (let i = 0; i < 100; i++) now = window(l, now, 1, 30);
		expect(l.limit).toBe(30);
		expect(l.admits(29)).toBe(true);
		expect(l.admits(30)).toBe(false);
	});

	it("updates once per window: ≥ windowSize samples, lasting 2 × its least latency in [100, 1000] ms", () => {
		const l = new AdaptiveConcurrencyLimit({
			targetLatencyMs: 100,
			minLimit: 1,
			maxLimit: 400
		});
		l.sample(50, 20, 0); // closes the first (empty) window; the next ends at 0 + 2 × 50 = 100
		for (let t = 1; t <= 100; t += 1) l.sample(50, 20, t);
		expect(l.limit).toBe(20); // 100 samples, but the window's time is not up
		l.sample(50, 20, 101); // up: 20.8, next window until 101 + 100
		l.sample(50, 20, 150);
		l.sample(50, 20, 202); // up, but 2 samples < windowSize 10: no update
		expect(l.limit).toBe(20);
		for (let t = 203; t < 300; t += 10) l.sample(50, 20, t);
		l.sample(50, 20, 400); // 11 samples: 20.8 → 21.6
		expect(l.limit).toBe(21);
		// A slow window is longer: 2 × 700 ms clamped to 1000.
		const s = new AdaptiveConcurrencyLimit({
			targetLatencyMs: 100,
			minLimit: 1,
			maxLimit: 400
		});
		s.sample(700, 20, 0);
		for (let t = 1; t <= 999; t += 50) s.sample(700, 20, t);
		expect(s.limit).toBe(20);
		s.sample(700, 20, 1001);
		expect(s.limit).toBe(18); // 0.8 × 20 + 0.2 × (20 × 0.5 + 4) = 18.8
	});

	it("tracks a percentile of the window when asked (nearest rank), else the mean", () => {
		const mk = (percentile?: number): AdaptiveConcurrencyLimit =>
			new AdaptiveConcurrencyLimit({
				targetLatencyMs: 100,
				minLimit: 1,
				maxLimit: 400,
				initialLimit: 100,
				percentile
			});
		// Ten samples of 60 ms and one of 400: the mean is 90.9 (under the target: grows), the
		// 90th percentile 60 (grows), the 99th 400 (shrinks).
		const feed = (l: AdaptiveConcurrencyLimit): number => {
			l.sample(1, 1, 0);
			for (let i = 0; i < 9; i++) l.sample(60, 100, 1 + i);
			l.sample(400, 100, 10);
			l.sample(60, 100, 5000);
			return l.limit;
		};
		expect(feed(mk())).toBe(100); // 100 → 0.8 × 100 + 0.2 × (100 + 4) = 100.8
		expect(feed(mk(0.9))).toBe(100); // rank round(11 × 0.9) = 10: 60 ms
		expect(feed(mk(0.99))).toBe(90); // rank 11: 400 ms, gradient 0.5, 100 → 90.8
	});

	it("samples the latency of work from start(id) to end(id); unknown ids are ignored; memory is bounded", () => {
		const l = new AdaptiveConcurrencyLimit({
			targetLatencyMs: 100,
			minLimit: 1,
			maxLimit: 10,
			initialLimit: 10
		});
		l.end("never-started", 5); // ignored
		l.start("w0", 10, 0);
		l.end("w0", 1); // a 1 ms sample closes the first window (too few samples to count)
		for (let i = 0; i < 10; i++) l.start(`a${i}`, 10, 2);
		// 400 ms each; the first closes the window begun at 1 (alone in it), the next 9 and "b"
		// fill one that lasts 2 × 400 ms.
		for (let i = 0; i < 10; i++) l.end(`a${i}`, 2 + 400);
		expect(l.limit).toBe(10);
		l.start("b", 10, 1500);
		l.end("b", 1900);
		expect(l.limit).toBe(9); // gradient 0.5: 0.8 × 10 + 0.2 × (5 + 4) = 9.8
		expect(l.pending).toBe(0);
		// A start never ended is dropped oldest first past 2 × maxLimit + 64 = 84 of them.
		for (let i = 0; i < 200; i++) l.start(`lost${i}`, 1, 2000);
		expect(l.pending).toBe(84);
		l.end("lost0", 2001); // dropped: no sample
		expect(l.pending).toBe(84);
		l.end("lost199", 2001);
		expect(l.pending).toBe(83);
		expect(l.limit).toBe(9);
	});

	it("at 2 × capacity settles at in flight ≈ throughput × target + queueSize (Little's law), latency near the target", () => {
		// A server with capacity C = 100/s and a 20 ms floor: a saga's latency is
		// max(20 ms, in flight / C). Offered 200/s; refused arrivals are dropped at once.
		const C = 100;
		const target = 400;
		const l = new AdaptiveConcurrencyLimit({
			targetLatencyMs: target,
			minLimit: 5,
			maxLimit: 400
		});
		const running: { id: string; end: number }[] = [];
		let id = 0;
		let refused = 0;
		const tail: number[] = [];
		const latencies: number[] = [];
		for (let now = 0; now < 60_000; now += 5) {
			// End what is due.
			for (let i = running.length - 1; i >= 0; i--)
				if (running[i]!.end <= now) {
					l.end(running[i]!.id, now);
					running.splice(i, 1);
				}
			// One arrival every 5 ms = 200/s.
			if (l.admits(running.length)) {
				const latency = Math.max(20, ((running.length + 1) / C) * 1000);
				const w = `s${id++}`;
				running.push({ id: w, end: now + latency });
				l.start(w, running.length, now);
				if (now >= 30_000) latencies.push(latency);
			} else refused++;
			if (now >= 30_000 && now % 1000 === 0) tail.push(l.limit);
		}
		// Little's law: C × target / 1000 + queueSize = 100 × 0.4 + 4 = 44.
		for (const limit of tail) expect(Math.abs(limit - 44)).toBeLessThanOrEqual(3);
		const mean = latencies.reduce((a, b) => a + b, 0) / latencies.length;
		expect(mean).toBeGreaterThan(target * 0.9);
		expect(mean).toBeLessThan(target * 1.15);
		// About half of 2 × capacity is refused.
		expect(refused / (refused + id)).toBeGreaterThan(0.45);
		expect(refused / (refused + id)).toBeLessThan(0.55);
	});
});
