import crypto from "node:crypto";
import type { Context, ServiceBroker } from "moleculer";
import { DEMO_CATALOG } from "../../services/products/demo-catalog";
import type { ReservationView, StockLevel } from "../../services/inventory/inventory.model";
import { startTestBroker, admin, customer, waitFor, type TestBroker } from "../support/broker";
import { fastQuery } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";
import type { InventoryRepo } from "../../services/inventory/inventory.repo";

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

	it("a reserve and a release of one order racing (different keys) take turns: nothing leaks", async () => {
		// The order's advisory lock is taken by each call's key claim: whichever comes second
		// sees the first one's reservation row (or tombstone), never a half state.
		const a = product();
		await stock(a, 1_000);
		const outcomes = await Promise.all(
			Array.from({ length: 30 }, async () => {
				const orderId = crypto.randomUUID();
				const [reserve, release] = await Promise.allSettled([
					broker.call(
						"inventory.reserve",
						{ orderId, items: [{ productId: a, quantity: 2 }] },
						{ meta: { idempotencyKey: `${orderId}:reserve` } }
					),
					broker.call(
						"inventory.release",
						{ orderId },
						{ meta: { idempotencyKey: `${orderId}:reserve:compensate` } }
					)
				]);
				expect(release.status).toBe("fulfilled");
				// Reserve first: it succeeded and the release gave the units back. Release
				// first: its tombstone refused the late reserve.
				if (reserve.status === "rejected")
					expect(reserve.reason).toMatchObject({
						type: "INVENTORY_RESERVATION_CONFLICT"
					});
				return reserve.status;
			})
		);
		expect(outcomes.length).toBe(30);
		expect(await broker.call("inventory.get", { productId: a })).toEqual({
			productId: a,
			onHand: 1_000,
			reserved: 0,
			available: 1_000
		});
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

	it("one product under concurrent reservations: never oversold, never refused while units remain", async () => {
		// A single item is reserved by one conditional update (no SELECT ... FOR UPDATE first).
		const a = product();
		await stock(a, 20);
		const asked = Array.from({ length: 40 }, (_, i) => (i % 3) + 1);
		const outcomes = await Promise.all(
			asked.map(quantity =>
				broker
					.call("inventory.reserve", {
						orderId: crypto.randomUUID(),
						items: [{ productId: a, quantity }]
					})
					.then(
						() => ({ quantity, ok: true, available: -1 }),
						(e: { type: string; data: { items: { available: number }[] } }) => {
							expect(e.type).toBe("INVENTORY_OUT_OF_STOCK");
							return { quantity, ok: false, available: e.data.items[0]!.available };
						}
					)
			)
		);
		const reserved = outcomes.filter(o => o.ok).reduce((n, o) => n + o.quantity, 0);
		const refused = outcomes.filter(o => !o.ok);
		expect(reserved).toBeLessThanOrEqual(20);
		expect(refused.length).toBeGreaterThan(0);
		// Each refusal saw fewer units than it asked for; units only went down meanwhile, so
		// what is left is less than the smallest refused request.
		for (const r of refused) expect(r.available).toBeLessThan(r.quantity);
		const left = 20 - reserved;
		expect(left).toBeLessThan(Math.min(...refused.map(r => r.quantity)));
		expect(await broker.call("inventory.get", { productId: a })).toEqual({
			productId: a,
			onHand: 20,
			reserved,
			available: left
		});
	});

	it("a one-item reservation refused, then let through by a release meanwhile, counts its units", async () => {
		// The conditional update finds no unit free; before the row is locked to say what is
		// short, another order's release gives one back: the reservation must then take it
		// (reserved + 1), not be written as RESERVED with the units left uncounted.
		const a = product();
		await stock(a, 1);
		const first = crypto.randomUUID();
		await broker.call("inventory.reserve", {
			orderId: first,
			items: [{ productId: a, quantity: 1 }]
		});
		const repo = (broker.getLocalService("inventory") as unknown as { repo: InventoryRepo })
			.repo;
		const lockStock = repo.lockStock.bind(repo);
		const spy = jest.spyOn(repo, "lockStock").mockImplementationOnce(async (ids, tx) => {
			await broker.call("inventory.release", { orderId: first });
			return lockStock(ids, tx);
		});
		try {
			const second = crypto.randomUUID();
			const r = await broker.call<ReservationView, object>("inventory.reserve", {
				orderId: second,
				items: [{ productId: a, quantity: 1 }]
			});
			expect(spy).toHaveBeenCalledTimes(1);
			expect(r.status).toBe("RESERVED");
			expect(await broker.call("inventory.get", { productId: a })).toEqual({
				productId: a,
				onHand: 1,
				reserved: 1,
				available: 0
			});
			// And it commits: the units it holds are counted.
			await broker.call("inventory.commit", { orderId: second });
			expect(await broker.call("inventory.get", { productId: a })).toEqual({
				productId: a,
				onHand: 0,
				reserved: 0,
				available: 0
			});
		} finally {
			spy.mockRestore();
		}
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

describe("inventory: reservations carry a TTL", () => {
	const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));
	/** Long enough that "not yet due" holds on a busy machine; 500 ms is the smallest allowed. */
	const TTL_MS = 1_000;
	/** Events emitted by inventory: name and payload. */
	type StockEvent = { orderId?: string; items?: unknown; reason?: string };
	const listener = (events: { name: string; payload: StockEvent }[]) => ({
		name: "stock-listener",
		events: {
			"stock.*"(this: unknown, ctx: Context<StockEvent>) {
				events.push({ name: String(ctx.eventName), payload: ctx.params });
			}
		}
	});
	const saved = {
		ttl: process.env.RESERVATION_TTL_MS,
		sweep: process.env.RESERVATION_SWEEP_INTERVAL_MS,
		deadline: process.env.SAGA_DEADLINE_MS
	};
	afterAll(() => {
		for (const [k, v] of [
			["RESERVATION_TTL_MS", saved.ttl],
			["RESERVATION_SWEEP_INTERVAL_MS", saved.sweep],
			["SAGA_DEADLINE_MS", saved.deadline]
		] as const)
			if (v === undefined) delete process.env[k];
			else process.env[k] = v;
	});

	describe("swept by inventory.releaseExpired (the timer is far away)", () => {
		let t: TestBroker;
		let broker: ServiceBroker;
		const events: { name: string; payload: StockEvent }[] = [];

		beforeAll(async () => {
			// The sweeper asks the orders service which reservations may lapse (these orders are
			// unknown to it: all of them may).
			t = await startTestBroker(["inventory", "orders"], {
				env: {
					RESERVATION_TTL_MS: String(TTL_MS),
					RESERVATION_SWEEP_INTERVAL_MS: "3600000",
					SAGA_DEADLINE_MS: "1000"
				},
				extra: [listener(events)]
			});
			broker = t.broker;
		});
		afterAll(async () => t?.stop());

		async function newProduct(onHand: number): Promise<string> {
			const productId = crypto.randomUUID();
			await broker.call("inventory.setStock", { productId, onHand });
			return productId;
		}
		const reserve = (orderId: string, productId: string, quantity: number) =>
			broker.call<ReservationView, object>("inventory.reserve", {
				orderId,
				items: [{ productId, quantity }]
			});
		const level = (productId: string) =>
			broker.call<StockLevel, object>("inventory.get", { productId });
		const reservation = (orderId: string) =>
			broker.call<ReservationView | null, object>("inventory.getReservation", { orderId });
		const sweep = () => broker.call<{ released: number }>("inventory.releaseExpired");
		const eventsOf = (orderId: string) =>
			events.filter(e => e.payload.orderId === orderId).map(e => [e.name, e.payload.reason]);
		/** Reserves and lets the reservation expire by a sweep. */
		async function expired(productId: string, quantity: number): Promise<string> {
			const orderId = crypto.randomUUID();
			await reserve(orderId, productId, quantity);
			await sleep(TTL_MS + 150);
			expect(await sweep()).toEqual({ released: 1 });
			return orderId;
		}

		it("reserve sets expiresAt = now + RESERVATION_TTL_MS; releaseExpired gives the units back after it, not before", async () => {
			const productId = await newProduct(5);
			const orderId = crypto.randomUUID();
			const startedAt = Date.now();
			const r = await reserve(orderId, productId, 3);
			const expiresAt = Date.parse(r.expiresAt!);
			expect(expiresAt).toBeGreaterThanOrEqual(startedAt + TTL_MS - 1_000);
			expect(expiresAt).toBeLessThanOrEqual(Date.now() + TTL_MS + 1_000);

			// Not yet due: untouched.
			expect(await sweep()).toEqual({ released: 0 });
			expect(await level(productId)).toMatchObject({ reserved: 3, available: 2 });

			await sleep(TTL_MS + 150);
			expect(await sweep()).toEqual({ released: 1 });
			expect(await level(productId)).toEqual({
				productId,
				onHand: 5,
				reserved: 0,
				available: 5
			});
			expect(await reservation(orderId)).toMatchObject({ status: "EXPIRED" });
			expect(eventsOf(orderId)).toEqual([
				["stock.reserved", undefined],
				["stock.released", "EXPIRED"]
			]);
			expect(
				events.find(e => e.name === "stock.released" && e.payload.orderId === orderId)
			).toMatchObject({ payload: { items: [{ productId, quantity: 3 }] } });
			// Released once: a second sweep finds nothing.
			expect(await sweep()).toEqual({ released: 0 });
			expect(await level(productId)).toMatchObject({ reserved: 0 });
		});

		it("the TTL is counted on the database's clock: a node whose clock runs late cannot shorten it", async () => {
			const productId = await newProduct(2);
			const orderId = crypto.randomUUID();
			// This node's clock reads ten minutes early while it reserves.
			const realNow = Date.now.bind(Date);
			const skew = jest.spyOn(Date, "now").mockImplementation(() => realNow() - 600_000);
			try {
				await reserve(orderId, productId, 1);
			} finally {
				skew.mockRestore();
			}
			expect(await sweep()).toEqual({ released: 0 });
			expect(await reservation(orderId)).toMatchObject({ status: "RESERVED" });
			await sleep(TTL_MS + 150);
			expect(await sweep()).toEqual({ released: 1 });
		});

		it("the orders service decides: a reservation of an order past its pivot is kept, not expired", async () => {
			const productId = await newProduct(3);
			const orderId = crypto.randomUUID();
			const orders = (broker.getLocalService("orders") as unknown as { db: ShopDatabase }).db;
			// An order row as the saga leaves it at its pivot (its card charged).
			await fastQuery(
				orders,
				`INSERT INTO orders (id, user_id, customer_email, status, items, total, currency, payment_method)
				 VALUES ($1, $2, 'c@example.com', 'CONFIRMING', '[]'::jsonb, 100, 'EUR', 'tok_visa')`,
				{ bind: [orderId, crypto.randomUUID()] }
			);
			await reserve(orderId, productId, 2);
			await sleep(TTL_MS + 150);
			expect(await sweep()).toEqual({ released: 0 });
			expect(await reservation(orderId)).toMatchObject({
				status: "RESERVED",
				expiresAt: null
			});
			expect(await level(productId)).toMatchObject({ reserved: 2, available: 1 });
			// Its saga commits it whenever it can.
			await expect(broker.call("inventory.commit", { orderId })).resolves.toMatchObject({
				status: "COMMITTED"
			});
			expect(await level(productId)).toMatchObject({ onHand: 1, reserved: 0 });
		});

		it("release after expiry is a no-op success (EXPIRED), units untouched, no second event", async () => {
			const productId = await newProduct(4);
			const orderId = await expired(productId, 2);
			await expect(broker.call("inventory.release", { orderId })).resolves.toMatchObject({
				orderId,
				status: "EXPIRED"
			});
			await expect(broker.call("inventory.release", { orderId })).resolves.toMatchObject({
				status: "EXPIRED"
			});
			expect(await level(productId)).toEqual({
				productId,
				onHand: 4,
				reserved: 0,
				available: 4
			});
			expect(eventsOf(orderId)).toEqual([
				["stock.reserved", undefined],
				["stock.released", "EXPIRED"]
			]);
			// An expired order cannot reserve again.
			await expect(reserve(orderId, productId, 2)).rejects.toMatchObject({
				type: "INVENTORY_RESERVATION_EXPIRED",
				code: 409
			});
		});

		it("commit after expiry takes the units again when they are available", async () => {
			const productId = await newProduct(5);
			const orderId = await expired(productId, 2);
			await expect(broker.call("inventory.commit", { orderId })).resolves.toMatchObject({
				orderId,
				status: "COMMITTED",
				items: [{ productId, quantity: 2 }]
			});
			expect(await level(productId)).toEqual({
				productId,
				onHand: 3,
				reserved: 0,
				available: 3
			});
			expect(await reservation(orderId)).toMatchObject({ status: "COMMITTED" });
			// Idempotent like any commit; and a release after it is refused.
			await expect(broker.call("inventory.commit", { orderId })).resolves.toMatchObject({
				status: "COMMITTED"
			});
			expect(await level(productId)).toMatchObject({ onHand: 3 });
			await expect(broker.call("inventory.release", { orderId })).rejects.toMatchObject({
				type: "INVENTORY_RESERVATION_CONFLICT"
			});
			expect(eventsOf(orderId).map(([name]) => name)).toEqual([
				"stock.reserved",
				"stock.released",
				"stock.committed"
			]);
		});

		it("commit after expiry fails with INVENTORY_RESERVATION_EXPIRED when the units are gone, changing nothing", async () => {
			const productId = await newProduct(2);
			const orderId = await expired(productId, 2);
			// Someone else takes one of the two units meanwhile.
			const other = crypto.randomUUID();
			await reserve(other, productId, 1);
			await expect(broker.call("inventory.commit", { orderId })).rejects.toMatchObject({
				type: "INVENTORY_RESERVATION_EXPIRED",
				code: 409,
				retryable: false,
				data: { orderId, items: [{ productId, requested: 2, available: 1 }] }
			});
			expect(await level(productId)).toEqual({
				productId,
				onHand: 2,
				reserved: 1,
				available: 1
			});
			expect(await reservation(orderId)).toMatchObject({ status: "EXPIRED" });
			expect(eventsOf(orderId).map(([name]) => name)).not.toContain("stock.committed");
			// Leave nothing to expire into the next test's counts.
			await broker.call("inventory.release", { orderId: other });
		});

		it("two nodes sweeping at once release each expired reservation exactly once", async () => {
			const second = await startTestBroker(["inventory", "orders"], {
				prefix: t.prefix,
				env: {
					RESERVATION_TTL_MS: String(TTL_MS),
					RESERVATION_SWEEP_INTERVAL_MS: "3600000",
					SAGA_DEADLINE_MS: "1000"
				}
			});
			try {
				const a = await newProduct(100);
				const b = await newProduct(100);
				const orders = Array.from({ length: 60 }, () => crypto.randomUUID());
				await Promise.all(
					orders.map((orderId, i) =>
						broker.call("inventory.reserve", {
							orderId,
							items: [
								{ productId: i % 2 ? a : b, quantity: 1 },
								{ productId: i % 2 ? b : a, quantity: 1 }
							]
						})
					)
				);
				expect(await level(a)).toMatchObject({ reserved: 60 });
				await sleep(TTL_MS + 150);
				const sweeps = await Promise.all([
					sweep(),
					second.broker.call<{ released: number }>("inventory.releaseExpired"),
					sweep(),
					second.broker.call<{ released: number }>("inventory.releaseExpired")
				]);
				expect(sweeps.reduce((n, s) => n + s.released, 0)).toBe(60);
				expect(await level(a)).toEqual({
					productId: a,
					onHand: 100,
					reserved: 0,
					available: 100
				});
				expect(await level(b)).toMatchObject({ onHand: 100, reserved: 0 });
				const statuses = await Promise.all(orders.map(o => reservation(o)));
				expect(new Set(statuses.map(s => s?.status))).toEqual(new Set(["EXPIRED"]));
			} finally {
				await second.stop();
			}
		});
	});

	describe("swept by the timer", () => {
		let t: TestBroker;
		let broker: ServiceBroker;
		const events: { name: string; payload: StockEvent }[] = [];

		beforeAll(async () => {
			t = await startTestBroker(["inventory", "orders"], {
				env: {
					RESERVATION_TTL_MS: "1000",
					RESERVATION_SWEEP_INTERVAL_MS: "100",
					SAGA_DEADLINE_MS: "1000"
				},
				extra: [listener(events)]
			});
			broker = t.broker;
		});
		afterAll(async () => t?.stop());

		it("releases an expired reservation without anyone calling releaseExpired", async () => {
			const productId = crypto.randomUUID();
			await broker.call("inventory.setStock", { productId, onHand: 3 });
			const orderId = crypto.randomUUID();
			await broker.call("inventory.reserve", {
				orderId,
				items: [{ productId, quantity: 3 }]
			});
			expect(
				await broker.call<StockLevel, object>("inventory.get", { productId })
			).toMatchObject({ reserved: 3 });
			const r = await waitFor(
				() =>
					broker.call<ReservationView | null, object>("inventory.getReservation", {
						orderId
					}),
				v => v?.status === "EXPIRED",
				5_000
			);
			expect(r).toMatchObject({ status: "EXPIRED" });
			expect(await broker.call<StockLevel, object>("inventory.get", { productId })).toEqual({
				productId,
				onHand: 3,
				reserved: 0,
				available: 3
			});
			await waitFor(
				async () => events.filter(e => e.payload.orderId === orderId).length,
				n => n >= 2,
				2_000
			);
			expect(
				events
					.filter(e => e.payload.orderId === orderId)
					.map(e => [e.name, e.payload.reason])
			).toEqual([
				["stock.reserved", undefined],
				["stock.released", "EXPIRED"]
			]);
		});
	});
});
