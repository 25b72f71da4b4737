/**
 * Per-customer bounds on `orders.create` (issue 16, item 6): one account must not fill the
 * orders nodes' saga capacity (`SAGA_MAX_IN_FLIGHT`, one pool for everyone) nor hold the stock.
 * A customer at `ORDERS_MAX_IN_FLIGHT_PER_CUSTOMER` orders in flight, or whose order would take
 * its units in flight past `ORDERS_MAX_UNITS_RESERVED_PER_CUSTOMER`, is refused with 429
 * `ORDERS_CUSTOMER_LIMIT` and `Retry-After`, while another customer's order is accepted and
 * CONFIRMED. The bound is exact across two orders nodes on one orders database, also for
 * concurrent requests.
 *
 * Real services, real Postgres, the real gateway over HTTP. The sagas are held in flight by a
 * gate in front of `payments.charge` (the card processor "thinking"), opened at the end.
 */
import crypto from "node:crypto";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import type { Middleware, ServiceBroker } from "moleculer";
import type { Order } from "../../services/orders/orders.model";
import { admin, customer, startTestBroker, waitFor, type TestBroker } from "../support/broker";
import { api } from "../support/shop-process";

/** Holds `payments.charge` calls while closed. */
class ChargeGate {
	private gate: Promise<void> = Promise.resolve();
	private release: () => void = () => undefined;
	close(): void {
		this.gate = new Promise(r => {
			this.release = r;
		});
	}
	open(): void {
		this.release();
	}
	middleware(): Middleware {
		return {
			name: "ChargeGate",
			localAction: (next: (ctx: unknown) => Promise<unknown>, action: { name: string }) => {
				if (action.name !== "payments.charge") return next;
				return async (ctx: unknown): Promise<unknown> => {
					await this.gate;
					return next(ctx);
				};
			}
		} as unknown as Middleware;
	}
}

const SERVICES = ["products", "inventory", "payments", "notifications", "orders"] as const;

describe("per-customer bounds on orders in flight and units held", () => {
	const gate = new ChargeGate();
	const env = {
		ORDERS_MAX_IN_FLIGHT_PER_CUSTOMER: "3",
		ORDERS_MAX_UNITS_RESERVED_PER_CUSTOMER: "5",
		SAGA_STEP_TIMEOUT_MS: "20000"
	};
	let node1: TestBroker;
	let node2: TestBroker;
	let base: string;

	beforeAll(async () => {
		node1 = await startTestBroker(["api", "users", ...SERVICES], {
			env,
			broker: { middlewares: [gate.middleware()] }
		});
		// A second orders node (with its own participants) on the same databases.
		node2 = await startTestBroker([...SERVICES], {
			env,
			prefix: node1.prefix,
			broker: { middlewares: [gate.middleware()] }
		});
		const server = (node1.broker.getLocalService("api") as unknown as { server: Server })
			.server;
		base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
	}, 60_000);
	afterAll(async () => {
		gate.open();
		await node2?.stop();
		await node1?.stop();
		for (const k of Object.keys(env)) delete process.env[k];
	});

	const register = async (b: ServiceBroker): Promise<{ token: string; id: string }> => {
		const r: { token: string; user: { id: string } } = await b.call("users.register", {
			email: `bound-${crypto.randomBytes(4).toString("hex")}@example.com`,
			password: "correct horse battery staple",
			name: "Bound"
		});
		return { token: r.token, id: r.user.id };
	};

	it("refuses a customer at its bound with 429 ORDERS_CUSTOMER_LIMIT + Retry-After; another customer's order is CONFIRMED", async () => {
		const b1 = node1.broker;
		const product: { id: string } = await b1.call(
			"products.create",
			{
				sku: `BOUND-${crypto.randomBytes(4).toString("hex")}`,
				name: "Bound",
				price: 500,
				stock: 100
			},
			{ meta: { user: admin } }
		);
		const body = (quantity = 1) => ({
			items: [{ productId: product.id, quantity }],
			paymentMethod: "tok_visa"
		});
		const [a, bee] = await Promise.all([register(b1), register(b1)]);

		gate.close();
		// Customer A: three orders in flight, then the fourth is refused.
		const placedA = [];
		for (let i = 0; i < 3; i++) {
			const r = await api(base, "POST", "/api/orders", { token: a.token, body: body() });
			expect(r.status).toBe(202);
			placedA.push(r.body as Order);
		}
		const refused = await api(base, "POST", "/api/orders", { token: a.token, body: body() });
		expect({ status: refused.status, type: refused.body.type }).toEqual({
			status: 429,
			type: "ORDERS_CUSTOMER_LIMIT"
		});
		expect(refused.body.data).toMatchObject({ inFlight: 3, maxInFlight: 3 });
		expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);

		// Customer B is not held back by A.
		const placedB = await api(base, "POST", "/api/orders", { token: bee.token, body: body() });
		expect(placedB.status).toBe(202);

		// Units: C holds 4 of its 5; an order of 2 more is refused, one of 1 is accepted.
		const c = customer();
		await b1.call("orders.create", body(4), { meta: { user: c } });
		await expect(
			b1.call("orders.create", body(2), { meta: { user: c } })
		).rejects.toMatchObject({
			type: "ORDERS_CUSTOMER_LIMIT",
			code: 429,
			data: { unitsInFlight: 4, units: 2, maxUnits: 5 }
		});
		await b1.call("orders.create", body(1), { meta: { user: c } });

		// Cluster-wide and race-free: 8 concurrent orders of D spread over two orders nodes,
		// exactly 3 accepted.
		const d = customer();
		const outcomes = await Promise.all(
			Array.from({ length: 8 }, (_, i) =>
				(i % 2 === 0 ? node1 : node2).broker
					.call<Order, object>("orders.create", body(), { meta: { user: d } })
					.then(
						() => "accepted",
						(e: { type?: string }) => e.type ?? "error"
					)
			)
		);
		expect(outcomes.filter(o => o === "accepted")).toHaveLength(3);
		expect(outcomes.filter(o => o === "ORDERS_CUSTOMER_LIMIT")).toHaveLength(5);
		// A refusal leaves nothing behind: no order, no saga.
		const mine: { total: number } = await b1.call("orders.list", {}, { meta: { user: d } });
		expect(mine.total).toBe(3);

		gate.open();
		const get = (o: Order, user: string) =>
			api(base, "GET", `/api/orders/${o.id}`, { token: user }).then(r => r.body as Order);
		const b = await waitFor(
			() => get(placedB.body as Order, bee.token),
			o => o.status === "CONFIRMED",
			10_000
		);
		expect(b.status).toBe("CONFIRMED");
		const as = await Promise.all(
			placedA.map(o =>
				waitFor(
					() => get(o, a.token),
					x => x.status === "CONFIRMED",
					10_000
				)
			)
		);
		expect(as.map(o => o.status)).toEqual(["CONFIRMED", "CONFIRMED", "CONFIRMED"]);
		// Settled orders no longer count: A orders again.
		const again = await api(base, "POST", "/api/orders", { token: a.token, body: body() });
		expect(again.status).toBe(202);
	}, 60_000);
});
