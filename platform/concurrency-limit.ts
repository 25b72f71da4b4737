/**
 * An adaptive concurrency limit (admission control): how much work a node takes on at once, moved
 * by the latency of the work it finishes, so that at overload the work it accepts stays near a
 * target latency and the rest is refused instead of queueing (after at most a short wait for a
 * slot: platform/admission-queue.ts).
 *
 * The algorithm is Netflix concurrency-limits' `Gradient2Limit` behind its `WindowedLimit`
 * (github.com/Netflix/concurrency-limits, concurrency-limits-core/.../limit/Gradient2Limit.java
 * and WindowedLimit.java, commit 78a74b9), with two changes. First, Gradient2 compares the
 * window's latency with a long-term average of itself (times a tolerance); here it is compared
 * with a fixed target latency, because the shop's goal is an absolute one (202 → CONFIRMED
 * within a bound) and a long-term average drifts up with a sustained overload, which then stops
 * shrinking the limit.
 *
 * The window rule. A window opens when the previous one closes (the first one at the first
 * sample); its time is up `2 × the previous window's smallest latency`, clamped to
 * [`minWindowMs`, `maxWindowMs`], after it opened (WindowedLimit; the first one's at once). It
 * closes at its first sample after that which finds it holding `windowSize` samples
 * (WindowedLimit) or, short of them, open for `maxWindowMs` at least; it is then counted with
 * the samples it has. That second clause is the second change: WindowedLimit closes every
 * window whose time is up and DROPS one with fewer than `windowSize` samples: on a node whose
 * work completes at under `windowSize` per `maxWindowMs` (slow work on a loaded machine: the
 * very case the limit is for) every window was dropped and the limit never moved. A window here
 * is never dropped: it waits for its samples up to `maxWindowMs`, then counts the few it got, as
 * Envoy's adaptive-concurrency gradient controller recomputes its limit every
 * `concurrency_update_interval` from the samples of that interval, however few. A window of few
 * samples is noisier, and the update bounds what one can do: the gradient is at least 0.5 and
 * only `smoothing` (0.2) of the estimate is taken, so the limit moves by at most 10 % down or
 * `queueSize × smoothing` up per window. Each closed window:
 *
 *     gradient = max(0.5, min(1, targetLatency / windowLatency))
 *     limit    = limit × (1 − smoothing) + (limit × gradient + queueSize) × smoothing
 *
 * clamped to [`minLimit`, `maxLimit`], and left alone while the window's most work in flight was
 * under half the limit (app-limited: nothing says the node could take more). At a sustained
 * overload this settles where `limit × (1 − gradient) = queueSize`, i.e. windowLatency =
 * target × limit / (limit − queueSize); with Little's law (in flight = throughput × latency)
 * that is limit = throughput × target + queueSize: in flight ≈ throughput × target latency.
 *
 * Deterministic: the caller passes the clock (`now`, ms, any monotonic origin), so the
 * algorithm is tested without timing. Single-threaded (one event loop), so no locks.
 */

/** Settings of an `AdaptiveConcurrencyLimit`; durations in ms. */
export interface ConcurrencyLimitOptions {
	/** The latency the limit steers the windows' latency to (> 0). */
	readonly targetLatencyMs: number;
	/** The floor of the limit (≥ 1). */
	readonly minLimit: number;
	/** The hard ceiling of the limit (raised to `minLimit` if below it). */
	readonly maxLimit: number;
	/** Where the limit starts, clamped to [minLimit, maxLimit]. Default 20 (Gradient2's). */
	readonly initialLimit?: number;
	/** How much of each window's estimate is taken (0 to 1]. Default 0.2 (Gradient2's). */
	readonly smoothing?: number;
	/** How far the estimate may exceed the current limit per window. Default 4 (Gradient2's). */
	readonly queueSize?: number;
	/**
	 * Samples a window waits for once its time is up, unless it has been open `maxWindowMs`.
	 * Default 10 (WindowedLimit's).
	 */
	readonly windowSize?: number;
	/**
	 * Shortest / longest time of a window (its time is 2 × the previous window's smallest
	 * latency, clamped to these), and `maxWindowMs` the longest a window short of `windowSize`
	 * samples waits for them. Defaults 100 / 1000 (WindowedLimit allows 100 at least).
	 */
	readonly minWindowMs?: number;
	readonly maxWindowMs?: number;
	/**
	 * The window's latency: this percentile (0 to 1] of its samples (WindowedLimit's
	 * `PercentileSampleWindow`), or their average when unset (Gradient2's default).
	 */
	readonly percentile?: number;
}

/** One window's samples (WindowedLimit's `SampleWindow`). */
interface SampleWindow {
	/** When it opened (ms): the previous window's close, or the first sample's time. */
	openedAt: number | null;
	latencies: number[];
	minLatency: number;
	maxInFlight: number;
}

const emptyWindow = (openedAt: number | null): SampleWindow => ({
	openedAt,
	latencies: [],
	minLatency: Infinity,
	maxInFlight: 0
});

/**
 * The limit, and the starts of the work it admitted (by id) so that `end(id)` gives a sample.
 * Use: `if (!limit.admits(load)) refuse; ...; limit.start(id, load + 1, now)`, then
 * `limit.end(id, now)` when the work is done. Starts never ended (a lost lease, a stop) are
 * forgotten oldest first past 2 × maxLimit + 64 of them, so memory stays bounded.
 */
export class AdaptiveConcurrencyLimit {
	private estimate: number;
	private window = emptyWindow(null);
	/** When the open window's time is up (the first window's at once). */
	private timeUpAt = -Infinity;
	/** Windows closed and counted so far. */
	private windows = 0;
	private readonly starts = new Map<string, { at: number; inFlight: number }>();
	private readonly o: Required<Omit<ConcurrencyLimitOptions, "percentile">> & {
		percentile?: number;
	};

	constructor(options: ConcurrencyLimitOptions) {
		const minLimit = Math.max(1, Math.floor(options.minLimit));
		const maxLimit = Math.max(minLimit, Math.floor(options.maxLimit));
		this.o = {
			initialLimit: 20,
			smoothing: 0.2,
			queueSize: 4,
			windowSize: 10,
			minWindowMs: 100,
			maxWindowMs: 1000,
			...options,
			minLimit,
			maxLimit
		};
		if (!(this.o.targetLatencyMs > 0)) throw new RangeError("targetLatencyMs must be > 0");
		this.estimate = this.clamp(this.o.initialLimit);
	}

	/** The current limit: work in flight the node admits, an integer in [minLimit, maxLimit]. */
	get limit(): number {
		return Math.floor(this.estimate);
	}

	/** Windows closed so far, each one given to the update (none dropped: the window rule). */
	get windowsClosed(): number {
		return this.windows;
	}

	/** Work started and neither ended nor forgotten yet. */
	get pending(): number {
		return this.starts.size;
	}

	/** Whether one more piece of work may start with `inFlight` already running. */
	admits(inFlight: number): boolean {
		return inFlight < this.limit;
	}

	/** Work `id` started at `now` with `inFlight` running (itself included). */
	start(id: string, inFlight: number, now: number): void {
		this.starts.set(id, { at: now, inFlight });
		if (this.starts.size > 2 * this.o.maxLimit + 64) {
			const oldest = this.starts.keys().next().value;
			if (oldest !== undefined) this.starts.delete(oldest);
		}
	}

	/** Work `id` ended at `now`: its latency is a sample. Unknown ids are ignored. */
	end(id: string, now: number): void {
		const s = this.starts.get(id);
		if (!s) return;
		this.starts.delete(id);
		this.sample(Math.max(0, now - s.at), s.inFlight, now);
	}

	/**
	 * One latency sample (ms) of work that ran with `inFlight` in flight, ending at `now`
	 * (WindowedLimit.onSample). Closes the window by the window rule (file comment): its time is
	 * up and it holds `windowSize` samples or has been open `maxWindowMs`.
	 * @returns the limit after it
	 */
	sample(latencyMs: number, inFlight: number, now: number): number {
		const w = this.window;
		w.openedAt ??= now;
		w.latencies.push(latencyMs);
		w.minLatency = Math.min(w.minLatency, latencyMs);
		w.maxInFlight = Math.max(w.maxInFlight, inFlight);
		if (
			now > this.timeUpAt &&
			(w.latencies.length >= this.o.windowSize || now - w.openedAt >= this.o.maxWindowMs)
		) {
			this.window = emptyWindow(now);
			const length = Math.min(
				Math.max(2 * w.minLatency, this.o.minWindowMs),
				this.o.maxWindowMs
			);
			this.timeUpAt = now + length;
			this.windows++;
			this.update(windowLatency(w, this.o), w);
		}
		return this.limit;
	}

	/** Gradient2Limit._update with the target latency in place of tolerance × long-term RTT. */
	private update(windowLatency: number, w: SampleWindow): void {
		// Don't grow the limit if we are app limited (Gradient2's comment).
		if (w.maxInFlight < this.estimate / 2) return;
		const gradient =
			windowLatency <= 0
				? 1
				: Math.max(0.5, Math.min(1, this.o.targetLatencyMs / windowLatency));
		const next = this.estimate * gradient + this.o.queueSize;
		this.estimate = this.clamp(
			this.estimate * (1 - this.o.smoothing) + next * this.o.smoothing
		);
	}

	private clamp(limit: number): number {
		return Math.max(this.o.minLimit, Math.min(this.o.maxLimit, limit));
	}
}

/** The window's latency: the percentile (nearest rank, as ImmutablePercentileSampleWindow), or the mean. */
function windowLatency(w: SampleWindow, o: { percentile?: number }): number {
	const xs = w.latencies;
	if (o.percentile === undefined) return xs.reduce((a, b) => a + b, 0) / xs.length;
	const sorted = [...xs].sort((a, b) => a - b);
	const rank = Math.min(sorted.length, Math.max(1, Math.round(sorted.length * o.percentile)));
	return sorted[rank - 1]!;
}
