/**
 * Admission under a concurrency limit with a short, bounded wait: a request that finds the limit
 * reached waits up to `maxWaitMs` for a slot (first come, first served), and is refused only
 * when none frees up in that time or when `maxWaiting` requests already wait.
 *
 * Why a wait and not an immediate refusal: HTTP's `Retry-After` counts whole seconds, and a
 * client refused at the limit comes back no sooner than that second later. With sagas that take
 * 50–400 ms, an immediate refusal leaves the slots it could not give empty for most of that
 * second. Measured with 32 closed-loop clients on the one-process shop (docs/performance.md,
 * "The admission wait"): a fixed limit of 10 refused at once confirmed 23 orders/s with 2 sagas
 * in flight on average (Little's law: 23/s × 84 ms); with the default adaptive limit, refusing
 * at once confirmed 107–109/s, waiting up to 100 ms 172–184/s, the same build interleaved. A
 * wait a fraction of the saga's latency long hands each freed slot to the next request at once,
 * and still refuses within `maxWaitMs` (plus the event loop's turn) what the node cannot start
 * soon.
 *
 * The pattern is Netflix concurrency-limits' `BlockingLimiter` with a timeout and its
 * `LifoBlockingLimiter`'s bounded backlog (github.com/Netflix/concurrency-limits,
 * concurrency-limits-core/.../limiter/BlockingLimiter.java and LifoBlockingLimiter.java), served
 * in arrival order here: the wait is short enough that the oldest waiter's client is still there.
 *
 * Only as many wait as can expect a slot within `maxWaitMs`: the work ended in the last second,
 * scaled to `maxWaitMs` (Little's law: slots free at the rate work ends), at least one and at
 * most the limit. The rest are refused at once, so at a sustained overload (arrivals beyond that
 * rate) most refusals do not wait at all, and a waiter is seldom refused after its whole wait.
 *
 * A slot is counted from admission, not from when the work shows in `load()`: a request admitted
 * holds a ticket until it calls `done()` (after its work started and counts in `load()`, or when
 * it ended without starting any), so a burst of requests that all find a free slot before any of
 * them started cannot overshoot the limit. Single-threaded (one event loop), so no locks.
 */

/** Settings of an `AdmissionQueue`; durations in ms. */
export interface AdmissionQueueOptions {
	/** Work running now (e.g. sagas in flight), admitted tickets not included. */
	readonly load: () => number;
	/** The limit on `load() + tickets` now (may move between calls: an adaptive limit). */
	readonly limit: () => number;
	/** Longest a request waits for a slot (≥ 0; 0: refused at once at the limit). */
	readonly maxWaitMs: number;
	/**
	 * Most requests waiting at once (≥ 0), instead of the default: the work ended in the last
	 * second scaled to `maxWaitMs`, in [1, limit] (a fixed queue, e.g. a bulkhead's, sets it).
	 */
	readonly maxWaiting?: () => number;
	/** The clock (ms, any monotonic origin). Default `performance.now`. */
	readonly now?: () => number;
}

/** An admitted request's slot until its work counts in `load()`. */
export interface AdmissionTicket {
	/** The work started (it counts in `load()` now) or ended without starting: the slot is its own or free. Idempotent. */
	done(): void;
}

/** The span over which the rate of ended work is counted, in ms. */
const RATE_WINDOW_MS = 1000;
/** Ends remembered at most (a rate above this per second counts as this). */
const MAX_ENDS = 100_000;

interface Waiter {
	readonly admit: (ticket: AdmissionTicket) => void;
	readonly refuse: () => void;
	readonly timer: NodeJS.Timeout;
}

export class AdmissionQueue {
	/** Admitted requests whose work does not count in `load()` yet. */
	private tickets = 0;
	private readonly waiters: Waiter[] = [];
	/** When work ended in the last `RATE_WINDOW_MS`, oldest first. */
	private readonly ends: number[] = [];
	private readonly now: () => number;

	constructor(private readonly o: AdmissionQueueOptions) {
		if (!(o.maxWaitMs >= 0)) throw new RangeError("maxWaitMs must be ≥ 0");
		this.now = o.now ?? (() => performance.now());
	}

	/** Requests waiting for a slot now. */
	get waiting(): number {
		return this.waiters.length;
	}

	/** Admitted requests whose work has not started yet. */
	get admitted(): number {
		return this.tickets;
	}

	/**
	 * How many may wait now: `maxWaiting()` when given, else the work ended in the last second
	 * scaled to `maxWaitMs`, rounded up, in [1, limit].
	 */
	get maxWaiting(): number {
		if (this.o.maxWaiting) return this.o.maxWaiting();
		const ended = this.recentEnds();
		const expected = Math.ceil((ended * this.o.maxWaitMs) / RATE_WINDOW_MS);
		return Math.max(1, Math.min(this.o.limit(), expected));
	}

	/**
	 * Admits a request now if a slot is free and nobody waits ahead of it, else waits up to
	 * `maxWaitMs` for one.
	 * @returns its ticket, or null when refused (the limit reached for `maxWaitMs`, or the queue full)
	 */
	enter(): Promise<AdmissionTicket | null> {
		if (this.waiters.length === 0 && this.hasSlot()) return Promise.resolve(this.ticket());
		if (this.o.maxWaitMs === 0 || this.waiters.length >= this.maxWaiting)
			return Promise.resolve(null);
		return new Promise(resolve => {
			const waiter: Waiter = {
				admit: resolve,
				refuse: () => resolve(null),
				timer: setTimeout(() => {
					const i = this.waiters.indexOf(waiter);
					if (i >= 0) this.waiters.splice(i, 1);
					waiter.refuse();
				}, this.o.maxWaitMs)
			};
			this.waiters.push(waiter);
		});
	}

	/**
	 * A slot may have freed up (work ended, or the limit rose): admits the waiters at the head of
	 * the queue while slots are free.
	 */
	wake(): void {
		while (this.waiters.length > 0 && this.hasSlot()) {
			const w = this.waiters.shift()!;
			clearTimeout(w.timer);
			w.admit(this.ticket());
		}
	}

	/** A piece of work ended (its slot is free): counted for the rate, then `wake()`. */
	ended(): void {
		this.ends.push(this.now());
		if (this.ends.length > MAX_ENDS) this.ends.shift();
		this.wake();
	}

	/** Refuses every waiter now (the node is stopping). */
	refuseAll(): void {
		for (const w of this.waiters.splice(0)) {
			clearTimeout(w.timer);
			w.refuse();
		}
	}

	private recentEnds(): number {
		const since = this.now() - RATE_WINDOW_MS;
		while (this.ends.length > 0 && this.ends[0]! <= since) this.ends.shift();
		return this.ends.length;
	}

	private hasSlot(): boolean {
		return this.o.load() + this.tickets < this.o.limit();
	}

	private ticket(): AdmissionTicket {
		this.tickets++;
		let held = true;
		return {
			done: () => {
				if (!held) return;
				held = false;
				this.tickets--;
				this.wake();
			}
		};
	}
}
