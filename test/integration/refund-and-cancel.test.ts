/**
 * The way out of a saga parked after its pivot (issue 16, item 3), end to end on a broker with
 * every service on a real Postgres: the order was charged, its commit kept failing, the saga is
 * parked (`FAILED`) with the order `CONFIRMING`. An operator either
 * - refunds and cancels it (`orders.refundAndCancelSaga`, REPL `saga refund-cancel <id>`): the
 *   payment is refunded (captured − refunded = 0 in the ledger), the stock released, the order
 *   `CANCELLED` / `OPERATOR_REFUNDED`, the customer notified; a repeat changes nothing; or
 * - redrives it forward (`orders.redriveSaga`, REPL `saga redrive <id>`): `CONFIRMED`.
 * Both are refused unless the saga is parked, and both are audited (who, when). Over REST
 * (`POST /api/admin/sagas/:id/refund-and-cancel`, admins only) and from the REPL too.
 */
import crypto from "node:crypto";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Errors, type Middleware, type ServiceBroker } from "moleculer";
import { replCommands } from "../../app/repl-commands";
import type { Order, SagaIntervention, SagaView } from "../../services/orders/orders.model";
import { admin, customer, startTestBroker, waitFor, type TestBroker } from "../support/broker";
import type { AuthUser } from "../../platform/context";
import { api } from "../support/shop-process";
import { fastQuery } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";

/** `inventory.commit` broken (a non-retryable 500: past its pivot the saga parks at once) while on. */
class BrokenCommit {
	on = false;
	middleware(): Middleware {
		return {
			name: "BrokenCommit",
			localAction: (next: (ctx: unknown) => Promise<unknown>, action: { name: string }) => {
				if (action.name !== "inventory.commit") return next;
				return async (ctx: unknown): Promise<unknown> => {
					if (this.on) throw new Errors.MoleculerError("Injected: broken", 500, "BROKEN");
					return next(ctx);
				};
			}
		} as unknown as Middleware;
	}
}

interface Level {
	onHand: number;
	reserved: number;
	available: number;
}

describe("a saga parked after its pivot: refund and cancel, or redrive forward", () => {
	const broken = new BrokenCommit();
	let t: TestBroker;
	let broker: ServiceBroker;

	beforeAll(async () => {
		t = await startTestBroker(
			["api", "users", "products", "inventory", "payments", "notifications", "orders"],
			{ broker: { middlewares: [broken.middleware()] } }
		);
		broker = t.broker;
	}, 60_000);
	afterAll(async () => t?.stop());

	const product = async (stock: number, price: number): Promise<string> => {
		const p: { id: string } = await broker.call(
			"products.create",
			{ sku: `RC-${crypto.randomBytes(4).toString("hex")}`, name: "Parked", price, stock },
			{ meta: { user: admin } }
		);
		return p.id;
	};
	const order = (id: string) => broker.call<Order, { id: string }>("orders.get", { id });
	const level = (productId: string) =>
		broker.call<Level, { productId: string }>("inventory.get", { productId });
	const saga = (id: string) =>
		broker.call<SagaView & { interventions: SagaIntervention[] }, { id: string }>(
			"orders.getSaga",
			{ id },
			{ meta: { user: admin } }
		);
	/** Net money of an order in the payments ledger, in cents: captured and refunded. */
	const ledger = async (orderId: string): Promise<{ captured: number; refunded: number }> => {
		const { db } = broker.getLocalService("payments") as unknown as { db: ShopDatabase };
		const [rows] = (await fastQuery(
			db,
			"SELECT kind, sum(amount)::int AS total FROM ledger_entries WHERE order_id = $1 GROUP BY kind",
			{ bind: [orderId] }
		)) as [{ kind: string; total: number }[], unknown];
		return {
			captured: rows.find(r => r.kind === "CAPTURE")?.total ?? 0,
			refunded: rows.find(r => r.kind === "REFUND")?.total ?? 0
		};
	};
	/** Places an order whose commit is broken: it ends parked after its pivot. */
	const parkedOrder = async (
		user: AuthUser,
		productId: string,
		quantity: number
	): Promise<{ order: Order; sagaId: string }> => {
		broken.on = true;
		try {
			const o: Order = await broker.call(
				"orders.create",
				{ items: [{ productId, quantity }], paymentMethod: "tok_visa" },
				{ meta: { user } }
			);
			const page = await waitFor(
				() =>
					broker.call<{ rows: SagaView[] }, Record<string, unknown>>(
						"orders.listSagas",
						{ status: "FAILED", pageSize: 100 },
						{ meta: { user: admin } }
					),
				p => p.rows.some(s => s.orderId === o.id),
				10_000
			);
			expect(await order(o.id)).toMatchObject({ status: "CONFIRMING" });
			return { order: o, sagaId: page.rows.find(s => s.orderId === o.id)!.id };
		} finally {
			broken.on = false;
		}
	};
	const settled = (id: string) =>
		waitFor(
			() => order(id),
			o => o.status === "CONFIRMED" || o.status === "CANCELLED",
			15_000
		);

	it("refund and cancel: refunded once, stock released, CANCELLED / OPERATOR_REFUNDED, customer notified, audited", async () => {
		const price = 4_499;
		const productId = await product(3, price);
		const user = customer();
		const { order: o, sagaId } = await parkedOrder(user, productId, 2);
		expect(await ledger(o.id)).toEqual({ captured: 2 * price, refunded: 0 });
		expect(await level(productId)).toMatchObject({ onHand: 3, reserved: 2 });

		// Customers may not; an unknown saga is 404.
		await expect(
			broker.call("orders.refundAndCancelSaga", { id: sagaId }, { meta: { user } })
		).rejects.toMatchObject({ type: "AUTH_FORBIDDEN" });
		await expect(
			broker.call(
				"orders.refundAndCancelSaga",
				{ id: crypto.randomUUID() },
				{ meta: { user: admin } }
			)
		).rejects.toMatchObject({ type: "SAGAS_NOT_FOUND", code: 404 });

		const answer: SagaView = await broker.call(
			"orders.refundAndCancelSaga",
			{ id: sagaId, note: "the warehouse lost the parcel" },
			{ meta: { user: admin } }
		);
		expect(answer).toMatchObject({ id: sagaId, status: "COMPENSATING" });
		expect(await settled(o.id)).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "OPERATOR_REFUNDED"
		});
		expect(await ledger(o.id)).toEqual({ captured: 2 * price, refunded: 2 * price });
		expect(await broker.call("payments.get", { orderId: o.id })).toMatchObject({
			status: "REFUNDED"
		});
		expect(await level(productId)).toMatchObject({ onHand: 3, reserved: 0, available: 3 });
		expect(await broker.call("inventory.getReservation", { orderId: o.id })).toMatchObject({
			status: "RELEASED"
		});
		const mail = await waitFor(
			() =>
				broker.call<{ rows: { orderId: string; kind: string; body: string }[] }, object>(
					"notifications.list",
					{},
					{ meta: { user } }
				),
			p => p.rows.some(n => n.orderId === o.id),
			10_000
		);
		expect(mail.rows.filter(n => n.orderId === o.id)).toEqual([
			expect.objectContaining({ kind: "ORDER_CANCELLED" })
		]);
		const after = await saga(sagaId);
		expect(after.status).toBe("COMPENSATED");
		expect(after.interventions).toEqual([
			{
				action: "REFUND_AND_CANCEL",
				actorId: admin.id,
				actor: admin.email,
				note: "the warehouse lost the parcel",
				at: expect.any(String)
			}
		]);
		expect(Date.now() - Date.parse(after.interventions[0]!.at)).toBeLessThan(60_000);

		// Idempotent: a repeat answers the saga as it is; nothing is refunded twice.
		const again: SagaView = await broker.call(
			"orders.refundAndCancelSaga",
			{ id: sagaId },
			{ meta: { user: admin } }
		);
		expect(again).toMatchObject({ id: sagaId, status: "COMPENSATED" });
		expect(await ledger(o.id)).toEqual({ captured: 2 * price, refunded: 2 * price });
		expect((await saga(sagaId)).interventions).toHaveLength(1);
		// And it is not parked: no redrive.
		await expect(
			broker.call("orders.redriveSaga", { id: sagaId }, { meta: { user: admin } })
		).rejects.toMatchObject({ type: "SAGAS_NOT_PARKED", code: 409 });
	}, 60_000);

	it("redrive forward: CONFIRMED, captured once, stock committed, audited; refund and cancel then refused", async () => {
		const price = 1_250;
		const productId = await product(2, price);
		const { order: o, sagaId } = await parkedOrder(customer(), productId, 1);
		const answer: SagaView = await broker.call(
			"orders.redriveSaga",
			{ id: sagaId },
			{ meta: { user: admin } }
		);
		expect(answer).toMatchObject({ status: "RUNNING" });
		expect(await settled(o.id)).toMatchObject({ status: "CONFIRMED" });
		expect(await ledger(o.id)).toEqual({ captured: price, refunded: 0 });
		expect(await level(productId)).toMatchObject({ onHand: 1, reserved: 0 });
		expect(await broker.call("inventory.getReservation", { orderId: o.id })).toMatchObject({
			status: "COMMITTED"
		});
		const after = await saga(sagaId);
		expect(after.interventions).toEqual([
			expect.objectContaining({ action: "REDRIVE", actorId: admin.id, actor: admin.email })
		]);
		await expect(
			broker.call("orders.refundAndCancelSaga", { id: sagaId }, { meta: { user: admin } })
		).rejects.toMatchObject({ type: "SAGAS_NOT_PARKED", code: 409 });
	}, 60_000);

	it("refuses to refund and cancel an order whose stock was committed (its answer lost): SAGAS_STOCK_COMMITTED; a redrive confirms it", async () => {
		const price = 700;
		const productId = await product(1, price);
		const { order: o, sagaId } = await parkedOrder(customer(), productId, 1);
		// The commit took effect but the saga never heard (e.g. inventory hung after committing).
		await broker.call("inventory.commit", { orderId: o.id });
		await expect(
			broker.call("orders.refundAndCancelSaga", { id: sagaId }, { meta: { user: admin } })
		).rejects.toMatchObject({ type: "SAGAS_STOCK_COMMITTED", code: 409 });
		expect(await ledger(o.id)).toEqual({ captured: price, refunded: 0 });
		expect((await saga(sagaId)).status).toBe("FAILED");
		await broker.call("orders.redriveSaga", { id: sagaId }, { meta: { user: admin } });
		expect(await settled(o.id)).toMatchObject({ status: "CONFIRMED" });
		expect(await level(productId)).toMatchObject({ onHand: 0, reserved: 0 });
	}, 60_000);

	it("over REST: POST /api/admin/sagas/:id/refund-and-cancel, admins only; the saga shows who", async () => {
		const server = (broker.getLocalService("api") as unknown as { server: Server }).server;
		const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
		const login = await api(base, "POST", "/api/users/login", {
			body: { email: "admin@example.com", password: process.env.ADMIN_PASSWORD }
		});
		expect(login.status).toBe(200);
		const adminToken: string = login.body.token;
		const shopper = await api(base, "POST", "/api/users/register", {
			body: {
				email: `rc-${crypto.randomBytes(4).toString("hex")}@example.com`,
				password: "correct horse battery staple",
				name: "Shopper"
			}
		});
		expect(shopper.status).toBe(201);
		const price = 990;
		const productId = await product(1, price);
		const { order: o, sagaId } = await parkedOrder(shopper.body.user, productId, 1);
		const path = `/api/admin/sagas/${sagaId}/refund-and-cancel`;

		const forbidden = await api(base, "POST", path, { token: shopper.body.token });
		expect({ status: forbidden.status, type: forbidden.body.type }).toEqual({
			status: 403,
			type: "AUTH_FORBIDDEN"
		});
		const r = await api(base, "POST", path, { token: adminToken, body: { note: "REST" } });
		expect({ status: r.status, saga: r.body.id }).toEqual({ status: 202, saga: sagaId });
		expect(await settled(o.id)).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "OPERATOR_REFUNDED"
		});
		expect(await ledger(o.id)).toEqual({ captured: price, refunded: price });
		const shown = await api(base, "GET", `/api/admin/sagas/${sagaId}`, { token: adminToken });
		expect(shown.body.interventions).toEqual([
			expect.objectContaining({
				action: "REFUND_AND_CANCEL",
				actorId: login.body.user.id,
				actor: "admin@example.com",
				note: "REST"
			})
		]);
		const repeat = await api(base, "POST", path, { token: adminToken });
		expect(repeat.status).toBe(202);
		expect(await ledger(o.id)).toEqual({ captured: price, refunded: price });
	}, 60_000);

	it("from the REPL: saga refund-cancel <id> and saga redrive <id>, audited as the REPL's operator", async () => {
		const sagaCmd = replCommands.find(c => c.command.startsWith("saga "))!;
		const printed: string[] = [];
		const log = jest.spyOn(console, "log").mockImplementation((...a: unknown[]) => {
			printed.push(a.map(String).join(" "));
		});
		const price = 800;
		const productId = await product(2, price);
		try {
			const first = await parkedOrder(customer(), productId, 1);
			const second = await parkedOrder(customer(), productId, 1);
			await sagaCmd.action(broker, {
				verb: "refund-cancel",
				id: first.sagaId,
				options: { note: "from the REPL" }
			});
			await sagaCmd.action(broker, { verb: "redrive", id: second.sagaId, options: {} });
			expect(printed.join("\n")).not.toMatch(/>> /); // no error printed
			expect(await settled(first.order.id)).toMatchObject({
				status: "CANCELLED",
				cancellationReason: "OPERATOR_REFUNDED"
			});
			expect(await settled(second.order.id)).toMatchObject({ status: "CONFIRMED" });
			expect(await ledger(first.order.id)).toEqual({ captured: price, refunded: price });
			expect(await level(productId)).toMatchObject({ onHand: 1, reserved: 0 });
			const audit = [
				...(await saga(first.sagaId)).interventions,
				...(await saga(second.sagaId)).interventions
			];
			expect(audit.map(a => [a.action, a.actorId, a.note])).toEqual([
				["REFUND_AND_CANCEL", null, "from the REPL"],
				["REDRIVE", null, null]
			]);
			for (const a of audit) expect(a.actor).toMatch(/^repl:.+@.+/);
		} finally {
			log.mockRestore();
		}
	}, 60_000);
});
