import crypto from "node:crypto";
import type { ServiceBroker } from "moleculer";
import type { ShopMeta } from "../../platform/context";
import { DEMO_CATALOG } from "../../services/products/demo-catalog";
import type { Page, Product } from "../../services/products/products.model";
import { admin, customer, startTestBroker, type TestBroker } from "../support/broker";

describe("products", () => {
	let t: TestBroker;
	let broker: ServiceBroker;
	const asAdmin = { meta: { user: admin } as ShopMeta };
	const sku = (tag: string): string =>
		`${tag}-${crypto.randomBytes(4).toString("hex")}`.toUpperCase();

	beforeAll(async () => {
		t = await startTestBroker(["products", "inventory"]);
		broker = t.broker;
	});
	afterAll(async () => t?.stop());

	const list = (params: Record<string, unknown> = {}): Promise<Page<Product>> =>
		broker.call("products.list", params);
	const create = (
		params: Record<string, unknown>,
		meta: ShopMeta = { user: admin }
	): Promise<Product & { stock?: number }> => broker.call("products.create", params, { meta });

	/** Every product `list` shows, all pages. */
	async function listAll(search?: string): Promise<Product[]> {
		const out: Product[] = [];
		for (let page = 1; ; page++) {
			const p = await list({
				page,
				pageSize: 100,
				...(search === undefined ? {} : { search })
			});
			out.push(...p.rows);
			if (page >= p.totalPages) return out;
		}
	}

	describe("demo catalog", () => {
		it("is seeded: at least 20 products with sku, name, description, a positive integer price in USD", async () => {
			const all = await listAll();
			expect(all.length).toBeGreaterThanOrEqual(20);
			expect(all.length).toBe(DEMO_CATALOG.length);
			for (const p of all) {
				expect(p.sku).toMatch(/^[A-Za-z0-9._-]+$/);
				expect(p.name.length).toBeGreaterThan(0);
				expect(p.description.length).toBeGreaterThan(0);
				expect(Number.isInteger(p.price)).toBe(true);
				expect(p.price).toBeGreaterThan(0);
				expect(p.currency).toBe("USD");
				expect(p.active).toBe(true);
			}
			expect(new Set(all.map(p => p.sku)).size).toBe(all.length);
			const first = DEMO_CATALOG[0]!;
			await expect(broker.call("products.get", { id: first.id })).resolves.toMatchObject({
				id: first.id,
				sku: first.sku,
				price: first.price,
				currency: "USD"
			});
		});

		it("is seeded idempotently: seeding again, or a second node on the same databases, adds nothing", async () => {
			const before = (await list()).total;
			const svc = broker.getLocalService("products") as unknown as {
				schema: { afterConnected(this: unknown): Promise<void> };
			};
			await svc.schema.afterConnected.call(svc);
			expect((await list()).total).toBe(before);

			const second = await startTestBroker(["products"], {
				env: { DATABASE_PREFIX: t.prefix }
			});
			try {
				const p: Page<Product> = await second.broker.call("products.list", { pageSize: 1 });
				expect(p.total).toBe(before);
			} finally {
				await second.stop();
			}
			expect((await list()).total).toBe(before);
		});
	});

	describe("list", () => {
		it("pages: page, pageSize, total, totalPages, no overlap between pages, by name", async () => {
			const total = (await list()).total;
			const p1 = await list({ page: 1, pageSize: 7 });
			const p2 = await list({ page: 2, pageSize: 7 });
			expect(p1).toMatchObject({
				page: 1,
				pageSize: 7,
				total,
				totalPages: Math.ceil(total / 7)
			});
			expect(p1.rows).toHaveLength(7);
			expect(p2.rows).toHaveLength(7);
			const ids1 = new Set(p1.rows.map(r => r.id));
			expect(p2.rows.some(r => ids1.has(r.id))).toBe(false);
			const names = [...p1.rows, ...p2.rows].map(r => r.name);
			expect(names).toEqual([...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));

			const last = await list({ page: Math.ceil(total / 7), pageSize: 7 });
			expect(last.rows).toHaveLength(total - 7 * (Math.ceil(total / 7) - 1));
			const beyond = await list({ page: Math.ceil(total / 7) + 1, pageSize: 7 });
			expect(beyond).toMatchObject({ rows: [], total });
		});

		it("defaults to page 1 of 20 and converts query-string numbers", async () => {
			await expect(list()).resolves.toMatchObject({ page: 1, pageSize: 20 });
			const p = await list({ page: "2", pageSize: "5" });
			expect(p).toMatchObject({ page: 2, pageSize: 5 });
			expect(p.rows).toHaveLength(5);
		});

		it.each([
			[{ page: 0 }, "page"],
			[{ pageSize: 101 }, "pageSize"],
			[{ pageSize: 0 }, "pageSize"],
			[{ search: "x".repeat(101) }, "search"]
		])("rejects %p with VALIDATION_ERROR 422", async (params, field) => {
			await expect(list(params)).rejects.toMatchObject({
				type: "VALIDATION_ERROR",
				code: 422,
				data: [expect.objectContaining({ field })]
			});
		});

		it("searches name, SKU and description case-insensitively", async () => {
			const byName = await listAll("mechanical KEYBOARD");
			expect(byName.map(p => p.sku)).toEqual(["KB-MECH-87"]);
			const bySku = await listAll("kb-mech");
			expect(bySku.map(p => p.sku)).toEqual(["KB-MECH-87"]);
			const byDescription = await listAll("KLEPPMANN");
			expect(byDescription.map(p => p.sku)).toEqual(["BK-DDIA"]);
			const several = await listAll("usb-c");
			const expected = DEMO_CATALOG.filter(p =>
				[p.name, p.sku, p.description].some(s => s.toLowerCase().includes("usb-c"))
			);
			expect(several.map(p => p.id).sort()).toEqual(expected.map(p => p.id).sort());
			expect(several.length).toBeGreaterThan(1);
		});

		it("matches % and _ literally, not as wildcards", async () => {
			const pct = await create({ sku: sku("PCT"), name: "Half off 50% Voucher", price: 500 });
			const und = await create({ sku: sku("UND"), name: "Snake_case Poster", price: 700 });
			expect((await listAll("50%")).map(p => p.id)).toEqual([pct.id]);
			// The demo monitor's description says "99% sRGB": every literal % matches, nothing else.
			const withPercent = DEMO_CATALOG.filter(p => p.description.includes("%")).map(
				p => p.id
			);
			expect(withPercent.length).toBeGreaterThan(0);
			expect((await listAll("%")).map(p => p.id).sort()).toEqual(
				[pct.id, ...withPercent].sort()
			);
			expect((await listAll("e_c")).map(p => p.id)).toEqual([und.id]);
			expect((await listAll("_")).map(p => p.id)).toEqual([und.id]);
			// "5_%" would match "50%" if _ were a wildcard.
			expect(await listAll("5_%")).toEqual([]);
		});

		it.each([
			"' OR 1=1 --",
			"'; DROP TABLE products; --",
			"\\",
			"x' UNION SELECT * FROM products --"
		])("answers normally for an injection-looking search %p", async search => {
			const p = await list({ search });
			expect(p).toMatchObject({ rows: [], total: 0, totalPages: 0, page: 1 });
			expect((await list()).total).toBeGreaterThanOrEqual(DEMO_CATALOG.length);
		});

		it("shows only active products, while get still answers an inactive one", async () => {
			const p = await create({
				sku: sku("OFF"),
				name: "Discontinued Gadget",
				price: 100,
				active: false
			});
			expect(await listAll("Discontinued Gadget")).toEqual([]);
			await expect(broker.call("products.get", { id: p.id })).resolves.toMatchObject({
				id: p.id,
				active: false
			});
		});
	});

	describe("get", () => {
		it("answers PRODUCTS_NOT_FOUND 404 for an unknown id", async () => {
			const id = crypto.randomUUID();
			await expect(broker.call("products.get", { id })).rejects.toMatchObject({
				type: "PRODUCTS_NOT_FOUND",
				code: 404,
				data: { id }
			});
		});

		it.each(["not-a-uuid", "1", "' OR 1=1 --"])(
			"answers VALIDATION_ERROR 422 for the malformed id %p",
			async id => {
				await expect(broker.call("products.get", { id })).rejects.toMatchObject({
					type: "VALIDATION_ERROR",
					code: 422,
					data: [expect.objectContaining({ field: "id" })]
				});
			}
		);
	});

	describe("create", () => {
		it("as admin: answers 201 with the product, listed and gettable", async () => {
			const meta: ShopMeta = { user: admin };
			const s = sku("NEW");
			const p = await create({ sku: s, name: "  Brand New Thing  ", price: 1234 }, meta);
			expect(meta.$statusCode).toBe(201);
			expect(p).toMatchObject({
				id: expect.stringMatching(/^[0-9a-f-]{36}$/),
				sku: s,
				name: "Brand New Thing",
				description: "",
				price: 1234,
				currency: "USD",
				active: true
			});
			expect(p).not.toHaveProperty("stock");
			await expect(broker.call("products.get", { id: p.id })).resolves.toEqual(p);
			expect((await listAll(s)).map(r => r.id)).toEqual([p.id]);
		});

		it("with stock: also sets its units on hand in inventory", async () => {
			const p = await create({
				sku: sku("STK"),
				name: "Stocked",
				price: 999,
				currency: "EUR",
				stock: 12
			});
			expect(p).toMatchObject({ currency: "EUR", stock: 12 });
			await expect(broker.call("inventory.get", { productId: p.id })).resolves.toEqual({
				productId: p.id,
				onHand: 12,
				reserved: 0,
				available: 12
			});
			const noStock = await create({ sku: sku("NOSTK"), name: "Unstocked", price: 999 });
			await expect(
				broker.call("inventory.get", { productId: noStock.id })
			).rejects.toMatchObject({
				type: "INVENTORY_NOT_FOUND"
			});
		});

		it("as customer: AUTH_FORBIDDEN 403 and nothing created", async () => {
			const s = sku("CUST");
			await expect(
				create({ sku: s, name: "Nope", price: 100 }, { user: customer() })
			).rejects.toMatchObject({
				type: "AUTH_FORBIDDEN",
				code: 403
			});
			expect(await listAll(s)).toEqual([]);
		});

		it("refuses a taken SKU with PRODUCTS_SKU_TAKEN 409", async () => {
			const s = sku("DUP");
			await create({ sku: s, name: "First", price: 100 });
			await expect(create({ sku: s, name: "Second", price: 200 })).rejects.toMatchObject({
				type: "PRODUCTS_SKU_TAKEN",
				code: 409
			});
			await expect(
				create({ sku: DEMO_CATALOG[0]!.sku, name: "Clash", price: 200 })
			).rejects.toMatchObject({
				type: "PRODUCTS_SKU_TAKEN"
			});
			expect((await listAll(s)).map(p => p.name)).toEqual(["First"]);
		});

		it.each([
			["negative", -1],
			["fractional", 12.5],
			["a string", "100"],
			["too large", 1_000_000_001]
		])("refuses a %s price with VALIDATION_ERROR 422", async (_label, price) => {
			const s = sku("PRICE");
			await expect(create({ sku: s, name: "Bad price", price })).rejects.toMatchObject({
				type: "VALIDATION_ERROR",
				code: 422,
				data: [expect.objectContaining({ field: "price" })]
			});
			expect(await listAll(s)).toEqual([]);
		});

		it("refuses a bad SKU, a lower-case currency and unknown fields with 422", async () => {
			await expect(create({ sku: "has space", name: "X", price: 1 })).rejects.toMatchObject({
				type: "VALIDATION_ERROR",
				data: [expect.objectContaining({ field: "sku" })]
			});
			await expect(
				create({ sku: sku("CUR"), name: "X", price: 1, currency: "usd" })
			).rejects.toMatchObject({
				type: "VALIDATION_ERROR",
				data: [expect.objectContaining({ field: "currency" })]
			});
			await expect(
				create({ sku: sku("EXTRA"), name: "X", price: 1, id: crypto.randomUUID() })
			).rejects.toMatchObject({
				type: "VALIDATION_ERROR",
				data: [expect.objectContaining({ type: "objectStrict" })]
			});
		});
	});

	describe("durable events", () => {
		it("writes product.created, product.updated and product.priceChanged to its outbox and publishes them", async () => {
			const p = await create({ sku: sku("EVT"), name: "Evented Thing", price: 700 });
			await broker.call("products.update", { id: p.id, name: "Renamed Thing" }, asAdmin);
			await broker.call("products.update", { id: p.id, price: 650 }, asAdmin);
			const sequelize = (
				broker.getLocalService("products") as unknown as {
					sequelize: { query(sql: string, o: object): Promise<unknown> };
				}
			).sequelize;
			const rows = (await sequelize.query(
				"SELECT name, data, published_at IS NOT NULL AS sent FROM outbox WHERE aggregate_id = $1 ORDER BY seq",
				{ bind: [p.id], type: "SELECT" }
			)) as { name: string; data: Record<string, unknown>; sent: boolean }[];
			expect(rows.map(r => r.name)).toEqual([
				"product.created",
				"product.updated",
				"product.updated",
				"product.priceChanged"
			]);
			expect(rows[3]!.data).toEqual({
				productId: p.id,
				oldPrice: 700,
				newPrice: 650,
				currency: "USD"
			});
			// The relay publishes after each commit.
			const status = await (async () => {
				for (let i = 0; i < 100; i++) {
					const s: { pending: number; mode: string } =
						await broker.call("products.outboxStatus");
					if (s.pending === 0) return s;
					await new Promise(r => setTimeout(r, 20));
				}
				return broker.call("products.outboxStatus");
			})();
			expect(status).toMatchObject({ pending: 0, mode: "local" });
		});

		it("a failed change writes no event (same transaction)", async () => {
			const taken = sku("DUP");
			const first = await create({ sku: taken, name: "First", price: 100 });
			await expect(create({ sku: taken, name: "Second", price: 100 })).rejects.toMatchObject({
				type: "PRODUCTS_SKU_TAKEN"
			});
			const sequelize = (
				broker.getLocalService("products") as unknown as {
					sequelize: { query(sql: string, o: object): Promise<unknown> };
				}
			).sequelize;
			const rows = (await sequelize.query(
				"SELECT count(*)::int AS n FROM outbox WHERE name = 'product.created' AND data->>'sku' = $1",
				{ bind: [taken], type: "SELECT" }
			)) as { n: number }[];
			expect(rows[0]!.n).toBe(1);
			expect(first.sku).toBe(taken);
		});
	});

	describe("update and the cache", () => {
		/** The cacher's key of `products.get` for `id`, as its middleware computes it. */
		const getCacheKey = (id: string): string =>
			(
				broker.cacher as unknown as {
					getCacheKey(
						action: { name: string },
						opts: { keys: string[] },
						ctx: { params: object }
					): string;
				}
			).getCacheKey({ name: "products.get" }, { keys: ["id"] }, { params: { id } });

		it("a cached product shows its new price after an update", async () => {
			const p = await create({ sku: sku("CACHE"), name: "Cached Thing", price: 1000 });
			const cached: Product = await broker.call("products.get", { id: p.id });
			expect(cached.price).toBe(1000);
			// The read is cached (else this test could not catch a stale cache).
			expect(await broker.cacher!.get(getCacheKey(p.id))).toMatchObject({ price: 1000 });
			const listed = await listAll("Cached Thing");
			expect(listed.map(r => r.price)).toEqual([1000]);

			const updated: Product = await broker.call(
				"products.update",
				{ id: p.id, price: 1500 },
				asAdmin
			);
			expect(updated.price).toBe(1500);
			await expect(broker.call("products.get", { id: p.id })).resolves.toMatchObject({
				price: 1500
			});
			expect(await broker.cacher!.get(getCacheKey(p.id))).toMatchObject({ price: 1500 });
			expect((await listAll("Cached Thing")).map(r => r.price)).toEqual([1500]);
		});

		it("a cached product and list are cleaned when it is removed (moleculer-db's entityChanged)", async () => {
			const p = await create({ sku: sku("GONE"), name: "Removable Thing", price: 1000 });
			await expect(broker.call("products.get", { id: p.id })).resolves.toMatchObject({
				id: p.id
			});
			expect((await listAll("Removable Thing")).map(r => r.id)).toEqual([p.id]);
			// Both reads are cached (else this test could not catch a stale cache).
			expect(await broker.cacher!.get(getCacheKey(p.id))).toMatchObject({ id: p.id });

			const removed: Product = await broker.call("products.remove", { id: p.id }, asAdmin);
			expect(removed).toEqual(p);
			// Gone from the cacher (the memory cacher answers undefined, Redis null).
			expect([null, undefined]).toContain(await broker.cacher!.get(getCacheKey(p.id)));
			await expect(broker.call("products.get", { id: p.id })).rejects.toMatchObject({
				type: "PRODUCTS_NOT_FOUND",
				code: 404,
				data: { id: p.id }
			});
			expect(await listAll("Removable Thing")).toEqual([]);
			await expect(
				broker.call("products.resolve", { ids: [p.id, DEMO_CATALOG[0]!.id] })
			).resolves.toEqual([expect.objectContaining({ id: DEMO_CATALOG[0]!.id })]);
			const sequelize = (
				broker.getLocalService("products") as unknown as {
					sequelize: { query(sql: string, o: object): Promise<unknown> };
				}
			).sequelize;
			const rows = (await sequelize.query(
				"SELECT name, data FROM outbox WHERE aggregate_id = $1 ORDER BY seq",
				{ bind: [p.id], type: "SELECT" }
			)) as { name: string; data: Record<string, unknown> }[];
			expect(rows.map(r => r.name)).toEqual(["product.created", "product.removed"]);
			expect(rows[1]!.data).toEqual(p);
		});

		it("remove: customers are forbidden, unknown ids are not found, nothing else removed", async () => {
			const p = await create({ sku: sku("KEEP"), name: "Kept Thing", price: 1000 });
			await expect(
				broker.call("products.remove", { id: p.id }, { meta: { user: customer() } })
			).rejects.toMatchObject({ type: "AUTH_FORBIDDEN", code: 403 });
			await expect(broker.call("products.get", { id: p.id })).resolves.toMatchObject({
				id: p.id
			});
			const id = crypto.randomUUID();
			await expect(broker.call("products.remove", { id }, asAdmin)).rejects.toMatchObject({
				type: "PRODUCTS_NOT_FOUND",
				code: 404,
				data: { id }
			});
			await expect(
				broker.call("products.remove", { id: "not-a-uuid" }, asAdmin)
			).rejects.toMatchObject({ type: "VALIDATION_ERROR", code: 422 });
			expect((await list()).total).toBeGreaterThanOrEqual(DEMO_CATALOG.length);
		});

		it("moleculer-db's adapter calls inside a managed transaction commit or roll back with it", async () => {
			const svc = broker.getLocalService("products") as unknown as {
				sequelize: {
					transaction<T>(work: () => Promise<T>): Promise<T>;
					query(sql: string, o: object): Promise<unknown>;
				};
				adapter: {
					insert(entity: object): Promise<unknown>;
					findById(id: string): Promise<unknown>;
				};
			};
			const entity = (tag: string): { id: string } & Record<string, unknown> => ({
				id: crypto.randomUUID(),
				sku: sku(tag),
				name: `Scoped ${tag}`,
				description: "",
				price: 100,
				currency: "USD",
				active: true
			});
			/** Whether the row is visible on a connection of its own (`transaction: null`). */
			const committedRow = async (id: string): Promise<boolean> => {
				const rows = (await svc.sequelize.query("SELECT 1 FROM products WHERE id = $1", {
					bind: [id],
					type: "SELECT",
					transaction: null
				})) as unknown[];
				return rows.length === 1;
			};
			const rolledBack = entity("RB");
			await expect(
				svc.sequelize.transaction(async () => {
					await svc.adapter.insert(rolledBack);
					// The transaction sees its row; another connection does not (not committed).
					expect(await svc.adapter.findById(rolledBack.id)).not.toBeNull();
					expect(await committedRow(rolledBack.id)).toBe(false);
					throw new Error("roll back");
				})
			).rejects.toThrow("roll back");
			expect(await svc.adapter.findById(rolledBack.id)).toBeNull();

			const committed = entity("OK");
			await svc.sequelize.transaction(async () => {
				await svc.adapter.insert(committed);
				expect(await committedRow(committed.id)).toBe(false);
			});
			expect(await committedRow(committed.id)).toBe(true);
		});

		it("update: customers are forbidden, unknown ids are not found", async () => {
			const p = await create({ sku: sku("UPD"), name: "Updatable", price: 1000 });
			await expect(
				broker.call(
					"products.update",
					{ id: p.id, price: 1 },
					{ meta: { user: customer() } }
				)
			).rejects.toMatchObject({ type: "AUTH_FORBIDDEN", code: 403 });
			await expect(broker.call("products.get", { id: p.id })).resolves.toMatchObject({
				price: 1000
			});
			await expect(
				broker.call("products.update", { id: crypto.randomUUID(), price: 1 }, asAdmin)
			).rejects.toMatchObject({ type: "PRODUCTS_NOT_FOUND", code: 404 });
		});
	});
});
