/**
 * Admin refunds (returns) and the operator's view of orders that do not finish (issue 16, item 4
 * and "no order stays in a non-terminal status without an operator seeing it"), end to end on a
 * broker with every service on a real Postgres.
 *
 * - `orders.refund` (`POST /api/admin/orders/:id/refund`, REPL `orders refund <id>`): a CONFIRMED
 *   order's `order-refund` saga refunds the payment (captured − refunded = 0 in the ledger, the
 *   payment `REFUNDED`), with `restock` gives the units back on hand, ends the order `REFUNDED`
 *   and the customer gets one ORDER_REFUNDED e-mail; audited (who, when, note). Refused (409
 *   `ORDERS_NOT_REFUNDABLE`) unless CONFIRMED; a repeat (or a concurrent call) answers the first
 *   refund and nothing is refunded twice.
 * - `orders.adminGet` (`GET /api/admin/orders/:id`): the order with its payments, ledger entries,
 *   reservation, sagas and operators' actions.
 * - `orders.stuck` (`GET /api/admin/orders/stuck`, REPL `orders stuck`) and the
 *   `shop.orders.stuck{status}` gauge: orders in a non-terminal status past
 *   `ORDERS_STUCK_AFTER_MS`, a parked CONFIRMING order and a parked refund (REFUNDING) among them,
 *   until an operator redrives them.
 */
import crypto from "node:crypto";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Errors, type Middleware, type ServiceBroker } from "moleculer";
import { replCommands } from "../../app/repl-commands";
import type {
	Order,
	OrderRefundView,
	SagaView,
	StuckOrders
} from "../../services/orders/orders.model";
import { admin, customer, startTestBroker, waitFor, type TestBroker } from "../support/broker";
import type { AuthUser } from "../../platform/context";
import { api } from "../support/shop-process";
import { fastQuery } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";

/** Breaks one action (a non-retryable 500: a step after a pivot parks at once) while on. */
class Broken {
	readonly on = new Set<string>();
	middleware(): Middleware {
		return {
			name: "Broken",
			localAction:
				(next: (ctx: unknown) => Promise<unknown>, action: { name: string }) =>
				async (ctx: unknown): Promise<unknown> => {
					if (this.on.has(action.name))
						throw new Errors.MoleculerError("Injected: broken", 500, "BROKEN");
					return next(ctx);
				}
		} as unknown as Middleware;
	}
}

interface Level {
	onHand: number;
	reserved: number;
	available: number;
}

describe("admin refunds of confirmed orders, and stuck orders an operator sees", () => {
	const broken = new Broken();
	let t: TestBroker;
	let broker: ServiceBroker;

	beforeAll(async () => {
		t = await startTestBroker(
			["api", "users", "products", "inventory", "payments", "notifications", "orders"],
			{
				env: { ORDERS_STUCK_AFTER_MS: "1000", ORDERS_STUCK_CHECK_INTERVAL_MS: "200" },
				broker: {
					middlewares: [broken.middleware()],
					metrics: { enabled: true, reporter: [] }
				}
			}
		);
		broker = t.broker;
	}, 60_000);
	afterAll(async () => t?.stop());

	const product = async (stock: number, price: number): Promise<string> => {
		const p: { id: string } = await broker.call(
			"products.create",
			{ sku: `AR-${crypto.randomBytes(4).toString("hex")}`, name: "Returned", price, stock },
			{ meta: { user: admin } }
		);
		return p.id;
	};
	const order = (id: string) => broker.call<Order, { id: string }>("orders.get", { id });
	const level = (productId: string) =>
		broker.call<Level, { productId: string }>("inventory.get", { productId });
	const refund = (id: string, extra: { restock?: boolean; note?: string } = {}) =>
		broker.call<OrderRefundView, Record<string, unknown>>(
			"orders.refund",
			{ id, ...extra },
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
	const mails = (user: AuthUser, orderId: string) =>
		broker
			.call<
				{ rows: { orderId: string; kind: string; subject: string; body: string }[] },
				object
			>("notifications.list", { pageSize: 100 }, { meta: { user } })
			.then(p => p.rows.filter(n => n.orderId === orderId));
	const reached = (id: string, status: string, timeoutMs = 15_000) =>
		waitFor(
			() => order(id),
			o => o.status === status,
			timeoutMs
		);
	/** A CONFIRMED order of `quantity` units of `productId`. */
	const confirmedOrder = async (
		user: AuthUser,
		productId: string,
		quantity: number
	): Promise<Order> => {
		const o: Order = await broker.call(
			"orders.create",
			{ items: [{ productId, quantity }], paymentMethod: "tok_visa" },
			{ meta: { user } }
		);
		return reached(o.id, "CONFIRMED");
	};
	const stuckGauge = (status: string): number | undefined =>
		(
			broker.metrics.getMetric("shop.orders.stuck") as unknown as {
				get(labels: Record<string, string>): { value: number } | null;
			} | null
		)?.get({ status })?.value;
	const stuck = () =>
		broker.call<StuckOrders, object>("orders.stuck", { limit: 500 }, { meta: { user: admin } });

	it("with restock: refunded once in full, payment REFUNDED, stock back, order REFUNDED, one ORDER_REFUNDED e-mail, audited", async () => {
		const price = 2_249;
		const productId = await product(5, price);
		const user = customer();
		const o = await confirmedOrder(user, productId, 2);
		expect(await ledger(o.id)).toEqual({ captured: 2 * price, refunded: 0 });
		expect(await level(productId)).toMatchObject({ onHand: 3, reserved: 0 });

		const answer = await refund(o.id, { restock: true, note: "returned: wrong size" });
		expect(answer).toMatchObject({
			id: o.id,
			status: "REFUNDING",
			refund: {
				restock: true,
				amount: 2 * price,
				currency: "USD",
				actorId: admin.id,
				actor: admin.email,
				note: "returned: wrong size",
				sagaId: expect.any(String)
			}
		});
		expect(await reached(o.id, "REFUNDED")).toMatchObject({ total: 2 * price });
		const money = await ledger(o.id);
		expect(money).toEqual({ captured: 2 * price, refunded: 2 * price });
		expect(money.captured - money.refunded).toBe(0);
		expect(await broker.call("payments.get", { orderId: o.id })).toMatchObject({
			status: "REFUNDED"
		});
		expect(await level(productId)).toMatchObject({ onHand: 5, reserved: 0, available: 5 });
		expect(await broker.call("inventory.getReservation", { orderId: o.id })).toMatchObject({
			status: "RESTOCKED"
		});
		const sent = await waitFor(
			() => mails(user, o.id),
			m => m.some(n => n.kind === "ORDER_REFUNDED"),
			10_000
		);
		expect(sent.filter(n => n.kind === "ORDER_REFUNDED")).toEqual([
			expect.objectContaining({
				subject: `Order ${o.id.slice(0, 8)} refunded`,
				body: expect.stringContaining(`${((2 * price) / 100).toFixed(2)} USD`)
			})
		]);
		const saga = await broker.call<SagaView, { id: string }>(
			"orders.getSaga",
			{ id: answer.refund.sagaId },
			{ meta: { user: admin } }
		);
		expect(saga).toMatchObject({ name: "order-refund", status: "COMPLETED", orderId: o.id });

		// Idempotent: a repeat (another body too) answers the first refund; nothing moves twice.
		const again = await refund(o.id, { restock: false });
		expect(again).toMatchObject({
			status: "REFUNDED",
			refund: { sagaId: answer.refund.sagaId, restock: true, sagaStatus: "COMPLETED" }
		});
		expect(await ledger(o.id)).toEqual({ captured: 2 * price, refunded: 2 * price });
		expect(await level(productId)).toMatchObject({ onHand: 5 });
		await new Promise(r => setTimeout(r, 300));
		expect((await mails(user, o.id)).filter(n => n.kind === "ORDER_REFUNDED")).toHaveLength(1);

		// The admin's view: payment, ledger entries, reservation, both sagas, the audit.
		const view = await broker.call<Record<string, any>, { id: string }>(
			"orders.adminGet",
			{ id: o.id },
			{ meta: { user: admin } }
		);
		expect(view).toMatchObject({
			id: o.id,
			status: "REFUNDED",
			customerEmail: user.email,
			captured: 2 * price,
			refunded: 2 * price,
			payments: [expect.objectContaining({ status: "REFUNDED", amount: 2 * price })],
			reservation: expect.objectContaining({ status: "RESTOCKED" }),
			refund: expect.objectContaining({ sagaId: answer.refund.sagaId, restock: true })
		});
		expect(
			view.ledger.map((e: { kind: string; amount: number }) => [e.kind, e.amount])
		).toEqual([
			["CAPTURE", 2 * price],
			["REFUND", 2 * price]
		]);
		expect(view.sagas.map((s: SagaView) => [s.name, s.status])).toEqual([
			["order", "COMPLETED"],
			["order-refund", "COMPLETED"]
		]);
		expect(view.interventions).toEqual([
			{
				sagaId: answer.refund.sagaId,
				action: "REFUND",
				actorId: admin.id,
				actor: admin.email,
				note: "returned: wrong size",
				at: expect.any(String)
			}
		]);
	}, 60_000);

	it("without restock: refunded, the stock stays where the sale left it", async () => {
		const price = 999;
		const productId = await product(4, price);
		const o = await confirmedOrder(customer(), productId, 3);
		const answer = await refund(o.id);
		expect(answer.refund.restock).toBe(false);
		await reached(o.id, "REFUNDED");
		expect(await ledger(o.id)).toEqual({ captured: 3 * price, refunded: 3 * price });
		expect(await level(productId)).toMatchObject({ onHand: 1, reserved: 0 });
		expect(await broker.call("inventory.getReservation", { orderId: o.id })).toMatchObject({
			status: "COMMITTED"
		});
	}, 60_000);

	it("refuses what is not a CONFIRMED order (409 ORDERS_NOT_REFUNDABLE), customers (403), unknown orders (404)", async () => {
		const price = 500;
		const productId = await product(1, price);
		const user = customer();
		const declined: Order = await broker.call(
			"orders.create",
			{ items: [{ productId, quantity: 1 }], paymentMethod: "tok_chargeDeclined" },
			{ meta: { user } }
		);
		await reached(declined.id, "CANCELLED");
		await expect(refund(declined.id)).rejects.toMatchObject({
			type: "ORDERS_NOT_REFUNDABLE",
			code: 409,
			data: { status: "CANCELLED" }
		});
		expect(await order(declined.id)).toMatchObject({ status: "CANCELLED" });
		expect(await ledger(declined.id)).toEqual({ captured: 0, refunded: 0 });

		const o = await confirmedOrder(user, productId, 1);
		await expect(
			broker.call("orders.refund", { id: o.id }, { meta: { user } })
		).rejects.toMatchObject({ type: "AUTH_FORBIDDEN" });
		await expect(refund(crypto.randomUUID())).rejects.toMatchObject({
			type: "ORDERS_NOT_FOUND",
			code: 404
		});
		expect(await order(o.id)).toMatchObject({ status: "CONFIRMED" });
		expect(await ledger(o.id)).toEqual({ captured: price, refunded: 0 });
	}, 60_000);

	it("concurrent refunds of one order: one refund saga, refunded once, restocked once", async () => {
		const price = 1_500;
		const productId = await product(2, price);
		const o = await confirmedOrder(customer(), productId, 2);
		const answers = await Promise.all(
			Array.from({ length: 5 }, () => refund(o.id, { restock: true }))
		);
		expect(new Set(answers.map(a => a.refund.sagaId)).size).toBe(1);
		await reached(o.id, "REFUNDED");
		expect(await ledger(o.id)).toEqual({ captured: 2 * price, refunded: 2 * price });
		expect(await level(productId)).toMatchObject({ onHand: 2, reserved: 0 });
	}, 60_000);

	it("over REST: POST /api/admin/orders/:id/refund (admins only, Idempotency-Key), GET /api/admin/orders/:id", async () => {
		const server = (broker.getLocalService("api") as unknown as { server: Server }).server;
		const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
		const login = await api(base, "POST", "/api/users/login", {
			body: { email: "admin@example.com", password: process.env.ADMIN_PASSWORD }
		});
		expect(login.status).toBe(200);
		const adminToken: string = login.body.token;
		const shopper = await api(base, "POST", "/api/users/register", {
			body: {
				email: `ar-${crypto.randomBytes(4).toString("hex")}@example.com`,
				password: "correct horse battery staple",
				name: "Shopper"
			}
		});
		expect(shopper.status).toBe(201);
		const price = 3_000;
		const productId = await product(3, price);
		const o = await confirmedOrder(shopper.body.user, productId, 1);
		const path = `/api/admin/orders/${o.id}/refund`;

		const forbidden = await api(base, "POST", path, { token: shopper.body.token, body: {} });
		expect({ status: forbidden.status, type: forbidden.body.type }).toEqual({
			status: 403,
			type: "AUTH_FORBIDDEN"
		});
		const headers = { "Idempotency-Key": `refund-${o.id}` };
		const r = await api(base, "POST", path, {
			token: adminToken,
			headers,
			body: { restock: true, note: "REST" }
		});
		expect({ status: r.status, order: r.body.id, status2: r.body.status }).toEqual({
			status: 202,
			order: o.id,
			status2: "REFUNDING"
		});
		await reached(o.id, "REFUNDED");
		const repeat = await api(base, "POST", path, {
			token: adminToken,
			headers,
			body: { restock: true, note: "REST" }
		});
		expect({ status: repeat.status, saga: repeat.body.refund?.sagaId }).toEqual({
			status: 202,
			saga: r.body.refund.sagaId
		});
		expect(await ledger(o.id)).toEqual({ captured: price, refunded: price });
		expect(await level(productId)).toMatchObject({ onHand: 3 });

		const shown = await api(base, "GET", `/api/admin/orders/${o.id}`, { token: adminToken });
		expect(shown.status).toBe(200);
		expect(shown.body).toMatchObject({
			id: o.id,
			status: "REFUNDED",
			captured: price,
			refunded: price,
			interventions: [
				expect.objectContaining({
					action: "REFUND",
					actorId: login.body.user.id,
					actor: "admin@example.com",
					note: "REST"
				})
			]
		});
		expect(shown.body.ledger).toHaveLength(2);
		const notAdmin = await api(base, "GET", `/api/admin/orders/${o.id}`, {
			token: shopper.body.token
		});
		expect(notAdmin.status).toBe(403);

		const other = await confirmedOrder(shopper.body.user, productId, 1);
		await broker.call("orders.refund", { id: other.id }, { meta: { user: admin } });
		await reached(other.id, "REFUNDED");
		const cancelled: Order = await broker.call(
			"orders.create",
			{ items: [{ productId, quantity: 1 }], paymentMethod: "tok_chargeDeclined" },
			{ meta: { user: shopper.body.user } }
		);
		await reached(cancelled.id, "CANCELLED");
		const refused = await api(base, "POST", `/api/admin/orders/${cancelled.id}/refund`, {
			token: adminToken,
			body: {}
		});
		expect({ status: refused.status, type: refused.body.type }).toEqual({
			status: 409,
			type: "ORDERS_NOT_REFUNDABLE"
		});
	}, 60_000);

	it("from the REPL: orders refund <id> --restock --note, orders show <id>; audited as the REPL's operator", async () => {
		const cmd = replCommands.find(c => c.command.startsWith("orders "))!;
		const printed: string[] = [];
		const log = jest.spyOn(console, "log").mockImplementation((...a: unknown[]) => {
			printed.push(a.map(String).join(" "));
		});
		const price = 1_200;
		const productId = await product(2, price);
		try {
			const o = await confirmedOrder(customer(), productId, 1);
			await cmd.action(broker, {
				verb: "refund",
				id: o.id,
				options: { restock: true, note: "from the REPL" }
			});
			await reached(o.id, "REFUNDED");
			await cmd.action(broker, { verb: "show", id: o.id, options: {} });
			expect(printed.join("\n")).not.toMatch(/>> /); // no error printed
			expect(printed.join("\n")).toContain(o.id);
			expect(await ledger(o.id)).toEqual({ captured: price, refunded: price });
			expect(await level(productId)).toMatchObject({ onHand: 2 });
			const view = await broker.call<Record<string, any>, { id: string }>(
				"orders.adminGet",
				{ id: o.id },
				{ meta: { user: admin } }
			);
			expect(view.interventions).toEqual([
				expect.objectContaining({ action: "REFUND", actorId: null, note: "from the REPL" })
			]);
			expect(view.interventions[0].actor).toMatch(/^repl:.+@.+/);
		} finally {
			log.mockRestore();
		}
	}, 60_000);

	it("stuck orders: a parked CONFIRMING order and a parked refund are counted (gauge), listed (REST, REPL) until redriven", async () => {
		const price = 800;
		const productId = await product(3, price);
		const user = customer();
		const listSaga = (orderId: string, name: string) =>
			waitFor(
				() =>
					broker.call<{ rows: SagaView[] }, Record<string, unknown>>(
						"orders.listSagas",
						{ status: "FAILED", pageSize: 100 },
						{ meta: { user: admin } }
					),
				p => p.rows.some(s => s.orderId === orderId && s.name === name),
				15_000
			).then(p => p.rows.find(s => s.orderId === orderId && s.name === name)!);

		// A refund whose payments.refund is broken: past its pivot, it parks (order REFUNDING).
		const refunded = await confirmedOrder(user, productId, 1);
		broken.on.add("payments.refund");
		let refundSaga: SagaView;
		try {
			await refund(refunded.id, { restock: true });
			refundSaga = await listSaga(refunded.id, "order-refund");
		} finally {
			broken.on.delete("payments.refund");
		}
		// An order whose commit is broken: parked after its pivot (CONFIRMING).
		broken.on.add("inventory.commit");
		let orderSaga: SagaView;
		let parked: Order;
		try {
			parked = await broker.call(
				"orders.create",
				{ items: [{ productId, quantity: 1 }], paymentMethod: "tok_visa" },
				{ meta: { user } }
			);
			orderSaga = await listSaga(parked.id, "order");
		} finally {
			broken.on.delete("inventory.commit");
		}
		expect(await order(refunded.id)).toMatchObject({ status: "REFUNDING" });
		expect(await order(parked.id)).toMatchObject({ status: "CONFIRMING" });

		// Past ORDERS_STUCK_AFTER_MS (1 s): listed, and the gauge counts them.
		const seen = await waitFor(
			stuck,
			s => [refunded.id, parked.id].every(id => s.rows.some(r => r.id === id)),
			10_000
		);
		expect(seen.thresholdMs).toBe(1000);
		expect(seen.rows.find(r => r.id === refunded.id)).toMatchObject({
			status: "REFUNDING",
			sagaId: refundSaga.id,
			sagaName: "order-refund",
			sagaStatus: "FAILED"
		});
		expect(seen.rows.find(r => r.id === parked.id)).toMatchObject({
			status: "CONFIRMING",
			sagaId: orderSaga.id,
			sagaStatus: "FAILED"
		});
		expect(seen.counts.REFUNDING).toBeGreaterThanOrEqual(1);
		expect(seen.counts.CONFIRMING).toBeGreaterThanOrEqual(1);
		const gauged = await waitFor(
			async () => [stuckGauge("REFUNDING"), stuckGauge("CONFIRMING")],
			([r, c]) => (r ?? 0) >= 1 && (c ?? 0) >= 1,
			5_000
		);
		expect(gauged).toEqual([seen.counts.REFUNDING, seen.counts.CONFIRMING]);
		expect(stuckGauge("PENDING")).toBe(seen.counts.PENDING);

		// Over REST and from the REPL.
		const server = (broker.getLocalService("api") as unknown as { server: Server }).server;
		const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
		const login = await api(base, "POST", "/api/users/login", {
			body: { email: "admin@example.com", password: process.env.ADMIN_PASSWORD }
		});
		const listed = await api(base, "GET", "/api/admin/orders/stuck", {
			token: login.body.token
		});
		expect(listed.status).toBe(200);
		expect(listed.body.rows.map((r: Order) => r.id)).toEqual(
			expect.arrayContaining([refunded.id, parked.id])
		);
		const cmd = replCommands.find(c => c.command.startsWith("orders "))!;
		const printed: string[] = [];
		const log = jest.spyOn(console, "log").mockImplementation((...a: unknown[]) => {
			printed.push(a.map(String).join(" "));
		});
		try {
			await cmd.action(broker, { verb: "stuck", options: {} });
		} finally {
			log.mockRestore();
		}
		const out = printed.join("\n");
		expect(out).not.toMatch(/>> /);
		expect(out).toMatch(new RegExp(`${refunded.id}.*REFUNDING.*${refundSaga.id}.*FAILED`));
		expect(out).toMatch(new RegExp(`${parked.id}.*CONFIRMING.*${orderSaga.id}.*FAILED`));

		// Redriven, both finish and leave the list; the gauge follows.
		for (const id of [refundSaga.id, orderSaga.id])
			await broker.call("orders.redriveSaga", { id }, { meta: { user: admin } });
		await reached(refunded.id, "REFUNDED");
		await reached(parked.id, "CONFIRMED");
		expect(await ledger(refunded.id)).toEqual({ captured: price, refunded: price });
		const after = await stuck();
		expect(after.rows.map(r => r.id)).not.toContain(refunded.id);
		expect(after.rows.map(r => r.id)).not.toContain(parked.id);
		await waitFor(
			async () => [stuckGauge("REFUNDING"), stuckGauge("CONFIRMING")],
			([r, c]) => r === after.counts.REFUNDING && c === after.counts.CONFIRMING,
			5_000
		);
		expect(after.counts.REFUNDING).toBe(seen.counts.REFUNDING! - 1);
		expect(after.counts.CONFIRMING).toBe(seen.counts.CONFIRMING! - 1);
	}, 90_000);
});
