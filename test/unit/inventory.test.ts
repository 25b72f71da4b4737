import crypto from "node:crypto";
import type { ServiceBroker } from "moleculer";
import { DEMO_CATALOG } from "../../lib/demo-catalog";
import { startTestBroker, admin, customer, type TestBroker } from "../support/broker";

describe("inventory", () => {
	let t: TestBroker;
	let broker: ServiceBroker;
	const product = () => crypto.randomUUID();

	beforeAll(async () => {
		t = await startTestBroker(["inventory"]);
		broker = t.broker;
	});
	afterAll(async () => t?.stop());

	async function stock(productId: string, onHand: number): Promise<void> {
		await broker.call("inventory.setStock", { productId, onHand });
	}

	it("seeds the demo catalog's stock", async () => {
		const first = DEMO_CATALOG[0]!;
		const level = await broker.call("inventory.get", { productId: first.id });
		expect(level).toEqual({
			productId: first.id,
			onHand: first.stock,
			reserved: 0,
			available: first.stock
		});
	});

	it("reserves all items or none, and a repeat answers the first outcome", async () => {
		const a = product();
		const b = product();
		await stock(a, 5);
		await stock(b, 1);
		const orderId = crypto.randomUUID();
		await expect(
			broker.call("inventory.reserve", {
				orderId,
				items: [
					{ productId: a, quantity: 2 },
					{ productId: b, quantity: 2 }
				]
			})
		).rejects.toMatchObject({ type: "INVENTORY_OUT_OF_STOCK", code: 409 });
		expect(await broker.call("inventory.get", { productId: a })).toMatchObject({
			reserved: 0,
			onHand: 5
		});
		// The same order asking again gets the same refusal, even though b is unchanged.
		await expect(
			broker.call("inventory.reserve", {
				orderId,
				items: [
					{ productId: a, quantity: 2 },
					{ productId: b, quantity: 2 }
				]
			})
		).rejects.toMatchObject({ type: "INVENTORY_OUT_OF_STOCK" });

		const ok = crypto.randomUUID();
		const r1 = await broker.call("inventory.reserve", {
			orderId: ok,
			items: [{ productId: a, quantity: 2 }]
		});
		const r2 = await broker.call("inventory.reserve", {
			orderId: ok,
			items: [{ productId: a, quantity: 2 }]
		});
		expect(r1).toEqual(r2);
		expect(await broker.call("inventory.get", { productId: a })).toEqual({
			productId: a,
			onHand: 5,
			reserved: 2,
			available: 3
		});
	});

	it("commit takes units out of onHand and reserved; release gives them back; both idempotent", async () => {
		const a = product();
		await stock(a, 10);
		const o1 = crypto.randomUUID();
		const o2 = crypto.randomUUID();
		await broker.call("inventory.reserve", {
			orderId: o1,
			items: [{ productId: a, quantity: 3 }]
		});
		await broker.call("inventory.reserve", {
			orderId: o2,
			items: [{ productId: a, quantity: 4 }]
		});
		await broker.call("inventory.commit", { orderId: o1 });
		await broker.call("inventory.commit", { orderId: o1 });
		await broker.call("inventory.release", { orderId: o2 });
		await broker.call("inventory.release", { orderId: o2 });
		expect(await broker.call("inventory.get", { productId: a })).toEqual({
			productId: a,
			onHand: 7,
			reserved: 0,
			available: 7
		});
		await expect(broker.call("inventory.commit", { orderId: o2 })).rejects.toMatchObject({
			type: "INVENTORY_RESERVATION_CONFLICT"
		});
		await expect(broker.call("inventory.release", { orderId: o1 })).rejects.toMatchObject({
			type: "INVENTORY_RESERVATION_CONFLICT"
		});
	});

	it("a release that overtakes its reserve blocks the late reserve (tombstone)", async () => {
		const a = product();
		await stock(a, 3);
		const o = crypto.randomUUID();
		await expect(broker.call("inventory.release", { orderId: o })).resolves.toMatchObject({
			status: "RELEASED"
		});
		await expect(
			broker.call("inventory.reserve", { orderId: o, items: [{ productId: a, quantity: 1 }] })
		).rejects.toMatchObject({ type: "INVENTORY_RESERVATION_CONFLICT" });
		expect(await broker.call("inventory.get", { productId: a })).toMatchObject({ reserved: 0 });
	});

	it("never oversells under concurrent reservations of overlapping products", async () => {
		const a = product();
		const b = product();
		await stock(a, 20);
		await stock(b, 20);
		const calls = Array.from({ length: 60 }, (_, i) => {
			// Opposite item orders in the request: the service must still lock in one order.
			const items =
				i % 2
					? [
							{ productId: a, quantity: 1 },
							{ productId: b, quantity: 1 }
						]
					: [
							{ productId: b, quantity: 1 },
							{ productId: a, quantity: 1 }
						];
			return broker.call("inventory.reserve", { orderId: crypto.randomUUID(), items }).then(
				() => "ok",
				(e: { type: string }) => e.type
			);
		});
		const outcomes = await Promise.all(calls);
		expect(outcomes.filter(o => o === "ok")).toHaveLength(20);
		expect(outcomes.filter(o => o === "INVENTORY_OUT_OF_STOCK")).toHaveLength(40);
		expect(await broker.call("inventory.get", { productId: a })).toEqual({
			productId: a,
			onHand: 20,
			reserved: 20,
			available: 0
		});
	});

	it("refuses onHand below what is reserved, and customers may not set stock", async () => {
		const a = product();
		await stock(a, 5);
		await broker.call("inventory.reserve", {
			orderId: crypto.randomUUID(),
			items: [{ productId: a, quantity: 4 }]
		});
		await expect(
			broker.call("inventory.setStock", { productId: a, onHand: 3 })
		).rejects.toMatchObject({ type: "INVENTORY_BELOW_RESERVED", code: 409 });
		await expect(
			broker.call(
				"inventory.setStock",
				{ productId: a, onHand: 9 },
				{ meta: { user: customer() } }
			)
		).rejects.toMatchObject({ type: "AUTH_FORBIDDEN", code: 403 });
		await expect(
			broker.call(
				"inventory.setStock",
				{ productId: a, onHand: 9 },
				{ meta: { user: admin } }
			)
		).resolves.toMatchObject({ onHand: 9, reserved: 4, available: 5 });
	});

	it("rejects bad input with 422 and the offending fields", async () => {
		await expect(
			broker.call("inventory.reserve", { orderId: "nope", items: [] })
		).rejects.toMatchObject({
			type: "VALIDATION_ERROR",
			code: 422,
			data: expect.arrayContaining([
				expect.objectContaining({ field: "orderId" }),
				expect.objectContaining({ field: "items" })
			])
		});
		await expect(
			broker.call("inventory.reserve", {
				orderId: crypto.randomUUID(),
				items: [{ productId: product(), quantity: 0 }]
			})
		).rejects.toMatchObject({
			type: "VALIDATION_ERROR",
			data: [expect.objectContaining({ field: "items[0].quantity" })]
		});
		await expect(broker.call("inventory.get", { productId: product() })).rejects.toMatchObject({
			type: "INVENTORY_NOT_FOUND",
			code: 404
		});
	});
});
