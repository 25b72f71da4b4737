/**
 * Saga participants apply an idempotency key (`ctx.meta.idempotencyKey`) at most once and answer
 * a repeat with the first outcome: payments.charge/refund and inventory.reserve/release/commit on
 * a real Postgres, through the broker as the saga calls them.
 */
import crypto from "node:crypto";
import type { Context, ServiceBroker } from "moleculer";
import { fastQuery, QueryTypes } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";
import { ShopClientError } from "../../platform/errors";
import type { ReservationView, StockLevel } from "../../services/inventory/inventory.model";
import type { Payment } from "../../services/payments/payments.model";
import { startTestBroker, type TestBroker } from "../support/broker";

type Totals = Record<string, { captured: number; refunded: number }>;

interface KeyRow {
	key: string;
	action: string;
	outcome: "OK" | "ERROR";
	response: Record<string, unknown> | null;
}

describe("idempotency keys of the saga's participants", () => {
	let t: TestBroker;
	let broker: ServiceBroker;
	/** Events emitted by payments and inventory: name and payload. */
	const events: { name: string; payload: { orderId?: string } }[] = [];

	beforeAll(async () => {
		t = await startTestBroker(["inventory", "payments"], {
			extra: [
				{
					name: "idempotency-listener",
					events: {
						"payment.*"(this: unknown, ctx: Context<{ orderId?: string }>) {
							events.push({ name: String(ctx.eventName), payload: ctx.params });
						},
						"stock.*"(this: unknown, ctx: Context<{ orderId?: string }>) {
							events.push({ name: String(ctx.eventName), payload: ctx.params });
						}
					}
				}
			]
		});
		broker = t.broker;
	});
	afterAll(async () => t?.stop());

	const newKey = (step = "step"): string => `${crypto.randomUUID()}:${step}`;
	const opts = (idempotencyKey?: string) => ({
		meta: idempotencyKey === undefined ? {} : { idempotencyKey },
		retries: 0
	});
	const charge = (
		orderId: string,
		amount: number,
		key?: string,
		paymentMethod = "tok_visa"
	): Promise<Payment> =>
		broker.call(
			"payments.charge",
			{ orderId, amount, currency: "USD", paymentMethod },
			opts(key)
		);
	const refund = (orderId: string, key?: string): Promise<Payment> =>
		broker.call("payments.refund", { orderId }, opts(key));
	const usd = async (): Promise<{ captured: number; refunded: number }> =>
		((await broker.call("payments.totals")) as Totals).USD ?? { captured: 0, refunded: 0 };

	const reserve = (
		orderId: string,
		productId: string,
		quantity: number,
		key?: string
	): Promise<ReservationView> =>
		broker.call("inventory.reserve", { orderId, items: [{ productId, quantity }] }, opts(key));
	const release = (orderId: string, key?: string): Promise<ReservationView> =>
		broker.call("inventory.release", { orderId }, opts(key));
	const commit = (orderId: string, key?: string): Promise<ReservationView> =>
		broker.call("inventory.commit", { orderId }, opts(key));
	const level = (productId: string): Promise<StockLevel> =>
		broker.call("inventory.get", { productId });
	async function newProduct(onHand: number): Promise<string> {
		const productId = crypto.randomUUID();
		await broker.call("inventory.setStock", { productId, onHand });
		return productId;
	}

	function db(service: "payments" | "inventory"): ShopDatabase {
		return (broker.getLocalService(service) as unknown as { db: ShopDatabase }).db;
	}
	async function keyRow(service: "payments" | "inventory", key: string): Promise<KeyRow | null> {
		const rows = (await fastQuery(
			db(service),
			"SELECT key, action, outcome, response FROM idempotency_keys WHERE key = $1",
			{ bind: [key], type: QueryTypes.SELECT }
		)) as KeyRow[];
		return rows[0] ?? null;
	}
	async function count(
		service: "payments" | "inventory",
		sql: string,
		bind: unknown[]
	): Promise<number> {
		const rows = (await fastQuery(db(service), sql, { bind, type: QueryTypes.SELECT })) as {
			n: string;
		}[];
		return Number(rows[0]!.n);
	}
	const eventsOf = (orderId: string): string[] =>
		events.filter(e => e.payload.orderId === orderId).map(e => e.name);
	/**
	 * The events of `orderId` once the outbox relay has published them (payments' events are
	 * durable: written with the payment, emitted after the commit), plus a moment for a duplicate.
	 */
	const publishedEventsOf = async (orderId: string): Promise<string[]> => {
		for (let i = 0; i < 200 && eventsOf(orderId).length === 0; i++)
			await new Promise(r => setTimeout(r, 10));
		await new Promise(r => setTimeout(r, 100));
		return eventsOf(orderId);
	};

	describe("the same key twice: the same answer and one effect", () => {
		it("payments.charge: one CAPTURE in the ledger, one event, one OK record", async () => {
			const before = await usd();
			const orderId = crypto.randomUUID();
			const key = newKey("chargePayment");
			const first = await charge(orderId, 1234, key);
			expect(first).toMatchObject({ orderId, amount: 1234, status: "CAPTURED" });
			const again = await charge(orderId, 1234, key);
			expect(again).toEqual(first);
			expect(await usd()).toEqual({
				captured: before.captured + 1234,
				refunded: before.refunded
			});
			expect(await publishedEventsOf(orderId)).toEqual(["payment.captured"]);
			expect(await keyRow("payments", key)).toMatchObject({
				action: "payments.charge",
				outcome: "OK",
				response: { id: first.id, status: "CAPTURED", amount: 1234 }
			});
		});

		it("inventory.reserve: the units are reserved once, one stock.reserved", async () => {
			const productId = await newProduct(5);
			const orderId = crypto.randomUUID();
			const key = newKey("reserveStock");
			const first = await reserve(orderId, productId, 2, key);
			expect(first).toMatchObject({ orderId, status: "RESERVED" });
			expect(await reserve(orderId, productId, 2, key)).toEqual(first);
			expect(await level(productId)).toEqual({
				productId,
				onHand: 5,
				reserved: 2,
				available: 3
			});
			expect(eventsOf(orderId)).toEqual(["stock.reserved"]);
			expect(await keyRow("inventory", key)).toMatchObject({
				action: "inventory.reserve",
				outcome: "OK"
			});
		});

		it("a repeat answers the FIRST outcome even after the state moved on (not the current one)", async () => {
			// payments: charged under the key, then refunded; the charge's key still answers CAPTURED
			// and moves no money, where a keyless repeat is refused.
			const orderId = crypto.randomUUID();
			const key = newKey("chargePayment");
			const captured = await charge(orderId, 500, key);
			await refund(orderId, newKey("chargePayment:compensate"));
			const before = await usd();
			await expect(charge(orderId, 500, key)).resolves.toEqual(captured);
			await expect(charge(orderId, 500)).rejects.toMatchObject({
				type: "PAYMENTS_CONFLICT"
			});
			expect(await usd()).toEqual(before);

			// inventory: reserved under the key, then released; the key answers RESERVED and
			// reserves nothing again.
			const productId = await newProduct(4);
			const o2 = crypto.randomUUID();
			const rkey = newKey("reserveStock");
			const reserved = await reserve(o2, productId, 3, rkey);
			await release(o2, newKey("reserveStock:compensate"));
			await expect(reserve(o2, productId, 3, rkey)).resolves.toEqual(reserved);
			await expect(reserve(o2, productId, 3)).rejects.toMatchObject({
				type: "INVENTORY_RESERVATION_CONFLICT"
			});
			expect(await level(productId)).toMatchObject({ reserved: 0, available: 4 });
		});

		it("release and commit replay too: a compensation's key releases once", async () => {
			const productId = await newProduct(6);
			const o1 = crypto.randomUUID();
			const o2 = crypto.randomUUID();
			await reserve(o1, productId, 2);
			await reserve(o2, productId, 3);
			const rel = newKey("reserveStock:compensate");
			const com = newKey("commitStock");
			const released = await release(o1, rel);
			const committed = await commit(o2, com);
			expect(await release(o1, rel)).toEqual(released);
			expect(await commit(o2, com)).toEqual(committed);
			expect(await level(productId)).toEqual({
				productId,
				onHand: 3,
				reserved: 0,
				available: 3
			});
			expect(eventsOf(o1)).toEqual(["stock.reserved", "stock.released"]);
			expect(eventsOf(o2)).toEqual(["stock.reserved", "stock.committed"]);
		});
	});

	describe("a business error is an outcome: committed with its effect, replayed as the same error", () => {
		it("PAYMENTS_CARD_DECLINED: one DECLINED payment, one ERROR record, the same error on a repeat", async () => {
			const before = await usd();
			const orderId = crypto.randomUUID();
			const key = newKey("chargePayment");
			const declined = {
				type: "PAYMENTS_CARD_DECLINED",
				code: 402,
				retryable: false,
				data: { orderId, declineCode: "card_declined" }
			};
			await expect(charge(orderId, 999, key, "tok_chargeDeclined")).rejects.toMatchObject(
				declined
			);
			// The repeat with a good card is still the first outcome, rebuilt with its class.
			const replay = await charge(orderId, 999, key).catch((e: unknown) => e);
			expect(replay).toBeInstanceOf(ShopClientError);
			expect(replay).toMatchObject(declined);
			expect(
				await count("payments", "SELECT count(*) AS n FROM payments WHERE order_id = $1", [
					orderId
				])
			).toBe(1);
			await expect(broker.call("payments.get", { orderId })).resolves.toMatchObject({
				status: "DECLINED"
			});
			expect(await keyRow("payments", key)).toMatchObject({
				action: "payments.charge",
				outcome: "ERROR",
				response: { type: "PAYMENTS_CARD_DECLINED", code: 402, data: declined.data }
			});
			expect(await publishedEventsOf(orderId)).toEqual(["payment.declined"]);
			expect(await usd()).toEqual(before);
		});

		it("INVENTORY_OUT_OF_STOCK: the REJECTED reservation commits with the key; restocking does not change the replay", async () => {
			const productId = await newProduct(1);
			const orderId = crypto.randomUUID();
			const key = newKey("reserveStock");
			const shortfall = {
				type: "INVENTORY_OUT_OF_STOCK",
				code: 409,
				data: { orderId, items: [{ productId, requested: 2, available: 1 }] }
			};
			await expect(reserve(orderId, productId, 2, key)).rejects.toMatchObject(shortfall);
			await expect(
				broker.call("inventory.getReservation", { orderId })
			).resolves.toMatchObject({ status: "REJECTED" });
			await broker.call("inventory.setStock", { productId, onHand: 10 });
			await expect(reserve(orderId, productId, 2, key)).rejects.toMatchObject(shortfall);
			expect(
				await count(
					"inventory",
					"SELECT count(*) AS n FROM reservations WHERE order_id = $1",
					[orderId]
				)
			).toBe(1);
			expect(await keyRow("inventory", key)).toMatchObject({
				outcome: "ERROR",
				response: { type: "INVENTORY_OUT_OF_STOCK" }
			});
			expect(await level(productId)).toMatchObject({ onHand: 10, reserved: 0 });
		});

		it("a thrown business error without effect is remembered too (commit of no reservation)", async () => {
			const orderId = crypto.randomUUID();
			const key = newKey("commitStock");
			await expect(commit(orderId, key)).rejects.toMatchObject({
				type: "INVENTORY_RESERVATION_CONFLICT"
			});
			expect(await keyRow("inventory", key)).toMatchObject({
				action: "inventory.commit",
				outcome: "ERROR",
				response: { type: "INVENTORY_RESERVATION_CONFLICT" }
			});
			// Now a reservation exists, yet the key answers its first outcome.
			const productId = await newProduct(2);
			await reserve(orderId, productId, 1);
			await expect(commit(orderId, key)).rejects.toMatchObject({
				type: "INVENTORY_RESERVATION_CONFLICT"
			});
			expect(await level(productId)).toMatchObject({ onHand: 2, reserved: 1 });
		});
	});

	describe("a key reused on another action: IDEMPOTENCY_KEY_CONFLICT, nothing runs", () => {
		it("payments: a charge's key on refund refunds nothing", async () => {
			const orderId = crypto.randomUUID();
			const key = newKey("chargePayment");
			await charge(orderId, 777, key);
			const before = await usd();
			await expect(refund(orderId, key)).rejects.toMatchObject({
				type: "IDEMPOTENCY_KEY_CONFLICT",
				code: 409,
				retryable: false,
				data: { key, action: "payments.refund", firstAction: "payments.charge" }
			});
			expect(await usd()).toEqual(before);
			await expect(broker.call("payments.get", { orderId })).resolves.toMatchObject({
				status: "CAPTURED"
			});
			expect(await publishedEventsOf(orderId)).toEqual(["payment.captured"]);
			// The key still answers its own action.
			await expect(charge(orderId, 777, key)).resolves.toMatchObject({ status: "CAPTURED" });
		});

		it("inventory: a reserve's key on commit commits nothing", async () => {
			const productId = await newProduct(3);
			const orderId = crypto.randomUUID();
			const key = newKey("reserveStock");
			await reserve(orderId, productId, 2, key);
			await expect(commit(orderId, key)).rejects.toMatchObject({
				type: "IDEMPOTENCY_KEY_CONFLICT",
				data: { action: "inventory.commit", firstAction: "inventory.reserve" }
			});
			await expect(release(orderId, key)).rejects.toMatchObject({
				type: "IDEMPOTENCY_KEY_CONFLICT"
			});
			expect(await level(productId)).toEqual({
				productId,
				onHand: 3,
				reserved: 2,
				available: 1
			});
			await expect(
				broker.call("inventory.getReservation", { orderId })
			).resolves.toMatchObject({ status: "RESERVED" });
		});
	});

	describe("concurrent calls with one key: one effect, every caller the same answer", () => {
		it("payments.charge x8", async () => {
			const before = await usd();
			const orderId = crypto.randomUUID();
			const key = newKey("chargePayment");
			const all = await Promise.all(
				Array.from({ length: 8 }, () => charge(orderId, 2000, key))
			);
			for (const p of all) expect(p).toEqual(all[0]);
			expect(await usd()).toEqual({
				captured: before.captured + 2000,
				refunded: before.refunded
			});
			expect(await publishedEventsOf(orderId)).toEqual(["payment.captured"]);
			expect(
				await count(
					"payments",
					"SELECT count(*) AS n FROM idempotency_keys WHERE key = $1",
					[key]
				)
			).toBe(1);
		});

		it("inventory.reserve x8", async () => {
			const productId = await newProduct(10);
			const orderId = crypto.randomUUID();
			const key = newKey("reserveStock");
			const all = await Promise.all(
				Array.from({ length: 8 }, () => reserve(orderId, productId, 4, key))
			);
			for (const r of all) expect(r).toEqual(all[0]);
			expect(await level(productId)).toMatchObject({ reserved: 4, available: 6 });
			expect(eventsOf(orderId)).toEqual(["stock.reserved"]);
		});
	});

	describe("a transient error stores nothing", () => {
		it("PAYMENTS_PROCESSOR_UNAVAILABLE under a key: no record, no payment; the retry with the key captures", async () => {
			const before = await usd();
			const orderId = crypto.randomUUID();
			const key = newKey("chargePayment");
			await expect(
				charge(orderId, 4200, key, "tok_processorUnavailable")
			).rejects.toMatchObject({ type: "PAYMENTS_PROCESSOR_UNAVAILABLE", retryable: true });
			expect(await keyRow("payments", key)).toBeNull();
			await expect(broker.call("payments.get", { orderId })).resolves.toBeNull();
			const p = await charge(orderId, 4200, key);
			expect(p).toMatchObject({ orderId, status: "CAPTURED" });
			expect(await keyRow("payments", key)).toMatchObject({ outcome: "OK" });
			expect(await usd()).toEqual({
				captured: before.captured + 4200,
				refunded: before.refunded
			});
		});
	});

	it("without a key nothing is recorded; a key that is not a string is refused", async () => {
		const n = (): Promise<number> =>
			count("payments", "SELECT count(*) AS n FROM idempotency_keys", []);
		const before = await n();
		await charge(crypto.randomUUID(), 10);
		expect(await n()).toBe(before);
		await expect(
			broker.call(
				"payments.charge",
				{
					orderId: crypto.randomUUID(),
					amount: 10,
					currency: "USD",
					paymentMethod: "tok_visa"
				},
				{ meta: { idempotencyKey: 42 } }
			)
		).rejects.toMatchObject({ type: "REQUEST_INVALID_ID", code: 400 });
		expect(await n()).toBe(before);
	});
});
