/**
 * Backpressure: an orders node runs at most `SAGA_MAX_IN_FLIGHT` sagas; past it a new order is
 * refused at once with 503 ORDERS_OVERLOADED (the gateway adds `Retry-After`), nothing stored,
 * instead of queueing without bound. Here payments is down, so sagas stay in flight (retrying
 * within their deadline) until it comes back; then they finish and orders are taken again.
 */
import crypto from "node:crypto";
import { resetConfig } from "../../platform/config";
import type { Order } from "../../services/orders/orders.model";
import { createOrdersService } from "../../services/orders/orders.service";
import { admin, customer, startTestBroker, waitFor, type TestBroker } from "../support/broker";
import { FaultPlan } from "../support/faults";

describe("backpressure: bounded in-flight sagas per orders node", () => {
	const plan = new FaultPlan();
	let t: TestBroker;

	beforeAll(async () => {
		const env = {
			SAGA_MAX_IN_FLIGHT: "3",
			SAGA_STEP_TIMEOUT_MS: "300",
			SAGA_DEADLINE_MS: "20000"
		};
		Object.assign(process.env, env);
		resetConfig();
		t = await startTestBroker(["products", "inventory", "payments", "notifications"], {
			env,
			broker: { middlewares: [plan.middleware()] },
			extra: [createOrdersService()]
		});
	});
	afterAll(async () => {
		delete process.env.SAGA_MAX_IN_FLIGHT;
		await t?.stop();
	});

	it("refuses orders past the bound with ORDERS_OVERLOADED and takes them again once sagas end", async () => {
		const b = t.broker;
		const p: { id: string } = await b.call(
			"products.create",
			{
				sku: `BP-${crypto.randomBytes(4).toString("hex")}`.toUpperCase(),
				name: "Backpressure",
				price: 100,
				stock: 100
			},
			{ meta: { user: admin } }
		);
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
