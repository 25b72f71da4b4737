/**
 * The order saga's point of no return (issue 16, items 1 and 2), with the real services on a real
 * Postgres:
 * - once an order has passed its pivot (`CONFIRMING`, its card charged), its reservation does not
 *   expire, whether the commit is being retried or the saga is parked, so a redrive can finish it;
 * - a crash between the pivot's own update and the record of its outcome, recovered after the
 *   deadline, goes forward (CONFIRMED), never backward;
 * - a TTL below the saga deadline is refused at start-up.
 *
 * Every order ends satisfying the money invariant: CONFIRMED ⇔ its stock committed and its payment
 * captured once for its total; CANCELLED ⇒ nothing captured net and nothing held.
 */
import crypto from "node:crypto";
import { Errors, type Middleware, type ServiceBroker } from "moleculer";
import { ConfigError, loadConfig } from "../../platform/config";
import { shopError } from "../../platform/errors";
import { fastQuery } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";
import type { Order, SagaView } from "../../services/orders/orders.model";
import { createOrdersService } from "../../services/orders/orders.service";
import { admin, customer, startTestBroker, waitFor, type TestBroker } from "../support/broker";

interface Level {
	onHand: number;
	reserved: number;
	available: number;
}

/** Calls of the test's helpers into the shop, on one broker. */
function shopOf(broker: ServiceBroker) {
	const product = async (stock: number, price: number): Promise<string> => {
		const p: { id: string } = await broker.call(
			"products.create",
			{
				sku: `P-${crypto.randomBytes(4).toString("hex")}`,
				name: "Pivot item",
				price,
				stock
			},
			{ meta: { user: admin } }
		);
		return p.id;
	};
	const place = (productId: string, quantity = 1): Promise<Order> =>
		broker.call(
			"orders.create",
			{ items: [{ productId, quantity }], paymentMethod: "tok_visa" },
			{ meta: { user: customer() } }
		);
	const order = (id: string) => broker.call<Order, { id: string }>("orders.get", { id });
	const settled = (id: string, timeoutMs = 20_000): Promise<Order> =>
		waitFor(
			() => order(id),
			o => o.status === "CONFIRMED" || o.status === "CANCELLED",
			timeoutMs
		);
	const level = (productId: string) =>
		broker.call<Level, { productId: string }>("inventory.get", { productId });
	const reservation = (orderId: string) =>
		broker.call<{ status: string; expiresAt: string | null } | null, { orderId: string }>(
			"inventory.getReservation",
			{ orderId }
		);
	const payment = (orderId: string) =>
		broker.call<{ status: string; amount: number } | null, { orderId: string }>(
			"payments.get",
			{ orderId }
		);
	const sagaOf = async (orderId: string): Promise<SagaView> => {
		const page: { rows: SagaView[] } = await broker.call(
			"orders.listSagas",
			{ pageSize: 100 },
			{ meta: { user: admin } }
		);
		return page.rows.find(s => s.orderId === orderId)!;
	};
	/**
	 * The money invariant for one order, read from the payment and the reservation:
	 * CONFIRMED ⇔ stock COMMITTED and payment CAPTURED for the total; CANCELLED ⇒ no capture
	 * left, no units held.
	 */
	const invariant = async (id: string): Promise<string> => {
		const o = await order(id);
		const pay = await payment(id);
		const res = await reservation(id);
		if (o.status === "CONFIRMED")
			return pay?.status === "CAPTURED" &&
				pay.amount === o.total &&
				res?.status === "COMMITTED"
				? "ok"
				: `CONFIRMED but payment ${pay?.status}/${pay?.amount}, stock ${res?.status}`;
		if (o.status === "CANCELLED")
			return pay?.status !== "CAPTURED" &&
				res?.status !== "RESERVED" &&
				res?.status !== "COMMITTED"
				? "ok"
				: `CANCELLED but payment ${pay?.status}, stock ${res?.status}`;
		return `${o.status} with payment ${pay?.status ?? "none"}, stock ${res?.status ?? "none"}`;
	};
	return { product, place, order, settled, level, reservation, payment, sagaOf, invariant };
}

/**
 * `inventory.commit` as a participant that misbehaves for chosen orders: `broken` answers a
 * non-retryable server error (the saga, past its pivot, parks at once), `down` a retryable
 * SERVICE_UNAVAILABLE (the saga keeps retrying). The real handler runs for everyone else.
 */
class CommitFaults {
	readonly byOrder = new Map<string, "broken" | "down">();
	middleware(): Middleware {
		const faults = this.byOrder;
		return {
			name: "CommitFaults",
			localAction(next: (ctx: any) => Promise<unknown>, action: { name: string }) {
				if (action.name !== "inventory.commit") return next;
				return async function commit(ctx: any): Promise<unknown> {
					const f = faults.get(ctx.params.orderId);
					if (f === "down") throw shopError("SERVICE_UNAVAILABLE", "Injected: down");
					if (f === "broken")
						throw new Errors.MoleculerError("Injected: broken", 500, "BROKEN");
					return next(ctx);
				};
			}
		} as unknown as Middleware;
	}
}

describe("a reservation whose saga has passed the pivot does not expire", () => {
	const TTL_MS = 4_000;
	const faults = new CommitFaults();
	let t: TestBroker;

	beforeAll(async () => {
		t = await startTestBroker(
			["products", "inventory", "payments", "notifications", "orders"],
			{
				env: {
					SAGA_DEADLINE_MS: String(TTL_MS),
					RESERVATION_TTL_MS: String(TTL_MS),
					RESERVATION_SWEEP_INTERVAL_MS: "100"
				},
				broker: { middlewares: [faults.middleware()] }
			}
		);
	});
	afterAll(async () => {
		await t?.stop();
		delete process.env.RESERVATION_TTL_MS;
		delete process.env.RESERVATION_SWEEP_INTERVAL_MS;
		delete process.env.SAGA_DEADLINE_MS;
	});

	it("parked or retried past the TTL, its units stay the order's; a redrive finishes it CONFIRMED", async () => {
		const shop = shopOf(t.broker);
		const price = 4_499;
		const productId = await shop.product(2, price);

		// Order A: past the pivot, its commit fails for good: the saga parks (FAILED), CONFIRMING.
		const a = await shop.place(productId);
		faults.byOrder.set(a.id, "broken");
		// Order C: past the pivot, inventory is "down" for it: the commit is being retried.
		const c = await shop.place(productId);
		faults.byOrder.set(c.id, "down");
		await waitFor(
			() => shop.sagaOf(a.id),
			s => s?.status === "FAILED",
			10_000
		);
		expect(await shop.order(a.id)).toMatchObject({ status: "CONFIRMING" });
		await waitFor(
			() => shop.order(c.id),
			o => o.status === "CONFIRMING",
			10_000
		);

		// The TTL passes and the sweeper (every 100 ms) runs many times meanwhile.
		await new Promise(r => setTimeout(r, TTL_MS + 1_500));
		const held = await Promise.all([shop.reservation(a.id), shop.reservation(c.id)]);
		expect(held.map(r => r?.status)).toEqual(["RESERVED", "RESERVED"]);
		expect(await shop.level(productId)).toMatchObject({ onHand: 2, reserved: 2, available: 0 });

		// Another customer asks for the two units: none is free.
		const b = await shop.place(productId, 2);
		expect(await shop.settled(b.id)).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "OUT_OF_STOCK"
		});

		// Inventory recovers: C's retry commits; the operator redrives A.
		faults.byOrder.clear();
		expect(await shop.settled(c.id)).toMatchObject({ status: "CONFIRMED" });
		const parked = await shop.sagaOf(a.id);
		await t.broker.call("orders.redriveSaga", { id: parked.id }, { meta: { user: admin } });
		expect(await shop.settled(a.id)).toMatchObject({ status: "CONFIRMED" });

		for (const id of [a.id, b.id, c.id])
			expect([id, await shop.invariant(id)]).toEqual([id, "ok"]);
		expect(await shop.level(productId)).toEqual({
			productId,
			onHand: 0,
			reserved: 0,
			available: 0
		});
		expect(await shop.payment(a.id)).toMatchObject({ status: "CAPTURED", amount: price });
	}, 60_000);

	it("a reservation given up before the pivot fences the pivot off: the order is refunded, not parked", async () => {
		const shop = shopOf(t.broker);
		const productId = await shop.product(1, 1_500);
		// Hold the charge (a lock on the payments table) while the reservation lapses and the
		// unit is sold to someone else. With the TTL at least the deadline, a reservation lapses
		// before its pivot only for a saga past its deadline or seen through a skewed clock: the
		// test makes it due at once, as such a clock would.
		const dbOf = (service: string): ShopDatabase =>
			(t.broker.getLocalService(service) as unknown as { db: ShopDatabase }).db;
		const payments = dbOf("payments");
		// The lock is held until the callback ends (committed, or rolled back when it throws).
		const [a, b] = await payments.transaction(async lock => {
			await fastQuery(payments, "LOCK TABLE payments IN EXCLUSIVE MODE", {
				transaction: lock
			});
			const a = await shop.place(productId);
			await waitFor(
				() => shop.order(a.id),
				o => o.status === "STOCK_RESERVED",
				5_000,
				10
			);
			await fastQuery(
				dbOf("inventory"),
				"UPDATE reservations SET expires_at = now() - interval '1 second' WHERE order_id = $1",
				{ bind: [a.id] }
			);
			await waitFor(
				() => shop.reservation(a.id),
				r => r?.status === "EXPIRED",
				5_000,
				20
			);
			const b = await shop.place(productId);
			await waitFor(
				() => shop.order(b.id),
				o => o.status === "STOCK_RESERVED",
				5_000,
				10
			);
			return [a, b] as const;
		});
		expect(await shop.settled(b.id)).toMatchObject({ status: "CONFIRMED" });
		expect(await shop.settled(a.id, 10_000)).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "TIMEOUT"
		});
		for (const id of [a.id, b.id]) expect([id, await shop.invariant(id)]).toEqual([id, "ok"]);
		expect(await shop.level(productId)).toMatchObject({ onHand: 0, reserved: 0 });
	}, 30_000);
});

describe("a crash between the pivot's update and its outcome record", () => {
	class SimulatedCrash extends Error {}
	const brokers: TestBroker[] = [];
	/** Resolves the frozen node's pending pivot at the end (it then finds its lease lost). */
	let thaw: (err: Error) => void = () => undefined;

	afterAll(async () => {
		thaw(new SimulatedCrash("the frozen node wakes up"));
		for (const b of brokers.reverse()) await b.stop().catch(() => undefined);
		delete process.env.SAGA_DEADLINE_MS;
	});

	it("recovered after the deadline, the order ends CONFIRMED: captured once, stock committed", async () => {
		// Node 1: its orders service passes the pivot (the order row says CONFIRMING) and then
		// freezes before recording the outcome (a stopped process, a lost connection).
		const schema = createOrdersService({ leaseMs: 1_000, recoveryIntervalMs: 0 });
		const methods = schema.methods as Record<string, (...args: unknown[]) => Promise<unknown>>;
		const passPivot = methods.passPivot!;
		const frozen = new Promise<never>((_resolve, reject) => {
			thaw = reject;
		});
		frozen.catch(() => undefined);
		const node1 = await startTestBroker(
			["products", "inventory", "payments", "notifications"],
			{
				env: { SAGA_DEADLINE_MS: "1000" },
				extra: [
					{
						...schema,
						methods: {
							...schema.methods,
							async passPivot(this: unknown, ...args: unknown[]): Promise<unknown> {
								await passPivot.apply(this, args);
								return frozen;
							}
						}
					}
				]
			}
		);
		brokers.push(node1);
		const shop = shopOf(node1.broker);
		const productId = await shop.product(3, 2_000);
		const o = await shop.place(productId, 2);
		await waitFor(
			() => shop.order(o.id),
			x => x.status === "CONFIRMING",
			10_000,
			20
		);
		// Past the deadline and the lease, another orchestrator recovers the saga.
		await new Promise(r => setTimeout(r, 1_500));
		const node2 = await startTestBroker(["inventory", "payments"], {
			prefix: node1.prefix,
			extra: [createOrdersService({ leaseMs: 5_000, recoveryIntervalMs: 100 })]
		});
		brokers.push(node2);
		expect(await shop.settled(o.id)).toMatchObject({ status: "CONFIRMED" });
		expect(await shop.invariant(o.id)).toBe("ok");
		expect(await shop.payment(o.id)).toMatchObject({ status: "CAPTURED", amount: 4_000 });
		expect(await shop.level(productId)).toMatchObject({ onHand: 1, reserved: 0 });
		expect(await shop.sagaOf(o.id)).toMatchObject({ status: "COMPLETED" });
	}, 40_000);
});

describe("start-up", () => {
	it("refuses RESERVATION_TTL_MS below SAGA_DEADLINE_MS, naming both", () => {
		const env = { JWT_SECRET: "s".repeat(32), DATA_DIR: "/tmp/shop-pivot-config" };
		expect(() =>
			loadConfig({ ...env, SAGA_DEADLINE_MS: "60000", RESERVATION_TTL_MS: "30000" })
		).toThrow(ConfigError);
		expect(() =>
			loadConfig({ ...env, SAGA_DEADLINE_MS: "60000", RESERVATION_TTL_MS: "30000" })
		).toThrow(/RESERVATION_TTL_MS.*SAGA_DEADLINE_MS/);
		expect(
			loadConfig({ ...env, SAGA_DEADLINE_MS: "60000", RESERVATION_TTL_MS: "60000" })
				.reservationTtlMs
		).toBe(60_000);
	});
});
