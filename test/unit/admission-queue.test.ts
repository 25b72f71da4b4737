/**
 * The admission queue (platform/admission-queue.ts): a request at the limit waits up to
 * `maxWaitMs` for a slot, first come first served, and is refused after it, or at once when as
 * many wait as can expect a slot in that time (the work ended in the last second, scaled); an
 * admitted request holds its slot until `done()`, so a burst cannot overshoot the limit before its
 * work shows in `load()`. Jest's fake timers stand in for the clock.
 */
import { AdmissionQueue, type AdmissionTicket } from "../../platform/admission-queue";

/**
 * A queue over a settable load and limit, on the fake clock; `ended` pieces of work have just
 * ended (each lets one more wait when `maxWaitMs` is 1 s).
 */
function queue(opts: { limit: number; maxWaitMs: number; ended?: number }): {
	q: AdmissionQueue;
	state: { load: number; limit: number };
} {
	const state = { load: 0, limit: opts.limit };
	const q = new AdmissionQueue({
		load: () => state.load,
		limit: () => state.limit,
		maxWaitMs: opts.maxWaitMs,
		now: () => Date.now()
	});
	for (let i = 0; i < (opts.ended ?? 0); i++) q.ended();
	return { q, state };
}

/** Settles pending promise callbacks (fake timers leave microtasks alone). */
const flush = (): Promise<void> => new Promise(r => jest.requireActual("timers").setImmediate(r));

beforeEach(() => jest.useFakeTimers());
afterEach(() => jest.useRealTimers());

describe("AdmissionQueue", () => {
	it("admits under the limit at once, counting admitted tickets against it", async () => {
		const { q } = queue({ limit: 3, maxWaitMs: 0 });
		const burst = await Promise.all([q.enter(), q.enter(), q.enter(), q.enter()]);
		// Four requests before any work started: three slots, the fourth refused (wait 0).
		expect(burst.filter(t => t !== null)).toHaveLength(3);
		expect(burst[3]).toBeNull();
		expect(q.admitted).toBe(3);
	});

	it("a ticket done once its work counts in load() keeps the slot taken; one done without work frees it", async () => {
		const { q, state } = queue({ limit: 2, maxWaitMs: 0 });
		const a = (await q.enter())!;
		const b = (await q.enter())!;
		// a's work started: it counts in load now, the ticket goes.
		state.load = 1;
		a.done();
		a.done(); // idempotent
		expect(q.admitted).toBe(1);
		expect(await q.enter()).toBeNull();
		// b ended without starting anything: its slot is free again.
		b.done();
		expect(await q.enter()).not.toBeNull();
	});

	it("a request at the limit waits, and the slot freed meanwhile goes to the first waiter", async () => {
		const { q, state } = queue({ limit: 2, maxWaitMs: 1000, ended: 10 });
		state.load = 2;
		const order: string[] = [];
		const first = q.enter().then(t => (order.push("first"), t));
		const second = q.enter().then(t => (order.push("second"), t));
		await flush();
		expect(q.waiting).toBe(2);
		jest.advanceTimersByTime(500);
		state.load = 1; // a saga in flight ended
		q.wake();
		expect(await first).not.toBeNull();
		expect(q.waiting).toBe(1);
		jest.advanceTimersByTime(500);
		expect(await second).toBeNull();
		expect(order).toEqual(["first", "second"]);
	});

	it("a newcomer does not jump the queue when a slot is free before the waiters were woken", async () => {
		const { q, state } = queue({ limit: 2, maxWaitMs: 1000, ended: 10 });
		state.load = 2;
		const order: string[] = [];
		const waiter = q.enter().then(t => (order.push("waiter"), t));
		await flush();
		state.load = 1; // a slot is free, nobody has called wake() yet
		const newcomer = q.enter().then(t => (order.push("newcomer"), t));
		await flush();
		expect(q.waiting).toBe(2);
		q.wake();
		expect(await waiter).not.toBeNull();
		jest.advanceTimersByTime(1000);
		expect(await newcomer).toBeNull();
		expect(order).toEqual(["waiter", "newcomer"]);
	});

	it("refuses a waiter after maxWaitMs when no slot frees, and not before", async () => {
		const { q, state } = queue({ limit: 1, maxWaitMs: 100 });
		state.load = 1;
		let answer: AdmissionTicket | null | "pending" = "pending";
		void q.enter().then(t => (answer = t));
		jest.advanceTimersByTime(99);
		await flush();
		expect(answer).toBe("pending");
		jest.advanceTimersByTime(1);
		await flush();
		expect(answer).toBeNull();
		expect(q.waiting).toBe(0);
	});

	it("lets wait only as many as the last second's ended work says can get a slot in maxWaitMs, at least one, at most the limit", async () => {
		// 30 ended in the last second, a wait of 100 ms: 3 may wait, the 4th is refused at once.
		const { q, state } = queue({ limit: 10, maxWaitMs: 100, ended: 30 });
		state.load = 10;
		expect(q.maxWaiting).toBe(3);
		const waiters = [q.enter(), q.enter(), q.enter()];
		await flush();
		expect(q.waiting).toBe(3);
		expect(await q.enter()).toBeNull();
		q.refuseAll();
		expect(await Promise.all(waiters)).toEqual([null, null, null]);
		// A second later those ends are out of the window: one may still wait.
		jest.advanceTimersByTime(1000);
		expect(q.maxWaiting).toBe(1);
		// Never more than the limit.
		expect(queue({ limit: 2, maxWaitMs: 1000, ended: 50 }).q.maxWaiting).toBe(2);
	});

	it("a rising limit admits as many waiters as it makes room for", async () => {
		const { q, state } = queue({ limit: 3, maxWaitMs: 1000, ended: 10 });
		state.load = 3;
		const waiters = [q.enter(), q.enter(), q.enter()];
		await flush();
		expect(q.waiting).toBe(3);
		state.limit = 5;
		q.wake();
		expect(q.waiting).toBe(1);
		expect(q.admitted).toBe(2);
		q.refuseAll();
		const got = await Promise.all(waiters);
		expect(got.map(t => t !== null)).toEqual([true, true, false]);
	});
});
