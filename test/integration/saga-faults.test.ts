/**
 * The order saga under injected faults, with the real services on a real Postgres: lost answers,
 * transient failures, a participant down past the deadline, orchestrator crashes, and two
 * orchestrators racing for the same orphaned saga.
 */
import crypto from "node:crypto";
import type { ServiceBroker } from "moleculer";
import type { Order, SagaView } from "../../services/orders/orders.model";
import { createOrdersService } from "../../services/orders/orders.service";
import { admin, customer, startTestBroker, waitFor, type TestBroker } from "../support/broker";
import { FaultPlan } from "../support/faults";
import { resetConfig } from "../../platform/config";

class SimulatedCrash extends Error {}

/** Crash points armed by tests: `<sagaId|*>:<kind>:<step>`, each used once. */
const crashes = new Set<string>();
let crashCount = 0;
const faultPoint = (p: { kind: string; step: string; sagaId: string }): boolean => {
	for (const key of [`${p.sagaId}:${p.kind}:${p.step}`, `*:${p.kind}:${p.step}`]) {
		if (crashes.delete(key)) {
			crashCount++;
			return true;
		}
	}
	return false;
};

describe("order saga under faults", () => {
	const plan = new FaultPlan();
	let t: TestBroker;
	let broker: ServiceBroker;

	beforeAll(async () => {
		// The saga definition reads its step timeout when the schema is built: set it first.
		process.env.SAGA_STEP_TIMEOUT_MS = "300";
		resetConfig();
		t = await startTestBroker(["products", "inventory", "payments", "notifications"], {
			env: { SAGA_STEP_TIMEOUT_MS: "300", SAGA_DEADLINE_MS: "30000" },
			broker: { middlewares: [plan.middleware()] },
			extra: [
				createOrdersService({
					leaseMs: 600,
					recoveryIntervalMs: 150,
					faults: faultPoint,
					crash: () => {
						throw new SimulatedCrash("simulated crash");
					}
				})
			]
		});
		broker = t.broker;
	});
	afterAll(async () => t?.stop());
	afterEach(() => plan.clear());

	async function product(stock: number, price = 1_000): Promise<string> {
		const p: { id: string } = await broker.call(
			"products.create",
			{
				sku: `F-${crypto.randomBytes(4).toString("hex")}`,
				name: "Fault test item",
				price,
				stock
			},
			{ meta: { user: admin } }
		);
		return p.id;
	}

	async function order(
		productId: string,
		quantity = 1,
		token = "tok_visa"
	): Promise<{ order: Order; user: ReturnType<typeof customer> }> {
		const user = customer();
		const o: Order = await broker.call(
			"orders.create",
			{ items: [{ productId, quantity }], paymentMethod: token },
			{ meta: { user } }
		);
		return { order: o, user };
	}

	const settled = (id: string, timeoutMs = 20_000): Promise<Order> =>
		waitFor(
			() => broker.call<Order, { id: string }>("orders.get", { id }),
			o => o.status === "CONFIRMED" || o.status === "CANCELLED",
			timeoutMs
		);
	const stock = (productId: string) =>
		broker.call<{ onHand: number; reserved: number }, { productId: string }>("inventory.get", {
			productId
		});
	const payment = (orderId: string) =>
		broker.call<{ status: string; amount: number } | null, { orderId: string }>(
			"payments.get",
			{ orderId }
		);
	const sagaOf = async (orderId: string): Promise<SagaView> => {
		const page: { rows: SagaView[] } = await broker.call("orders.listSagas", { pageSize: 100 });
		return page.rows.find(s => s.orderId === orderId)!;
	};

	it("a lost charge answer is retried with the same key: one capture, CONFIRMED", async () => {
		const p = await product(10);
		plan.add("payments.charge", { kind: "loseAnswer", times: 1, holdMs: 700 });
		const { order: o } = await order(p, 2);
		expect(await settled(o.id)).toMatchObject({ status: "CONFIRMED" });
		expect(plan.injected.loseAnswer).toBeGreaterThanOrEqual(1);
		expect(await payment(o.id)).toMatchObject({ status: "CAPTURED", amount: 2_000 });
		const saga = await sagaOf(o.id);
		// The first attempt timed out at the caller although the charge had been made.
		expect(saga.errors.map(e => [e.step, e.type])).toEqual([
			["chargePayment", "REQUEST_TIMEOUT"]
		]);
		expect(await stock(p)).toMatchObject({ onHand: 8, reserved: 0 });
	});

	it("a lost reservation answer does not reserve twice", async () => {
		const p = await product(3);
		plan.add("inventory.reserve", { kind: "loseAnswer", times: 1, holdMs: 700 });
		const { order: o } = await order(p, 3);
		expect(await settled(o.id)).toMatchObject({ status: "CONFIRMED" });
		// Had the repeat reserved again, 6 units would have been asked of 3: OUT_OF_STOCK.
		expect(await stock(p)).toMatchObject({ onHand: 0, reserved: 0 });
	});

	it("a participant failing transiently N times, then succeeding: CONFIRMED with one charge", async () => {
		const p = await product(5);
		plan.add("payments.charge", { kind: "transient", times: 3 });
		const { order: o } = await order(p);
		expect(await settled(o.id)).toMatchObject({ status: "CONFIRMED" });
		expect(plan.injected.transient).toBe(3);
		expect(await payment(o.id)).toMatchObject({ status: "CAPTURED", amount: 1_000 });
		const saga = await sagaOf(o.id);
		expect(saga.errors.filter(e => e.type === "SERVICE_UNAVAILABLE")).toHaveLength(3);
	});

	it("an orchestrator crash after the reservation and before the charge is recovered: stock, payment and order agree", async () => {
		const p = await product(4);
		crashes.add("*:crash-before:chargePayment");
		const before = crashCount;
		const { order: o } = await order(p, 2);
		// The crash leaves the saga RUNNING with its lease; recovery resumes it once the lease expires.
		expect(await settled(o.id)).toMatchObject({ status: "CONFIRMED" });
		expect(crashCount).toBe(before + 1);
		expect(await payment(o.id)).toMatchObject({ status: "CAPTURED", amount: 2_000 });
		expect(await stock(p)).toMatchObject({ onHand: 2, reserved: 0 });
		const steps = (await broker.call("orders.getSaga", { id: (await sagaOf(o.id)).id })) as {
			steps: { stepName: string; status: string }[];
		};
		// The intent of the charge was written before the crash, without an outcome; the
		// recovered run invoked it again.
		expect(steps.steps.filter(s => s.stepName === "chargePayment").map(s => s.status)).toEqual([
			"STARTED",
			"SUCCEEDED"
		]);
	});

	it("an orchestrator crash right after a step's outcome is recorded does not repeat the step", async () => {
		const p = await product(4);
		crashes.add("*:crash-after:reserveStock");
		const { order: o } = await order(p, 1, "tok_chargeDeclined");
		expect(await settled(o.id)).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "PAYMENT_DECLINED"
		});
		expect(await stock(p)).toMatchObject({ onHand: 4, reserved: 0 });
		const steps = (await broker.call("orders.getSaga", { id: (await sagaOf(o.id)).id })) as {
			steps: { stepName: string; phase: string }[];
		};
		expect(
			steps.steps.filter(s => s.stepName === "reserveStock" && s.phase === "forward")
		).toHaveLength(1);
	});
});

describe("a participant down past the deadline", () => {
	const plan = new FaultPlan();
	let t: TestBroker;
	beforeAll(async () => {
		t = await startTestBroker(
			["products", "inventory", "payments", "notifications", "orders"],
			{
				env: { SAGA_STEP_TIMEOUT_MS: "300", SAGA_DEADLINE_MS: "1500" },
				broker: { middlewares: [plan.middleware()] }
			}
		);
	});
	afterAll(async () => t?.stop());

	it("the deadline passes while payments is down: CANCELLED / TIMEOUT, stock released", async () => {
		const broker = t.broker;
		const p: { id: string } = await broker.call(
			"products.create",
			{
				sku: `D-${crypto.randomBytes(4).toString("hex")}`,
				name: "Deadline item",
				price: 700,
				stock: 6
			},
			{ meta: { user: admin } }
		);
		plan.add("payments.charge", { kind: "down" });
		const created: Order = await broker.call(
			"orders.create",
			{ items: [{ productId: p.id, quantity: 2 }], paymentMethod: "tok_visa" },
			{ meta: { user: customer() } }
		);
		const done = await waitFor(
			() => broker.call<Order, { id: string }>("orders.get", { id: created.id }),
			o => o.status === "CONFIRMED" || o.status === "CANCELLED",
			20_000
		);
		expect(done).toMatchObject({ status: "CANCELLED", cancellationReason: "TIMEOUT" });
		// It kept retrying within the deadline instead of failing at once.
		expect(plan.injected.down).toBeGreaterThan(2);
		expect(await broker.call("inventory.get", { productId: p.id })).toMatchObject({
			onHand: 6,
			reserved: 0
		});
		const pay = (await broker.call("payments.get", { orderId: created.id })) as {
			status: string;
		} | null;
		expect(pay?.status ?? "NONE").not.toBe("CAPTURED");
	}, 30_000);
});

describe("two orchestrators racing for an orphaned saga", () => {
	const brokers: TestBroker[] = [];
	afterAll(async () => {
		for (const b of brokers) await b.stop().catch(() => undefined);
	});

	it("drives it once", async () => {
		const plan = new FaultPlan();
		// One broker with every service; the orders service never runs its own sagas (no recovery,
		// and the saga is created as if its node had died).
		const main = await startTestBroker(["products", "inventory", "payments", "notifications"], {
			env: { SAGA_DEADLINE_MS: "60000" },
			broker: { middlewares: [plan.middleware()] },
			extra: [
				createOrdersService({
					recoveryIntervalMs: 0,
					leaseMs: 2_500,
					// Its node "dies" right before the first step: the saga is orphaned with a lease.
					faults: p => p.kind === "crash-before" && p.step === "reserveStock",
					crash: () => {
						throw new SimulatedCrash("simulated crash");
					}
				})
			]
		});
		brokers.push(main);
		const p: { id: string } = await main.broker.call(
			"products.create",
			{
				sku: `R-${crypto.randomBytes(4).toString("hex")}`,
				name: "Race item",
				price: 500,
				stock: 10
			},
			{ meta: { user: admin } }
		);
		const placed: Order = await main.broker.call(
			"orders.create",
			{ items: [{ productId: p.id, quantity: 1 }], paymentMethod: "tok_visa" },
			{ meta: { user: customer() } }
		);
		const saga = await waitFor(
			async () => {
				const page: { rows: SagaView[] } = await main.broker.call("orders.listSagas", {});
				return page.rows.find(s => s.orderId === placed.id);
			},
			s => (s?.attempts ?? 0) > 0
		);
		if (!saga) throw new Error("no saga");
		const orphanedAt = new Date(saga.updatedAt).getTime() + 2_700; // its lease runs out
		// Two more orchestrators on the same databases, each with its own participant services
		// (no transporter here; they share the Postgres databases, as replicas would).
		const a = await startTestBroker(["inventory", "payments"], {
			prefix: main.prefix,
			broker: { middlewares: [plan.middleware()] },
			extra: [createOrdersService({ recoveryIntervalMs: 0, leaseMs: 5_000 })]
		});
		const b = await startTestBroker(["inventory", "payments"], {
			prefix: main.prefix,
			broker: { middlewares: [plan.middleware()] },
			extra: [createOrdersService({ recoveryIntervalMs: 0, leaseMs: 5_000 })]
		});
		brokers.push(a, b);
		await new Promise(r => setTimeout(r, Math.max(0, orphanedAt - Date.now())));
		type Orchestrator = {
			recoverSagas(): Promise<string[]>;
			runSaga(id: string): Promise<unknown>;
		};
		const ra = a.broker.getLocalService("orders") as unknown as Orchestrator;
		const rb = b.broker.getLocalService("orders") as unknown as Orchestrator;
		const [claimedA, claimedB] = await Promise.all([ra.recoverSagas(), rb.recoverSagas()]);
		// Exactly one of them claimed it.
		expect([...claimedA, ...claimedB].filter(id => id === saga.id)).toHaveLength(1);
		// Racing runSaga calls on the loser cannot drive it either.
		const loser = claimedA.includes(saga.id) ? rb : ra;
		expect(await loser.runSaga(saga.id)).toBeNull();
		await waitFor(
			async () =>
				(await main.broker.call("orders.getSaga", { id: saga.id })) as { status: string },
			s => s.status === "COMPLETED"
		);
		const detail = (await main.broker.call("orders.getSaga", { id: saga.id })) as {
			steps: { stepName: string; phase: string }[];
		};
		// reserveStock: the dead node's intent, then the winner's one run; the others once.
		expect(detail.steps.map(s => [s.stepName, s.phase])).toEqual([
			["reserveStock", "forward"],
			["reserveStock", "forward"],
			["chargePayment", "forward"],
			["confirmOrder", "forward"],
			["commitStock", "forward"]
		]);
		expect(await main.broker.call("orders.get", { id: placed.id })).toMatchObject({
			status: "CONFIRMED"
		});
		expect(plan.calls.get("payments.charge")).toBe(1);
		expect(plan.calls.get("inventory.reserve")).toBe(1);
	});
});
