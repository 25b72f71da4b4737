/**
 * The admission queue (platform/admission-queue.ts): a request at the limit waits up to
 * `maxWaitMs` for a slot, first come first served, and is refused after it or at once when the
 * queue is full; an admitted request holds its slot until `done()`, so a burst cannot overshoot
 * the limit before its work shows in `load()`. Jest's fake timers stand in for the clock.
 */
import { AdmissionQueue, type AdmissionTicket } from "../../platform/admission-queue";

/** A queue over a settable load and limit. */
function queue(opts: { limit: number; maxWaitMs: number; maxWaiting?: number }): {
	q: AdmissionQueue;
	state: { load: number; limit: number };
} {
	const state = { load: 0, limit: opts.limit };
	const q = new AdmissionQueue({
		load: () => state.load,
		limit: () => state.limit,
		maxWaitMs: opts.maxWaitMs,
		...(opts.maxWaiting === undefined ? {} : { maxWaiting: () => opts.maxWaiting! })
	});
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
		const { q, state } = queue({ limit: 1, maxWaitMs: 100, maxWaiting: 10 });
		state.load = 1;
		const order: string[] = [];
		const first = q.enter().then(t => (order.push("first"), t));
		const second = q.enter().then(t => (order.push("second"), t));
		await flush();
		expect(q.waiting).toBe(2);
		jest.advanceTimersByTime(50);
		state.load = 0; // the saga in flight ended
		q.wake();
		expect(await first).not.toBeNull();
		expect(q.waiting).toBe(1);
		jest.advanceTimersByTime(100);
		expect(await second).toBeNull();
		expect(order).toEqual(["first", "second"]);
	});

	it("a newcomer does not jump the queue when a slot is free before the waiters were woken", async () => {
		const { q, state } = queue({ limit: 1, maxWaitMs: 100, maxWaiting: 10 });
		state.load = 1;
		const order: string[] = [];
		const waiter = q.enter().then(t => (order.push("waiter"), t));
		await flush();
		state.load = 0; // a slot is free, nobody has called wake() yet
		const newcomer = q.enter().then(t => (order.push("newcomer"), t));
		await flush();
		expect(q.waiting).toBe(2);
		q.wake();
		expect(await waiter).not.toBeNull();
		jest.advanceTimersByTime(100);
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

	it("refuses at once when maxWaiting requests already wait (the limit by default)", async () => {
		const { q, state } = queue({ limit: 2, maxWaitMs: 1000 });
		state.load = 2;
		const waiters = [q.enter(), q.enter()];
		await flush();
		expect(q.waiting).toBe(2);
		expect(await q.enter()).toBeNull();
		const { q: q2, state: s2 } = queue({ limit: 2, maxWaitMs: 1000, maxWaiting: 0 });
		s2.load = 2;
		expect(await q2.enter()).toBeNull();
		q.refuseAll();
		expect(await Promise.all(waiters)).toEqual([null, null]);
	});

	it("a rising limit admits as many waiters as it makes room for", async () => {
		const { q, state } = queue({ limit: 1, maxWaitMs: 1000, maxWaiting: 10 });
		state.load = 1;
		const waiters = [q.enter(), q.enter(), q.enter()];
		await flush();
		state.limit = 3;
		q.wake();
		expect(q.waiting).toBe(1);
		expect(q.admitted).toBe(2);
		q.refuseAll();
		const got = await Promise.all(waiters);
		expect(got.map(t => t !== null)).toEqual([true, true, false]);
	});
});
