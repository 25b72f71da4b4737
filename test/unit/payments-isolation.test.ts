/**
 * One customer cannot hurt another through the payments circuit breaker (issue 16, item 5).
 *
 * The order saga with the REAL products, inventory, payments, orders and notifications services
 * in one broker (its circuit breaker wraps local actions too, as on every node of a cluster), on a
 * real Postgres, with the simulated faults on (`PAYMENTS_SIMULATED_FAULTS=true`):
 *
 * - customer A places a dozen orders paid with `tok_processorUnavailable` (a simulated outage
 *   tied to that token: every retry of their sagas' charge fails with 503) while customer B orders
 *   with `tok_visa`: each of B's orders is CONFIRMED within 5 s of being placed. Before the fix,
 *   A's failures opened the breaker of `payments.charge` and B's orders waited for its half-open
 *   time (10 s);
 * - a processor outage (every card failing: `payments.simulateOutage`) still opens the breaker:
 *   the processor's failures count, not one card's.
 */
import crypto from "node:crypto";
import type { ServiceBroker } from "moleculer";
import type { AuthUser } from "../../platform/context";
import type { Order } from "../../services/orders/orders.model";
import type { Product } from "../../services/products/products.model";
import { admin, customer, startTestBroker, waitFor, type TestBroker } from "../support/broker";

const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

describe("payments isolation: the circuit breaker counts the processor's failures, not one card's", () => {
	let t: TestBroker;
	let broker: ServiceBroker;

	beforeAll(async () => {
		t = await startTestBroker(
			["products", "inventory", "payments", "orders", "notifications"],
			{
				env: { PAYMENTS_SIMULATED_FAULTS: "true", SAGA_DEADLINE_MS: "30000" }
			}
		);
		broker = t.broker;
	});
	afterAll(async () => t?.stop());

	const as = <T>(user: AuthUser, action: string, params: object): Promise<T> =>
		broker.call(action, params, { meta: { user } });

	async function newProduct(stock: number, price: number): Promise<Product> {
		const sku = `ISO-${crypto.randomBytes(5).toString("hex")}`;
		return as<Product>(admin, "products.create", { sku, name: sku, price, stock });
	}

	const place = (user: AuthUser, productId: string, paymentMethod: string): Promise<Order> =>
		as<Order>(user, "orders.create", { items: [{ productId, quantity: 1 }], paymentMethod });

	it("customer A's processor-outage orders do not delay customer B's tok_visa orders: each CONFIRMED within 5 s", async () => {
		const p = await newProduct(100, 4_499);
		const a = customer();
		const b = customer();

		// One order first, so that B's orders do not pay for the first saga's warm-up.
		const warm = await place(b, p.id, "tok_visa");
		await waitFor(
			() => as<Order>(b, "orders.get", { id: warm.id }),
			x => x.status === "CONFIRMED",
			15_000
		);

		// A: a dozen orders whose sagas keep retrying a charge that fails with 503.
		const aOrders = await Promise.all(
			Array.from({ length: 12 }, () => place(a, p.id, "tok_processorUnavailable"))
		);
		try {
			// B: one order every 1.5 s for ~15 s, while A's sagas retry (well past the 20 calls
			// the breaker needs to judge the endpoint).
			const latencies: number[] = [];
			const statuses: string[] = [];
			const runs: Promise<void>[] = [];
			for (let i = 0; i < 10; i++) {
				runs.push(
					(async () => {
						const t0 = Date.now();
						const o = await place(b, p.id, "tok_visa");
						const done = await waitFor(
							() => as<Order>(b, "orders.get", { id: o.id }),
							x => x.status === "CONFIRMED" || x.status === "CANCELLED",
							15_000,
							50
						);
						latencies.push(Date.now() - t0);
						statuses.push(done.status);
					})()
				);
				await sleep(1_500);
			}
			await Promise.all(runs);
			console.log(
				`payments isolation: B's orders ${statuses.join(",")}; ms to CONFIRMED: ${latencies.join(", ")}`
			);
			expect(statuses).toEqual(Array(10).fill("CONFIRMED"));
			expect(Math.max(...latencies)).toBeLessThanOrEqual(5_000);

			// A's orders are still waiting for the processor, none has failed.
			for (const o of aOrders)
				expect(["PENDING", "STOCK_RESERVED"]).toContain(
					(await as<Order>(a, "orders.get", { id: o.id })).status
				);
		} finally {
			// A gives up: the sagas compensate (release the stock; nothing was charged).
			for (const o of aOrders)
				await as(a, "orders.cancel", { id: o.id }).catch(() => undefined);
		}
		const ended = await waitFor(
			() => Promise.all(aOrders.map(o => as<Order>(a, "orders.get", { id: o.id }))),
			os => os.every(o => o.status === "CANCELLED"),
			30_000,
			100
		);
		expect(ended.map(o => o.status)).toEqual(Array(12).fill("CANCELLED"));
	}, 90_000);

	/**
	 * Up to `n` direct charges with `paymentMethod`, one attempt each (no retries), until one
	 * answers `stopAt`: what each answered (the payment's status or the error's type).
	 */
	async function charges(paymentMethod: string, n: number, stopAt?: string): Promise<string[]> {
		const seen: string[] = [];
		while (seen.length < n && (seen.length === 0 || seen.at(-1) !== stopAt))
			seen.push(
				await broker
					.call<{ status: string }, Record<string, unknown>>(
						"payments.charge",
						{
							orderId: crypto.randomUUID(),
							amount: 100,
							currency: "USD",
							paymentMethod
						},
						{ retries: 0 }
					)
					.then(
						p => p.status,
						(e: { type?: string }) => String(e.type)
					)
			);
		return seen;
	}

	it("one token's failures, however many, leave the breaker closed", async () => {
		// The breaker judges at least 20 calls in 60 s (minRequestCount) at a failure rate of 0.5.
		expect(await charges("tok_processorUnavailable", 60)).toEqual(
			Array(60).fill("PAYMENTS_PROCESSOR_UNAVAILABLE")
		);
		expect(await charges("tok_visa", 5)).toEqual(Array(5).fill("CAPTURED"));
	}, 30_000);

	it("a processor outage (every card failing) still opens the breaker of payments.charge", async () => {
		await broker.call("payments.simulateOutage", { durationMs: 30_000 });
		try {
			// Open, the local endpoint is taken out: Moleculer answers SERVICE_NOT_AVAILABLE
			// (a remote caller's breaker: CIRCUIT_BREAKER_OPEN).
			const seen = await charges("tok_visa", 300, "SERVICE_NOT_AVAILABLE");
			expect(seen[0]).toBe("PAYMENTS_PROCESSOR_UNAVAILABLE");
			expect(seen.at(-1)).toBe("SERVICE_NOT_AVAILABLE");
			expect(new Set(seen.slice(0, -1))).toEqual(new Set(["PAYMENTS_PROCESSOR_UNAVAILABLE"]));
		} finally {
			await broker.call("payments.simulateOutage", { durationMs: 0 });
		}
	}, 30_000);
});
