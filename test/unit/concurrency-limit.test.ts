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

	it("updates once per window: its time up (2 × the previous window's least latency in [100, 1000] ms) and windowSize samples in it", () => {
		const l = new AdaptiveConcurrencyLimit({
			targetLatencyMs: 100,
			minLimit: 1,
			maxLimit: 400
		});
		// The first window opens at the first sample, its time up at once: it closes at its
		// 10th sample (t = 9), 20 → 20.8; the next one's time is up at 9 + 2 × 50 = 109.
		for (let t = 0; t < 9; t++) l.sample(50, 20, t);
		expect([l.limit, l.windowsClosed]).toEqual([20, 0]);
		l.sample(50, 20, 9);
		expect([l.limit, l.windowsClosed]).toEqual([20, 1]);
		for (let t = 10; t <= 109; t += 1) l.sample(50, 20, t);
		expect(l.windowsClosed).toBe(1); // 100 samples, but the window's time is not up
		l.sample(50, 20, 110); // up: 20.8 → 21.6, next window until 110 + 100
		expect([l.limit, l.windowsClosed]).toEqual([21, 2]);
		// Time up at 210 with 2 samples: it stays open (WindowedLimit would drop it) until
		// its 10th sample, and counts them all.
		l.sample(50, 20, 150);
		l.sample(50, 20, 211);
		expect(l.windowsClosed).toBe(2);
		for (let t = 212; t < 219; t++) l.sample(50, 20, t);
		expect(l.windowsClosed).toBe(2); // 9 samples
		l.sample(50, 20, 219); // the 10th: 21.6 → 22.4
		expect([l.limit, l.windowsClosed]).toEqual([22, 3]);
		// A slow window is longer: 2 × 700 ms clamped to 1000.
		const s = new AdaptiveConcurrencyLimit({
			targetLatencyMs: 100,
			minLimit: 1,
			maxLimit: 400
		});
		for (let t = 0; t < 10; t++) s.sample(700, 20, t); // the first, at its 10th sample
		expect(s.limit).toBe(18); // gradient 0.5: 0.8 × 20 + 0.2 × (20 × 0.5 + 4) = 18.8
		for (let t = 10; t <= 1009; t += 50) s.sample(700, 20, t); // 20 samples, time up at 1009
		expect(s.windowsClosed).toBe(1);
		s.sample(700, 20, 1010);
		expect([s.limit, s.windowsClosed]).toEqual([17, 2]); // 0.8 × 18.8 + 0.2 × (9.4 + 4) = 17.72
	});

	it("counts a window short of windowSize samples once it has been open maxWindowMs, never drops it", () => {
		// Slow work on a loaded machine: 1.5 s each, 4 completing per second (under windowSize
		// per maxWindowMs). WindowedLimit drops every such window and its limit never moves; here
		// each window waits up to 1000 ms for its samples, then counts the ones it has.
		const l = new AdaptiveConcurrencyLimit({
			targetLatencyMs: 400,
			minLimit: 1,
			maxLimit: 400
		});
		const limits: number[] = [];
		for (let t = 0; t <= 10_000; t += 250) {
			l.sample(1500, 20, t);
			if (t % 1000 === 0) limits.push(l.limit);
		}
		// Opened at 0; at 1000 it has been open 1000 ms with 5 samples: 20 → 18.8 (gradient 0.5).
		// Each next one's time is up 2 × 1500 ms clamped to 1000 after it opened; it closes at
		// the first sample after that (1250 ms, 5 samples), 10 % less each time (L → 0.9 L + 0.8):
		// at 1000, 2250, 3500, ..., 9750.
		expect(l.windowsClosed).toBe(8);
		expect(limits).toEqual([20, 18, 18, 17, 16, 15, 15, 15, 14, 13, 13]);
		// While the time is up but the window is short of samples and under maxWindowMs, it
		// waits: a fast node at a trickle (3 samples in 800 ms) does not update.
		const f = new AdaptiveConcurrencyLimit({
			targetLatencyMs: 400,
			minLimit: 1,
			maxLimit: 400
		});
		for (const t of [0, 400, 800]) f.sample(1500, 20, t);
		expect(f.windowsClosed).toBe(0);
		f.sample(1500, 20, 1000);
		expect([f.windowsClosed, f.limit]).toEqual([1, 18]);
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
			l.sample(1, 1, 1000); // the first window: open 1000 ms, 2 samples, app-limited
			expect(l.windowsClosed).toBe(1);
			for (let i = 0; i < 9; i++) l.sample(60, 100, 1001 + i);
			l.sample(400, 100, 1010);
			l.sample(60, 100, 5000); // time up (1000 + 100), 11 samples
			expect(l.windowsClosed).toBe(2);
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
		expect(l.windowsClosed).toBe(0);
		for (let i = 0; i < 10; i++) l.start(`a${i}`, 10, 2);
		// 400 ms each: the 10th end closes the first window (its time is up at once).
		for (let i = 0; i < 9; i++) l.end(`a${i}`, 2 + 400);
		expect(l.windowsClosed).toBe(0);
		l.end("a9", 402);
		expect([l.windowsClosed, l.limit]).toEqual([1, 9]); // gradient 0.5: 0.8 × 10 + 0.2 × (5 + 4) = 9.8
		l.end("a9", 403); // ended already: no sample
		expect(l.pending).toBe(0);
		// A start never ended is dropped oldest first past 2 × maxLimit + 64 = 84 of them.
		for (let i = 0; i < 200; i++) l.start(`lost${i}`, 1, 2000);
		expect(l.pending).toBe(84);
		l.end("lost0", 2001); // dropped: no sample
		expect(l.pending).toBe(84);
		l.end("lost199", 2001); // a sample (1 ms), alone in a window open since 402
		expect(l.pending).toBe(83);
		expect(l.windowsClosed).toBe(2); // open 1599 ms ≥ maxWindowMs; app-limited (1 < 9.8 / 2)
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
