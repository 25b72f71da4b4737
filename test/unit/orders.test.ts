/**
 * The orders service with the REAL products, inventory, payments and notifications services in
 * one broker, on a real Postgres: the order saga end to end, as customers and admins call it.
 */
import crypto from "node:crypto";
import type { ServiceBroker } from "moleculer";
import type { AuthUser } from "../../platform/context";
import type { Order, SagaView } from "../../services/orders/orders.model";
import type { Payment } from "../../services/payments/payments.model";
import type { Product } from "../../services/products/products.model";
import { admin, customer, startTestBroker, waitFor, type TestBroker } from "../support/broker";
import { retryOverloadedCall } from "../support/overload-retry";
import { fastQuery } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";

interface Page<T> {
	rows: T[];
	total: number;
}

interface Level {
	productId: string;
	onHand: number;
	reserved: number;
	available: number;
}

type Items = { productId: string; quantity: number }[];

describe("orders", () => {
	let t: TestBroker;
	let broker: ServiceBroker;

	beforeAll(async () => {
		t = await startTestBroker(["products", "inventory", "payments", "orders", "notifications"]);
		broker = t.broker;
	});
	afterAll(async () => t?.stop());

	/** `broker.call` as `user`; also answers the status code the gateway would send. */
	async function as<T>(
		user: AuthUser | null,
		action: string,
		params: object,
		extra: Record<string, unknown> = {}
	): Promise<T> {
		return broker.call(action, params, { meta: { user, ...extra } });
	}

	async function newProduct(
		stock: number,
		price = 1_250,
		more: Record<string, unknown> = {}
	): Promise<Product> {
		const sku = `T-${crypto.randomBytes(5).toString("hex")}`;
		return as<Product>(admin, "products.create", {
			sku,
			name: `Test ${sku}`,
			price,
			stock,
			...more
		});
	}

	async function place(
		user: AuthUser,
		items: Items,
		paymentMethod = "tok_visa",
		idempotencyKey?: string
	): Promise<Order> {
		// A refusal by the node's adaptive limit (ORDERS_OVERLOADED: 50 at once are more than it
		// admits) is sent again after its Retry-After, as a client does; nothing was stored.
		return retryOverloadedCall(() =>
			as<Order>(
				user,
				"orders.create",
				{ items, paymentMethod },
				idempotencyKey ? { idempotencyKey } : {}
			)
		);
	}

	const getOrder = (user: AuthUser, id: string) => as<Order>(user, "orders.get", { id });

	/** Waits for the order's saga to end; fails the test if it does not in time. */
	async function settled(user: AuthUser, id: string): Promise<Order> {
		const o = await waitFor(
			() => getOrder(user, id),
			x => x.status === "CONFIRMED" || x.status === "CANCELLED",
			15_000
		);
		expect(["CONFIRMED", "CANCELLED"]).toContain(o.status);
		return o;
	}

	const stockOf = (productId: string) =>
		broker.call<Level, { productId: string }>("inventory.get", { productId });
	const paymentOf = (orderId: string) =>
		broker.call<Payment | null, { orderId: string }>("payments.get", { orderId });

	async function sagaOf(orderId: string, status?: string): Promise<SagaView | undefined> {
		const page = await as<Page<SagaView>>(admin, "orders.listSagas", {
			pageSize: 100,
			...(status ? { status } : {})
		});
		return page.rows.find(s => s.orderId === orderId);
	}

	/** A service's database (DbMixin's `this.db`). */
	const dbOf = (service: string): ShopDatabase =>
		(broker.getLocalService(service) as unknown as { db: ShopDatabase }).db;

	/**
	 * Runs `fn` while holding a real row lock on a product's stock, so `inventory.reserve` for it
	 * waits; the lock goes when `fn` ends (committed, or rolled back when it throws).
	 */
	async function withStockLocked<T>(productId: string, fn: () => Promise<T>): Promise<T> {
		const db = dbOf("inventory");
		return db.transaction(async tx => {
			await fastQuery(db, "SELECT 1 FROM stock WHERE product_id = $1 FOR UPDATE", {
				bind: [productId],
				transaction: tx
			});
			return fn();
		});
	}

	it("takes an order at 202 PENDING priced from the catalog, then confirms it: stock, payment, notification", async () => {
		const p = await newProduct(10, 1_999);
		const user = customer();
		const meta: Record<string, unknown> = { user };
		const order: Order = await broker.call(
			"orders.create",
			{ items: [{ productId: p.id, quantity: 3 }], paymentMethod: "tok_visa" },
			{ meta }
		);
		expect(meta.$statusCode).toBe(202);
		expect(order).toMatchObject({
			status: "PENDING",
			userId: user.id,
			total: 5_997,
			currency: "USD",
			paymentMethod: "tok_visa",
			cancellationReason: null,
			cancelRequested: false,
			items: [
				{
					productId: p.id,
					sku: p.sku,
					name: p.name,
					quantity: 3,
					unitPrice: 1_999,
					lineTotal: 5_997
				}
			]
		});

		const done = await settled(user, order.id);
		expect(done).toMatchObject({
			id: order.id,
			status: "CONFIRMED",
			cancellationReason: null,
			total: 5_997
		});
		expect(await stockOf(p.id)).toEqual({
			productId: p.id,
			onHand: 7,
			reserved: 0,
			available: 7
		});
		expect(await paymentOf(order.id)).toMatchObject({
			status: "CAPTURED",
			amount: 5_997,
			currency: "USD",
			method: "tok_visa"
		});
		expect(await broker.call("inventory.getReservation", { orderId: order.id })).toMatchObject({
			status: "COMMITTED"
		});

		const notes = await waitFor(
			() =>
				as<Page<{ orderId: string; kind: string; subject: string }>>(
					user,
					"notifications.list",
					{}
				),
			n => n.total > 0
		);
		expect(notes.rows).toEqual([
			expect.objectContaining({ orderId: order.id, kind: "ORDER_CONFIRMED" })
		]);
		expect(await sagaOf(order.id)).toMatchObject({
			status: "COMPLETED",
			failureReason: null,
			errors: [],
			currentStep: 4
		});
	});

	it("rejects client-sent prices, totals and statuses (strict params) with VALIDATION_ERROR 422", async () => {
		const p = await newProduct(5);
		const user = customer();
		const bad = [
			{ items: [{ productId: p.id, quantity: 1, price: 1 }], paymentMethod: "tok_visa" },
			{ items: [{ productId: p.id, quantity: 1, unitPrice: 1 }], paymentMethod: "tok_visa" },
			{ items: [{ productId: p.id, quantity: 1 }], paymentMethod: "tok_visa", total: 1 },
			{
				items: [{ productId: p.id, quantity: 1 }],
				paymentMethod: "tok_visa",
				status: "CONFIRMED"
			}
		];
		for (const params of bad)
			await expect(as(user, "orders.create", params)).rejects.toMatchObject({
				type: "VALIDATION_ERROR",
				code: 422
			});
		expect((await as<Page<Order>>(user, "orders.list", {})).total).toBe(0);
		expect(await stockOf(p.id)).toMatchObject({ onHand: 5, reserved: 0 });
	});

	it("cancels an order beyond the stock: OUT_OF_STOCK, stock unchanged, nothing charged", async () => {
		const p = await newProduct(3);
		const user = customer();
		const order = await place(user, [{ productId: p.id, quantity: 5 }]);
		expect(order.status).toBe("PENDING");
		expect(await settled(user, order.id)).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "OUT_OF_STOCK"
		});
		expect(await stockOf(p.id)).toEqual({
			productId: p.id,
			onHand: 3,
			reserved: 0,
			available: 3
		});
		// The charge step never started, so payments never heard of the order.
		expect(await paymentOf(order.id)).toBeNull();
		const notes = await waitFor(
			() => as<Page<{ orderId: string; kind: string }>>(user, "notifications.list", {}),
			n => n.total > 0
		);
		expect(notes.rows).toEqual([
			expect.objectContaining({ orderId: order.id, kind: "ORDER_CANCELLED" })
		]);
	});

	it("cancels a declined card's order (PAYMENT_DECLINED) and releases its stock", async () => {
		const p = await newProduct(4);
		const user = customer();
		const order = await place(user, [{ productId: p.id, quantity: 2 }], "tok_chargeDeclined");
		expect(await settled(user, order.id)).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "PAYMENT_DECLINED"
		});
		expect(await stockOf(p.id)).toEqual({
			productId: p.id,
			onHand: 4,
			reserved: 0,
			available: 4
		});
		expect(await paymentOf(order.id)).toMatchObject({
			status: "DECLINED",
			declineCode: "card_declined"
		});
		expect(await broker.call("inventory.getReservation", { orderId: order.id })).toMatchObject({
			status: "RELEASED"
		});
		expect(await sagaOf(order.id, "COMPENSATED")).toMatchObject({
			failureReason: "PAYMENT_DECLINED",
			errors: [
				expect.objectContaining({ step: "chargePayment", type: "PAYMENTS_CARD_DECLINED" })
			]
		});
	});

	it("cancels an order paid with an unknown token: PAYMENT_METHOD_INVALID", async () => {
		const p = await newProduct(4);
		const user = customer();
		const order = await place(user, [{ productId: p.id, quantity: 1 }], "tok_nope");
		expect(await settled(user, order.id)).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "PAYMENT_METHOD_INVALID"
		});
		expect(await stockOf(p.id)).toMatchObject({ onHand: 4, reserved: 0 });
		expect((await paymentOf(order.id))?.status).not.toBe("CAPTURED");
	});

	it("answers a repeated Idempotency-Key with the same order, even when the repeats race", async () => {
		const p = await newProduct(10);
		const user = customer();
		const key = crypto.randomUUID();
		const first = await place(user, [{ productId: p.id, quantity: 1 }], "tok_visa", key);
		const again = await place(user, [{ productId: p.id, quantity: 1 }], "tok_visa", key);
		expect(again.id).toBe(first.id);

		const raceKey = crypto.randomUUID();
		const raced = await Promise.all(
			Array.from({ length: 5 }, () =>
				place(user, [{ productId: p.id, quantity: 2 }], "tok_visa", raceKey)
			)
		);
		expect(new Set(raced.map(o => o.id)).size).toBe(1);

		const list = await as<Page<Order>>(user, "orders.list", {});
		expect(list.total).toBe(2);
		expect(list.rows.map(o => o.id).sort()).toEqual([first.id, raced[0]!.id].sort());
		// Another customer's identical key is another order.
		const someoneElse = customer();
		const other = await place(someoneElse, [{ productId: p.id, quantity: 1 }], "tok_visa", key);
		expect(other.id).not.toBe(first.id);
		for (const o of [first, raced[0]!])
			expect((await settled(user, o.id)).status).toBe("CONFIRMED");
		expect((await settled(someoneElse, other.id)).status).toBe("CONFIRMED");
		// One reservation per order: 1 + 2 units, and 1 for the other customer.
		expect(await stockOf(p.id)).toMatchObject({ onHand: 6, reserved: 0 });
	});

	it("refuses an Idempotency-Key reused with another body: ORDERS_IDEMPOTENCY_KEY_REUSED 422", async () => {
		const p = await newProduct(10);
		const user = customer();
		const key = crypto.randomUUID();
		await place(user, [{ productId: p.id, quantity: 1 }], "tok_visa", key);
		await expect(
			place(user, [{ productId: p.id, quantity: 2 }], "tok_visa", key)
		).rejects.toMatchObject({
			type: "ORDERS_IDEMPOTENCY_KEY_REUSED",
			code: 422
		});
		await expect(
			place(user, [{ productId: p.id, quantity: 1 }], "tok_mastercard", key)
		).rejects.toMatchObject({
			type: "ORDERS_IDEMPOTENCY_KEY_REUSED"
		});
		expect((await as<Page<Order>>(user, "orders.list", {})).total).toBe(1);
	});

	it("validates the items: duplicates, unknown or inactive products, empty, 0, fractional, over 1000", async () => {
		const p = await newProduct(10);
		const inactive = await newProduct(10, 100, { active: false });
		const user = customer();
		await expect(
			place(user, [
				{ productId: p.id, quantity: 1 },
				{ productId: p.id, quantity: 2 }
			])
		).rejects.toMatchObject({ type: "VALIDATION_ERROR", code: 422 });
		const unknown = crypto.randomUUID();
		await expect(
			place(user, [
				{ productId: p.id, quantity: 1 },
				{ productId: unknown, quantity: 1 }
			])
		).rejects.toMatchObject({
			type: "ORDERS_PRODUCT_UNAVAILABLE",
			code: 422,
			data: { productIds: [unknown] }
		});
		await expect(place(user, [{ productId: inactive.id, quantity: 1 }])).rejects.toMatchObject({
			type: "ORDERS_PRODUCT_UNAVAILABLE",
			data: { productIds: [inactive.id] }
		});
		for (const items of [
			[],
			[{ productId: p.id, quantity: 0 }],
			[{ productId: p.id, quantity: 1.5 }],
			[{ productId: p.id, quantity: 1001 }],
			[{ productId: "nope", quantity: 1 }]
		])
			await expect(place(user, items)).rejects.toMatchObject({
				type: "VALIDATION_ERROR",
				code: 422
			});
		await expect(
			place(user, [{ productId: p.id, quantity: 1 }], "tok visa")
		).rejects.toMatchObject({ type: "VALIDATION_ERROR" });
		await expect(
			as(null, "orders.create", {
				items: [{ productId: p.id, quantity: 1 }],
				paymentMethod: "tok_visa"
			})
		).rejects.toMatchObject({
			type: "AUTH_TOKEN_MISSING",
			code: 401
		});
		expect((await as<Page<Order>>(user, "orders.list", {})).total).toBe(0);
		expect(await stockOf(p.id)).toMatchObject({ onHand: 10, reserved: 0 });
	});

	it("hides an order from other customers (ORDERS_NOT_FOUND 404); its owner and admins see it", async () => {
		const p = await newProduct(5);
		const owner = customer();
		const order = await place(owner, [{ productId: p.id, quantity: 1 }]);
		await expect(getOrder(customer(), order.id)).rejects.toMatchObject({
			type: "ORDERS_NOT_FOUND",
			code: 404
		});
		await expect(as(customer(), "orders.cancel", { id: order.id })).rejects.toMatchObject({
			type: "ORDERS_NOT_FOUND",
			code: 404
		});
		expect((await getOrder(owner, order.id)).id).toBe(order.id);
		expect((await getOrder(admin, order.id)).userId).toBe(owner.id);
		await expect(getOrder(owner, crypto.randomUUID())).rejects.toMatchObject({
			type: "ORDERS_NOT_FOUND"
		});
		await settled(owner, order.id);
	});

	it("lists only the caller's orders, newest first, paged", async () => {
		const p = await newProduct(20);
		const a = customer();
		const b = customer();
		const mine: string[] = [];
		for (let i = 0; i < 3; i++)
			mine.push((await place(a, [{ productId: p.id, quantity: 1 }])).id);
		const theirs = await place(b, [{ productId: p.id, quantity: 1 }]);
		const list = await as<Page<Order>>(a, "orders.list", {});
		expect(list.total).toBe(3);
		expect(list.rows.map(o => o.id)).toEqual([...mine].reverse());
		expect(list.rows.every(o => o.userId === a.id)).toBe(true);
		const page2 = await as<Page<Order> & { totalPages: number }>(a, "orders.list", {
			page: 2,
			pageSize: 2
		});
		expect(page2).toMatchObject({ total: 3, totalPages: 2 });
		expect(page2.rows.map(o => o.id)).toEqual([mine[0]]);
		expect((await as<Page<Order>>(b, "orders.list", {})).rows.map(o => o.id)).toEqual([
			theirs.id
		]);
		for (const id of mine) await settled(a, id);
		await settled(b, theirs.id);
	});

	/*
	 * Cancelling deterministically: the test holds a real Postgres row lock on the product's stock
	 * row, so the saga's first step (inventory.reserve) cannot finish and the order cannot pass its
	 * pivot before the cancel lands. The cancel is then accepted whatever the scheduling, and once
	 * the lock is released the saga runs on and must end CANCELLED / CANCELLED_BY_CUSTOMER.
	 */
	it("a customer cancel before the pivot ends CANCELLED_BY_CUSTOMER: nothing charged, stock released", async () => {
		const p = await newProduct(5, 700);
		const user = customer();
		const order = await withStockLocked(p.id, async () => {
			const order = await place(user, [{ productId: p.id, quantity: 2 }]);
			const meta: Record<string, unknown> = { user };
			const asked: Order = await broker.call("orders.cancel", { id: order.id }, { meta });
			expect(meta.$statusCode).toBe(202);
			expect(asked).toMatchObject({ id: order.id, status: "PENDING", cancelRequested: true });
			return order;
		});
		expect(await settled(user, order.id)).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "CANCELLED_BY_CUSTOMER"
		});
		// The saga saw the cancel before its next step: the card was never charged.
		expect(await paymentOf(order.id)).toBeNull();
		expect(await stockOf(p.id)).toEqual({
			productId: p.id,
			onHand: 5,
			reserved: 0,
			available: 5
		});
		expect(await sagaOf(order.id, "COMPENSATED")).toMatchObject({
			failureReason: "CANCELLED_BY_CUSTOMER",
			errors: [
				// Seen before reserveStock or before chargePayment, depending on scheduling.
				expect.objectContaining({ type: "ORDERS_CANCEL_REQUESTED" })
			]
		});
		// Cancelling a cancelled order answers it as it is.
		expect(await as(user, "orders.cancel", { id: order.id })).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "CANCELLED_BY_CUSTOMER"
		});
	});

	/*
	 * A processor that is down: the saga retries the charge with backoff until its deadline. The
	 * customer cancels once the first attempt has failed; the saga sees the cancel before its next
	 * attempt and compensates, with nothing captured: the refund leaves a VOIDED record.
	 */
	it("a cancel accepted while the payment is being retried ends CANCELLED_BY_CUSTOMER, nothing captured", async () => {
		const p = await newProduct(5, 300);
		const user = customer();
		const order = await place(
			user,
			[{ productId: p.id, quantity: 1 }],
			"tok_processorUnavailable"
		);
		await waitFor(
			() => sagaOf(order.id),
			s => (s?.errors ?? []).some(e => e.type === "PAYMENTS_PROCESSOR_UNAVAILABLE")
		);
		expect(await as(user, "orders.cancel", { id: order.id })).toMatchObject({
			cancelRequested: true
		});
		expect(await settled(user, order.id)).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "CANCELLED_BY_CUSTOMER"
		});
		expect(await stockOf(p.id)).toMatchObject({ onHand: 5, reserved: 0 });
		expect((await paymentOf(order.id))?.status).toBe("VOIDED");
		const saga = await sagaOf(order.id, "COMPENSATED");
		expect(saga).toMatchObject({ failureReason: "CANCELLED_BY_CUSTOMER" });
		const outages = saga?.errors.filter(e => e.type === "PAYMENTS_PROCESSOR_UNAVAILABLE") ?? [];
		expect(outages.length).toBeGreaterThanOrEqual(1);
		expect(saga?.errors.at(-1)).toMatchObject({
			step: "chargePayment",
			type: "ORDERS_CANCEL_REQUESTED"
		});
	});

	it("refuses to cancel a confirmed order: ORDERS_NOT_CANCELLABLE 409", async () => {
		const p = await newProduct(5);
		const user = customer();
		const order = await place(user, [{ productId: p.id, quantity: 1 }]);
		expect((await settled(user, order.id)).status).toBe("CONFIRMED");
		await expect(as(user, "orders.cancel", { id: order.id })).rejects.toMatchObject({
			type: "ORDERS_NOT_CANCELLABLE",
			code: 409
		});
		expect(await getOrder(user, order.id)).toMatchObject({
			status: "CONFIRMED",
			cancelRequested: false
		});
	});

	it("lists sagas for admins by status; customers are AUTH_FORBIDDEN", async () => {
		const p = await newProduct(2);
		const user = customer();
		const ok = await place(user, [{ productId: p.id, quantity: 1 }]);
		const ko = await place(user, [{ productId: p.id, quantity: 1 }], "tok_chargeDeclined");
		await settled(user, ok.id);
		await settled(user, ko.id);
		const completed = await as<Page<SagaView>>(admin, "orders.listSagas", {
			status: "COMPLETED",
			pageSize: 100
		});
		expect(completed.rows.length).toBeGreaterThan(0);
		expect(completed.rows.every(s => s.status === "COMPLETED")).toBe(true);
		expect(completed.rows.map(s => s.orderId)).toContain(ok.id);
		expect(completed.rows.map(s => s.orderId)).not.toContain(ko.id);
		const compensated = await as<Page<SagaView>>(admin, "orders.listSagas", {
			status: "COMPENSATED",
			pageSize: 100
		});
		expect(compensated.rows.every(s => s.status === "COMPENSATED")).toBe(true);
		expect(compensated.rows.find(s => s.orderId === ko.id)).toMatchObject({
			name: "order",
			version: 1,
			failureReason: "PAYMENT_DECLINED"
		});
		await expect(as(user, "orders.listSagas", {})).rejects.toMatchObject({
			type: "AUTH_FORBIDDEN",
			code: 403
		});
		await expect(as(admin, "orders.listSagas", { status: "DONE" })).rejects.toMatchObject({
			type: "VALIDATION_ERROR"
		});
	});

	it("redrives only parked sagas: SAGAS_NOT_PARKED 409, SAGAS_NOT_FOUND 404, customers forbidden", async () => {
		const p = await newProduct(5);
		const user = customer();
		const order = await place(user, [{ productId: p.id, quantity: 1 }]);
		await settled(user, order.id);
		const saga = (await sagaOf(order.id, "COMPLETED"))!;
		await expect(as(admin, "orders.redriveSaga", { id: saga.id })).rejects.toMatchObject({
			type: "SAGAS_NOT_PARKED",
			code: 409
		});
		await expect(
			as(admin, "orders.redriveSaga", { id: crypto.randomUUID() })
		).rejects.toMatchObject({
			type: "SAGAS_NOT_FOUND",
			code: 404
		});
		await expect(as(user, "orders.redriveSaga", { id: saga.id })).rejects.toMatchObject({
			type: "AUTH_FORBIDDEN"
		});
	});

	/*
	 * A reservation given up under a running saga (its TTL, as the sweeper sees it) must not leave
	 * a charged order without its stock. Made deterministic: the test holds a table lock on
	 * payments so the charge waits, makes the reservation due (as a skewed clock would) and sweeps.
	 * Before issue 16 the pivot passed anyway, the commit found the units gone and the saga was
	 * parked with the order CONFIRMING and its payment CAPTURED; now the sweep fences the order off
	 * its pivot: the saga compensates (refund), the order ends CANCELLED / TIMEOUT.
	 */
	it("a reservation lapsing before the pivot cancels the order and refunds it: never charged without stock", async () => {
		const p = await newProduct(1);
		const user = customer();
		const payments = dbOf("payments");
		// The lock is held until the callback ends (committed, or rolled back when it throws).
		const order = await payments.transaction(async lock => {
			await fastQuery(payments, "LOCK TABLE payments IN EXCLUSIVE MODE", {
				transaction: lock
			});
			const order = await place(user, [{ productId: p.id, quantity: 1 }]);
			await waitFor(
				() => getOrder(user, order.id),
				o => o.status === "STOCK_RESERVED",
				5_000,
				10
			);
			await fastQuery(
				dbOf("inventory"),
				"UPDATE reservations SET expires_at = now() - interval '1 second' WHERE order_id = $1",
				{ bind: [order.id] }
			);
			await broker.call("inventory.releaseExpired");
			return order;
		});
		const done = await settled(user, order.id);
		expect(done).toMatchObject({ status: "CANCELLED", cancellationReason: "TIMEOUT" });
		// The invariant: nothing captured net, nothing held.
		expect(await paymentOf(order.id)).toMatchObject({ status: "REFUNDED" });
		expect(await stockOf(p.id)).toMatchObject({ onHand: 1, reserved: 0, available: 1 });
		expect(await sagaOf(order.id)).toMatchObject({
			status: "COMPENSATED",
			failureReason: "TIMEOUT"
		});
		await expect(as(user, "orders.cancel", { id: order.id })).resolves.toMatchObject({
			status: "CANCELLED"
		});
	});

	it("never oversells: 50 concurrent one-unit orders for 20 in stock → 20 CONFIRMED, 30 OUT_OF_STOCK", async () => {
		// Its own currency, so the ledger totals below are this product's alone.
		const price = 2_500;
		const p = await newProduct(20, price, { currency: "CHF" });
		const users = Array.from({ length: 50 }, () => customer());
		const orders = await Promise.all(
			users.map(u => place(u, [{ productId: p.id, quantity: 1 }]))
		);
		expect(
			orders.every(o => o.status === "PENDING" && o.currency === "CHF" && o.total === price)
		).toBe(true);
		const final = await Promise.all(orders.map((o, i) => settled(users[i]!, o.id)));
		const confirmed = final.filter(o => o.status === "CONFIRMED");
		const cancelled = final.filter(o => o.status === "CANCELLED");
		expect(confirmed).toHaveLength(20);
		expect(cancelled).toHaveLength(30);
		expect(cancelled.every(o => o.cancellationReason === "OUT_OF_STOCK")).toBe(true);
		expect(await stockOf(p.id)).toEqual({
			productId: p.id,
			onHand: 0,
			reserved: 0,
			available: 0
		});
		const totals = await broker.call<
			Record<string, { captured: number; refunded: number }>,
			Record<string, never>
		>("payments.totals", {});
		expect(totals.CHF!.captured - totals.CHF!.refunded).toBe(20 * price);
		const payments = await Promise.all(confirmed.map(o => paymentOf(o.id)));
		expect(payments.every(x => x?.status === "CAPTURED" && x.amount === price)).toBe(true);
	});
});
