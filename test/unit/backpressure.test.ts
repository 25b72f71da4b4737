/**
 * Backpressure: an orders node runs at most `SAGA_MAX_IN_FLIGHT` sagas; past it a new order waits
 * at most `SAGA_ADMISSION_WAIT_MS` (100 ms by default) for a slot and is then refused with 503
 * ORDERS_OVERLOADED (the gateway adds `Retry-After`), nothing stored, instead of queueing without
 * bound. Here payments is down, so sagas stay in flight (retrying
 * within their deadline) until it comes back; then they finish and orders are taken again.
 */
import crypto from "node:crypto";
import { resetConfig } from "../../platform/config";
import type { Order } from "../../services/orders/orders.model";
import { createOrdersService } from "../../services/orders/orders.service";
import { admin, customer, startTestBroker, waitFor, type TestBroker } from "../support/broker";
import { FaultPlan } from "../support/faults";

/**
 * The shop's services with an orders service configured by `env` (set in process.env for the
 * describe's tests) and `plan`'s faults, started before them and stopped after.
 * @returns the running broker's getter
 */
function shopWith(env: Record<string, string>, plan: FaultPlan): () => TestBroker {
	let t: TestBroker | undefined;
	beforeAll(async () => {
		Object.assign(process.env, env);
		resetConfig();
		t = await startTestBroker(["products", "inventory", "payments", "notifications"], {
			env,
			broker: { middlewares: [plan.middleware()] },
			extra: [createOrdersService()]
		});
	});
	afterAll(async () => {
		for (const k of Object.keys(env)) delete process.env[k];
		await t?.stop();
	});
	return () => t!;
}

/** A product priced 100 cents with `stock` units, created as the admin. */
function createProduct(t: TestBroker, name: string, stock: number): Promise<{ id: string }> {
	return t.broker.call(
		"products.create",
		{
			sku: `BP-${crypto.randomBytes(4).toString("hex")}`.toUpperCase(),
			name,
			price: 100,
			stock
		},
		{ meta: { user: admin } }
	);
}

describe("backpressure: bounded in-flight sagas per orders node", () => {
	const plan = new FaultPlan();
	const shop = shopWith(
		{ SAGA_MAX_IN_FLIGHT: "3", SAGA_STEP_TIMEOUT_MS: "300", SAGA_DEADLINE_MS: "20000" },
		plan
	);

	it("refuses orders past the bound with ORDERS_OVERLOADED and takes them again once sagas end", async () => {
		const t = shop();
		const b = t.broker;
		const p = await createProduct(t, "Backpressure", 100);
		plan.add("payments.charge", { kind: "down" });
		const user = customer();
		const place = (): Promise<Order> =>
			b.call(
				"orders.create",
				{ items: [{ productId: p.id, quantity: 1 }], paymentMethod: "tok_visa" },
				{ meta: { user } }
			);
		const first = await Promise.all([place(), place(), place()]);
		await expect(place()).rejects.toMatchObject({
			type: "ORDERS_OVERLOADED",
			code: 503,
			data: { inFlight: 3, max: 3 }
		});
		// Clients pressing on: every refusal is the backpressure answer, never the circuit
		// breaker's (refusals are not failures of the endpoint: platform/db/database-unavailable.ts).
		const refusals = await Promise.all(
			Array.from({ length: 30 }, () =>
				place().then(
					() => "accepted",
					(e: { type?: string }) => e.type
				)
			)
		);
		expect(new Set(refusals)).toEqual(new Set(["ORDERS_OVERLOADED"]));
		const mine: { total: number } = await b.call("orders.list", {}, { meta: { user } });
		expect(mine.total).toBe(3);

		plan.clear();
		const ended = await Promise.all(
			first.map(o =>
				waitFor(
					() =>
						b.call<Order, { id: string }>(
							"orders.get",
							{ id: o.id },
							{ meta: { user } }
						),
					x => x.status === "CONFIRMED" || x.status === "CANCELLED",
					15_000,
					50
				)
			)
		);
		expect(ended.map(o => o.status)).toEqual(["CONFIRMED", "CONFIRMED", "CONFIRMED"]);
		// Taken again at once: the first order after the sagas ended is accepted (the breaker
		// never opened, so nothing waits for its half-open time).
		await waitFor(
			async () =>
				(
					t.broker.getLocalService("orders") as unknown as { sagaLoad(): number }
				).sagaLoad(),
			n => n === 0,
			5_000,
			20
		);
		await expect(place()).resolves.toMatchObject({ status: "PENDING" });
	});
});

/**
 * The adaptive limit under SAGA_MAX_IN_FLIGHT (platform/concurrency-limit.ts): when sagas take
 * longer than SAGA_TARGET_LATENCY_MS (here payments answers after 250 ms), the node lowers its
 * limit and refuses at once, with far fewer sagas in flight than the ceiling, where a fixed bound
 * would take every order and let them queue.
 *
 * Not timed: the clients press on until the limit is down and has refused, however long the
 * machine takes (each saga ≥ 250 ms, so every window's gradient is 0.5 whatever the speed; a
 * slow machine only gives fewer samples per window, which the window rule counts, where
 * WindowedLimit dropped such windows and the limit could stay at 20). The deadline only ends a
 * hung run, and it fails then.
 */
describe("backpressure: the adaptive limit sheds load when sagas are slow", () => {
	const plan = new FaultPlan();
	const shop = shopWith(
		{
			SAGA_MAX_IN_FLIGHT: "50",
			SAGA_MIN_IN_FLIGHT: "2",
			SAGA_TARGET_LATENCY_MS: "50",
			SAGA_STEP_TIMEOUT_MS: "5000",
			SAGA_DEADLINE_MS: "20000"
		},
		plan
	);

	it("lowers the limit below the ceiling and refuses with ORDERS_OVERLOADED; the accepted orders all confirm", async () => {
		const t = shop();
		const b = t.broker;
		const p = await createProduct(t, "Adaptive", 100_000);
		// Slow, not failing: the charge commits, its answer comes 250 ms later.
		plan.add("payments.charge", { kind: "loseAnswer", times: 1_000_000, holdMs: 250 });
		const orders = t.broker.getLocalService("orders") as unknown as {
			sagaLoad(): number;
			sagaLimit(): number;
		};
		expect(orders.sagaLimit()).toBe(20); // Gradient2's initial limit, under the ceiling of 50
		// 12 clients in a closed loop (one customer each) until the limit is at most 12 and has
		// refused 5 orders: with the fixed ceiling of 50 none would ever be refused.
		const accepted: { id: string; user: ReturnType<typeof customer> }[] = [];
		const refusals: { inFlight: number; limit: number; max: number }[] = [];
		const done = (): boolean => refusals.length >= 5 && orders.sagaLimit() <= 12;
		const hung = Date.now() + 150_000;
		await Promise.all(
			Array.from({ length: 12 }, async () => {
				const user = customer();
				while (!done() && Date.now() < hung) {
					try {
						const o: Order = await b.call(
							"orders.create",
							{
								items: [{ productId: p.id, quantity: 1 }],
								paymentMethod: "tok_visa"
							},
							{ meta: { user } }
						);
						accepted.push({ id: o.id, user });
						// A closed loop: the client waits for its order to end before the next.
						await waitFor(
							() =>
								b.call<Order, { id: string }>(
									"orders.get",
									{ id: o.id },
									{ meta: { user } }
								),
							x => x.status === "CONFIRMED" || x.status === "CANCELLED",
							30_000,
							20
						);
					} catch (err) {
						const e = err as { type?: string; code?: number; data?: never };
						expect({ type: e.type, code: e.code }).toEqual({
							type: "ORDERS_OVERLOADED",
							code: 503
						});
						refusals.push(e.data!);
						await new Promise(r => setTimeout(r, 50));
					}
				}
			})
		);
		expect(done()).toBe(true);
		const admission = (orders as unknown as { $admission: { windowsClosed: number } })
			.$admission;
		// 20 → ≤ 12 at gradient 0.5 (L → 0.9 L + 0.8 per window) takes 8 windows at least.
		expect(admission.windowsClosed).toBeGreaterThanOrEqual(8);
		for (const r of refusals) {
			expect(r.max).toBe(50);
			// 12 clients: refused with about 12 in flight (a saga still emitting its end may
			// count a moment longer), the limit under the initial 20, far under the ceiling.
			expect(r.limit).toBeLessThan(20);
			expect(r.inFlight).toBeGreaterThanOrEqual(r.limit);
			expect(r.inFlight).toBeLessThan(20);
		}
		expect(orders.sagaLimit()).toBeLessThanOrEqual(12);

		plan.clear();
		const ended = await Promise.all(
			accepted.map(a =>
				waitFor(
					() =>
						b.call<Order, { id: string }>(
							"orders.get",
							{ id: a.id },
							{ meta: { user: a.user } }
						),
					x => x.status === "CONFIRMED" || x.status === "CANCELLED",
					60_000,
					50
				)
			)
		);
		expect(new Set(ended.map(o => o.status))).toEqual(new Set(["CONFIRMED"]));
	}, 240_000);
});

/**
 * The admission wait (platform/admission-queue.ts): an order that finds the limit reached waits
 * up to SAGA_ADMISSION_WAIT_MS for a saga to end and is then taken; while no saga ends only one
 * waits (as many as the last second's ended sagas say will get a slot in the wait, at least one),
 * the rest are refused at once, and nothing is stored while one waits.
 */
describe("backpressure: an order at the limit waits for a slot", () => {
	const plan = new FaultPlan();
	const shop = shopWith(
		{
			SAGA_MAX_IN_FLIGHT: "2",
			SAGA_TARGET_LATENCY_MS: "0",
			SAGA_ADMISSION_WAIT_MS: "15000",
			SAGA_STEP_TIMEOUT_MS: "300",
			SAGA_DEADLINE_MS: "20000"
		},
		plan
	);

	it("takes a waiting order when a saga ends; refuses at once past the queue", async () => {
		const t = shop();
		const b = t.broker;
		const p = await createProduct(t, "Admission wait", 100);
		plan.add("payments.charge", { kind: "down" });
		const user = customer();
		const place = (): Promise<Order> =>
			b.call(
				"orders.create",
				{ items: [{ productId: p.id, quantity: 1 }], paymentMethod: "tok_visa" },
				{ meta: { user } }
			);
		await Promise.all([place(), place()]);
		let settled = false;
		const waiting = place().then(x => ((settled = true), x));
		// No saga ended in the last second: one waits, the next is refused at once.
		const t0 = Date.now();
		await expect(place()).rejects.toMatchObject({ type: "ORDERS_OVERLOADED", code: 503 });
		expect(Date.now() - t0).toBeLessThan(5_000);
		await new Promise(r => setTimeout(r, 1000));
		expect(settled).toBe(false);
		const mine: { total: number } = await b.call("orders.list", {}, { meta: { user } });
		expect(mine.total).toBe(2);

		plan.clear();
		const taken = await waiting;
		expect(taken.status).toBe("PENDING");
		await waitFor(
			() => b.call<Order, { id: string }>("orders.get", { id: taken.id }, { meta: { user } }),
			x => x.status === "CONFIRMED",
			15_000,
			50
		);
	});
});
