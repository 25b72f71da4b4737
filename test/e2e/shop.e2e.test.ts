/**
 * End to end: the shop booted the way `npm start` boots it (one process, its own embedded
 * Postgres), driven over REST only.
 */
import { placeOrder } from "../support/overload-retry";
import { api, startShopProcess, type ShopProcess } from "../support/shop-process";

const ADMIN = { email: "admin@example.com", password: "e2e-admin-password" };

async function until<T>(
	fn: () => Promise<T>,
	ok: (v: T) => boolean,
	timeoutMs = 20_000
): Promise<T> {
	const end = Date.now() + timeoutMs;
	let v = await fn();
	while (!ok(v) && Date.now() < end) {
		await new Promise(r => setTimeout(r, 100));
		v = await fn();
	}
	return v;
}

describe("the shop over REST (npm start form)", () => {
	let shop: ShopProcess;
	let base: string;
	let ann: { token: string; id: string };
	let bob: { token: string; id: string };
	let adminToken: string;
	const timings: Record<string, number> = {};

	const register = async (email: string): Promise<{ token: string; id: string }> => {
		const r = await api(base, "POST", "/api/users/register", {
			body: { email, password: "correct horse battery", name: email.split("@")[0] }
		});
		expect(r.status).toBe(201);
		return { token: r.body.token, id: r.body.user.id };
	};
	const finalOrder = (token: string, id: string) =>
		until(
			() => api(base, "GET", `/api/orders/${id}`, { token }),
			r => r.body?.status === "CONFIRMED" || r.body?.status === "CANCELLED"
		);
	const stockOf = async (productId: string) =>
		(await api(base, "GET", `/api/inventory/${productId}`)).body;

	beforeAll(async () => {
		shop = await startShopProcess({
			env: {
				NODE_ENV: "production",
				JWT_SECRET: "e2e-secret-e2e-secret-e2e-secret-0123456",
				ADMIN_PASSWORD: ADMIN.password
			}
		});
		timings.firstStartMs = shop.startupMs;
		base = shop.url;
		ann = await register("ann@example.com");
		bob = await register("bob@example.com");
		const login = await api(base, "POST", "/api/users/login", { body: ADMIN });
		expect(login.status).toBe(200);
		adminToken = login.body.token;
	}, 120_000);

	afterAll(async () => {
		if (shop) await shop.stop();
		console.log(`e2e start-up times (ms): ${JSON.stringify(timings)}`);
	});

	it("answers liveness and readiness", async () => {
		expect((await api(base, "GET", "/health")).status).toBe(200);
		const ready = await api(base, "GET", "/ready");
		expect(ready.status).toBe(200);
		expect(ready.body.checks).toEqual({
			users: "ok",
			products: "ok",
			inventory: "ok",
			orders: "ok",
			payments: "ok",
			notifications: "ok"
		});
	});

	it("logs in, answers me, and lists and searches the demo catalog", async () => {
		const login = await api(base, "POST", "/api/users/login", {
			body: { email: "ANN@example.com", password: "correct horse battery" }
		});
		expect(login.status).toBe(200);
		expect(login.body.user).toMatchObject({ email: "ann@example.com", role: "customer" });
		const me = await api(base, "GET", "/api/users/me", { token: login.body.token });
		expect(me.body).toEqual({
			id: ann.id,
			email: "ann@example.com",
			name: "ann",
			role: "customer"
		});
		const page = await api(base, "GET", "/api/products?page=1&pageSize=5");
		expect(page.status).toBe(200);
		expect(page.body).toMatchObject({ page: 1, pageSize: 5 });
		expect(page.body.total).toBeGreaterThanOrEqual(20);
		expect(page.body.rows).toHaveLength(5);
		const search = await api(base, "GET", "/api/products?search=KEYBOARD");
		expect(search.body.rows.map((p: { sku: string }) => p.sku)).toContain("KB-MECH-87");
	});

	it("takes an order through the saga to CONFIRMED: stock down, one notification", async () => {
		const mug = (await api(base, "GET", "/api/products?search=mug")).body.rows[0];
		const before = await stockOf(mug.id);
		const placed = await api(base, "POST", "/api/orders", {
			token: ann.token,
			body: { items: [{ productId: mug.id, quantity: 3 }], paymentMethod: "tok_visa" }
		});
		expect(placed.status).toBe(202);
		expect(placed.body).toMatchObject({
			status: "PENDING",
			total: mug.price * 3,
			currency: "USD"
		});
		const done = await finalOrder(ann.token, placed.body.id);
		expect(done.body.status).toBe("CONFIRMED");
		expect(await stockOf(mug.id)).toEqual({
			productId: mug.id,
			onHand: before.onHand - 3,
			reserved: 0,
			available: before.onHand - 3
		});
		const notes = await until(
			() => api(base, "GET", "/api/notifications", { token: ann.token }),
			r => r.body.rows.some((n: { orderId: string }) => n.orderId === placed.body.id)
		);
		expect(
			notes.body.rows.filter((n: { orderId: string }) => n.orderId === placed.body.id)
		).toEqual([expect.objectContaining({ kind: "ORDER_CONFIRMED", orderId: placed.body.id })]);
	});

	it("cancels an order beyond stock as OUT_OF_STOCK and leaves the stock unchanged", async () => {
		const chair = (await api(base, "GET", "/api/products?search=chair")).body.rows[0];
		const before = await stockOf(chair.id);
		const placed = await api(base, "POST", "/api/orders", {
			token: ann.token,
			body: {
				items: [{ productId: chair.id, quantity: before.available + 1 }],
				paymentMethod: "tok_visa"
			}
		});
		expect(placed.status).toBe(202);
		const done = await finalOrder(ann.token, placed.body.id);
		expect(done.body).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "OUT_OF_STOCK"
		});
		expect(await stockOf(chair.id)).toEqual(before);
	});

	it("cancels a declined card as PAYMENT_DECLINED and releases the stock", async () => {
		const cable = (await api(base, "GET", "/api/products?search=cable")).body.rows[0];
		const before = await stockOf(cable.id);
		const placed = await api(base, "POST", "/api/orders", {
			token: bob.token,
			body: {
				items: [{ productId: cable.id, quantity: 2 }],
				paymentMethod: "tok_chargeDeclined"
			}
		});
		const done = await finalOrder(bob.token, placed.body.id);
		expect(done.body).toMatchObject({
			status: "CANCELLED",
			cancellationReason: "PAYMENT_DECLINED"
		});
		expect(await stockOf(cable.id)).toEqual(before);
		const notes = await until(
			() => api(base, "GET", "/api/notifications", { token: bob.token }),
			r => r.body.rows.some((n: { orderId: string }) => n.orderId === placed.body.id)
		);
		expect(
			notes.body.rows.find((n: { orderId: string }) => n.orderId === placed.body.id).kind
		).toBe("ORDER_CANCELLED");
	});

	it("returns the same order for a repeated Idempotency-Key", async () => {
		const mug = (await api(base, "GET", "/api/products?search=mug")).body.rows[0];
		const body = { items: [{ productId: mug.id, quantity: 1 }], paymentMethod: "tok_visa" };
		const headers = { "Idempotency-Key": "e2e-key-1" };
		const a = await api(base, "POST", "/api/orders", { token: bob.token, body, headers });
		const b = await api(base, "POST", "/api/orders", { token: bob.token, body, headers });
		expect(a.status).toBe(202);
		expect(b.status).toBe(202);
		expect(b.body.id).toBe(a.body.id);
		const other = await api(base, "POST", "/api/orders", {
			token: bob.token,
			body: { ...body, paymentMethod: "tok_mastercard" },
			headers
		});
		expect(other.status).toBe(422);
		expect(other.body.type).toBe("ORDERS_IDEMPOTENCY_KEY_REUSED");
	});

	it("guards access: 401 without a token, 404 for another customer's order, 403 for customers on admin routes", async () => {
		const noToken = await api(base, "POST", "/api/orders", {
			body: { items: [], paymentMethod: "tok_visa" }
		});
		expect(noToken.status).toBe(401);
		expect(noToken.body.type).toBe("AUTH_TOKEN_MISSING");
		const anns = await api(base, "GET", "/api/orders", { token: ann.token });
		const id = anns.body.rows[0].id;
		const asBob = await api(base, "GET", `/api/orders/${id}`, { token: bob.token });
		expect(asBob.status).toBe(404);
		expect(asBob.body.type).toBe("ORDERS_NOT_FOUND");
		expect((await api(base, "GET", `/api/orders/${id}`, { token: adminToken })).status).toBe(
			200
		);
		const forbidden = await api(base, "GET", "/api/admin/sagas", { token: ann.token });
		expect(forbidden.status).toBe(403);
		expect(forbidden.body.type).toBe("AUTH_FORBIDDEN");
		const sagas = await api(base, "GET", "/api/admin/sagas?status=COMPLETED", {
			token: adminToken
		});
		expect(sagas.status).toBe(200);
		expect(sagas.body.rows.length).toBeGreaterThan(0);
		for (const path of ["/api/admin/outbox", "/api/admin/dead-letters"]) {
			const asCustomer = await api(base, "GET", path, { token: ann.token });
			expect([path, asCustomer.status]).toEqual([path, 403]);
		}
		const outbox = await api(base, "GET", "/api/admin/outbox", { token: adminToken });
		expect(outbox.status).toBe(200);
		for (const service of ["orders", "inventory", "payments", "products"])
			expect(outbox.body[service]).toMatchObject({
				pending: expect.any(Number),
				oldestPendingAgeMs: expect.any(Number),
				mode: "local"
			});
		const letters = await api(base, "GET", "/api/admin/dead-letters", { token: adminToken });
		expect(letters.status).toBe(200);
		expect(letters.body).toMatchObject({ rows: [], total: 0 });
		const replay = await api(
			base,
			"POST",
			"/api/admin/dead-letters/00000000-0000-4000-8000-000000000000/replay",
			{ token: adminToken }
		);
		expect([replay.status, replay.body.type]).toEqual([404, "EVENTS_DEAD_LETTER_NOT_FOUND"]);
		const forged = await api(base, "GET", "/api/users/me", {
			token: ann.token.slice(0, -2) + (ann.token.endsWith("A") ? "BB" : "AA")
		});
		expect(forged.status).toBe(401);
		expect(forged.body.type).toBe("AUTH_TOKEN_INVALID");
	});

	it("answers bad input with a 4xx in the contract's form, without internals", async () => {
		const badJson = await api(base, "POST", "/api/users/login", {
			raw: '{"email":',
			headers: { "Content-Type": "application/json" }
		});
		expect(badJson.status).toBe(400);
		expect(badJson.body).toMatchObject({ code: 400, type: "REQUEST_INVALID_JSON" });
		const invalid = await api(base, "POST", "/api/users/register", {
			body: { email: "not-an-email", password: "x", name: "" }
		});
		expect(invalid.status).toBe(422);
		expect(invalid.body.type).toBe("VALIDATION_ERROR");
		expect(invalid.body.data.map((d: { field: string }) => d.field).sort()).toEqual([
			"email",
			"name",
			"password"
		]);
		for (const path of [
			"/api/payments/charge",
			"/api/$node/list",
			"/api/users/resolveToken",
			"/nope"
		]) {
			const r = await api(base, "POST", path, { body: {} });
			expect([r.status, r.body.type]).toEqual([404, "REQUEST_NOT_FOUND"]);
		}
		// A path of a route (`/api/inventory/:productId`) with a method it does not have: 405.
		const reserve = await api(base, "POST", "/api/inventory/reserve", { body: {} });
		expect([reserve.status, reserve.body.type, reserve.headers.get("allow")]).toEqual([
			405,
			"REQUEST_METHOD_NOT_ALLOWED",
			"GET, PUT"
		]);
		const text = await api(base, "POST", "/api/users/login", {
			raw: "email=a",
			headers: { "Content-Type": "text/plain" }
		});
		expect([text.status, text.body.type]).toEqual([415, "REQUEST_UNSUPPORTED_MEDIA_TYPE"]);
		const arr = await api(base, "POST", "/api/users/login", { body: [1, 2] });
		expect([arr.status, arr.body.type]).toEqual([400, "REQUEST_BODY_NOT_OBJECT"]);
		const big = await api(base, "POST", "/api/users/login", {
			raw: JSON.stringify({ email: "a@b.co", password: "x".repeat(1_100_000) }),
			headers: { "Content-Type": "application/json" }
		});
		expect([big.status, big.body.type]).toEqual([413, "REQUEST_BODY_TOO_LARGE"]);
		for (const r of [badJson, invalid, text, arr, big]) {
			expect(Object.keys(r.body).sort()).toEqual(
				expect.arrayContaining(["code", "message", "name", "type"])
			);
			expect(JSON.stringify(r.body)).not.toMatch(/stack|\/work\/|node_modules|at .*\.js/);
		}
	});

	it("accepts, returns and generates X-Request-ID", async () => {
		const mine = await api(base, "GET", "/api/products?pageSize=1", {
			headers: { "X-Request-ID": "req-e2e-42" }
		});
		expect(mine.headers.get("x-request-id")).toBe("req-e2e-42");
		const generated = await api(base, "GET", "/api/products?pageSize=1");
		expect(generated.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
		const hostile = await api(base, "GET", "/api/products?pageSize=1", {
			headers: { "X-Request-ID": "a b\tc" }
		});
		expect(hostile.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
		expect(mine.headers.get("x-content-type-options")).toBe("nosniff");
		expect(mine.headers.get("x-powered-by")).toBeNull();
	});

	it("never oversells: 50 simultaneous one-unit orders for 20 in stock end 20 CONFIRMED, 30 OUT_OF_STOCK", async () => {
		const created = await api(base, "POST", "/api/products", {
			token: adminToken,
			body: {
				sku: "E2E-RACE-1",
				name: "Limited Edition Keycap",
				description: "Twenty made.",
				price: 2500,
				currency: "USD",
				stock: 20
			}
		});
		expect(created.status).toBe(201);
		const productId = created.body.id;
		const customers = [
			ann,
			bob,
			...(await Promise.all([1, 2, 3].map(i => register(`race${i}@example.com`))))
		];
		// 50 at once are more than the orders node's adaptive limit admits (it starts at 20):
		// the rest answer 503 ORDERS_OVERLOADED and are sent again after Retry-After with the
		// same Idempotency-Key, as a client does.
		const placed = await Promise.all(
			Array.from({ length: 50 }, (_, i) =>
				placeOrder(base, {
					token: customers[i % customers.length]!.token,
					body: { items: [{ productId, quantity: 1 }], paymentMethod: "tok_visa" }
				})
			)
		);
		expect(placed.map(p => p.status)).toEqual(Array(50).fill(202));
		const finals = await Promise.all(
			placed.map((p, i) => finalOrder(customers[i % customers.length]!.token, p.body.id))
		);
		const confirmed = finals.filter(f => f.body.status === "CONFIRMED");
		const cancelled = finals.filter(f => f.body.status === "CANCELLED");
		expect(confirmed).toHaveLength(20);
		expect(cancelled).toHaveLength(30);
		expect(new Set(cancelled.map(c => c.body.cancellationReason))).toEqual(
			new Set(["OUT_OF_STOCK"])
		);
		expect(await stockOf(productId)).toEqual({
			productId,
			onHand: 0,
			reserved: 0,
			available: 0
		});
	}, 90_000);

	it("keeps its data across a restart without re-initialising Postgres", async () => {
		const orders = await api(base, "GET", "/api/orders", { token: ann.token });
		expect(shop.output()).toContain("Initialising Postgres");
		const code = await shop.stop();
		expect(code).toBe(0);
		shop = await startShopProcess({
			dataDir: shop.dataDir,
			env: {
				NODE_ENV: "production",
				JWT_SECRET: shop.env.JWT_SECRET!,
				ADMIN_PASSWORD: ADMIN.password
			}
		});
		timings.secondStartMs = shop.startupMs;
		base = shop.url;
		expect(shop.output()).not.toContain("Initialising Postgres");
		const again = await api(base, "GET", "/api/orders", { token: ann.token });
		expect(
			again.body.rows.map((o: { id: string; status: string }) => [o.id, o.status])
		).toEqual(orders.body.rows.map((o: { id: string; status: string }) => [o.id, o.status]));
	}, 120_000);
});
