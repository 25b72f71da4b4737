/**
 * Hostile input at the gateway in production mode (issue #6, part 2, category 20): no error body
 * carries a stack trace, a path, node_modules or SQL. Its own shop, with NODE_ENV=production.
 */
import {
	ADMIN,
	count,
	jwt,
	JWT_SECRET,
	PASSWORD,
	problems,
	send,
	sendRaw,
	SHOP_ENV,
	tally,
	UNKNOWN_ID,
	type Hostile,
	type Reply
} from "../../support/hostile";
import { startShopProcess, type ShopProcess } from "../../support/shop-process";

describe("hostile input in production mode", () => {
	let shop: ShopProcess;
	let base: string;
	let adminToken: string;
	let customer: string;
	let mugId: string;

	beforeAll(async () => {
		shop = await startShopProcess({ env: { ...SHOP_ENV, NODE_ENV: "production" } });
		base = shop.url;
		adminToken = (await send(base, { method: "POST", path: "/api/users/login", body: ADMIN }))
			.body.token;
		customer = (
			await send(base, {
				method: "POST",
				path: "/api/users/register",
				body: { email: "eve@example.com", password: PASSWORD, name: "Eve" }
			})
		).body.token;
		mugId = (await send(base, { method: "GET", path: "/api/products?search=mug" })).body.rows[0]
			.id;
	}, 120_000);

	afterAll(async () => {
		if (shop) await shop.stop();
	});

	it("carries no stack trace, path, node_modules or SQL in any error body", async () => {
		const json = { "Content-Type": "application/json" };
		const now = Math.floor(Date.now() / 1000);
		const requests: Hostile[] = [
			{ method: "POST", path: "/api/users/login", raw: '{"email":', headers: json },
			{ method: "POST", path: "/api/users/login", raw: "null", headers: json },
			{ method: "POST", path: "/api/users/login", body: { email: 1, password: [] } },
			{
				method: "POST",
				path: "/api/users/register",
				body: { email: "x@example.com", password: PASSWORD, name: "x", role: "admin" }
			},
			{
				method: "POST",
				path: "/api/users/register",
				body: { email: "x@example.com", password: "short", name: "x" }
			},
			{
				method: "POST",
				path: "/api/users/login",
				body: { email: "nobody@example.com", password: PASSWORD }
			},
			{
				method: "POST",
				path: "/api/orders",
				token: customer,
				body: { items: [{ productId: mugId, quantity: 1e308 }], paymentMethod: "tok_visa" }
			},
			{
				method: "POST",
				path: "/api/orders",
				token: customer,
				body: {
					items: Array.from({ length: 51 }, () => ({ productId: mugId, quantity: 1 })),
					paymentMethod: "tok_visa"
				}
			},
			{
				method: "POST",
				path: "/api/orders",
				token: customer,
				body: { items: [{ productId: UNKNOWN_ID, quantity: 1 }], paymentMethod: "tok_visa" }
			},
			{
				method: "POST",
				path: "/api/orders",
				token: customer,
				body: {
					items: [{ productId: mugId, quantity: 1 }],
					paymentMethod: "tok_visa",
					total: 1
				}
			},
			{
				method: "POST",
				path: "/api/orders",
				token: customer,
				body: { items: [{ productId: mugId, quantity: 1 }], paymentMethod: "tok_visa" },
				headers: { "Idempotency-Key": "a b" }
			},
			{ method: "GET", path: "/api/products/' OR 1=1 --".replace(/ /g, "%20") },
			{ method: "GET", path: `/api/products/${UNKNOWN_ID}` },
			{ method: "GET", path: "/api/products/%ff" },
			{ method: "GET", path: "/api/products?page=NaN" },
			{ method: "GET", path: "/api/products?search=%00" },
			{ method: "GET", path: `/api/orders/${UNKNOWN_ID}`, token: customer },
			{ method: "POST", path: "/api/users/login", raw: "x".repeat(1_100_000), headers: json },
			{
				method: "POST",
				path: "/api/users/login",
				raw: "{}",
				headers: { "Content-Type": "text/plain" }
			},
			{
				method: "POST",
				path: "/api/users/login",
				raw: "{}",
				headers: { "Content-Type": "application/json", "Content-Encoding": "gzip" }
			},
			{
				method: "POST",
				path: "/api/users/login",
				raw: '{"__proto__":{"polluted":1}}',
				headers: json
			},
			{
				method: "GET",
				path: "/api/users/me",
				headers: {
					Authorization: `Bearer ${jwt({ alg: "none" }, { sub: UNKNOWN_ID }, null)}`
				}
			},
			{
				method: "GET",
				path: "/api/users/me",
				headers: {
					Authorization: `Bearer ${jwt({ alg: "HS256" }, { sub: UNKNOWN_ID, iss: "moleculer-shop", exp: now - 10 }, JWT_SECRET)}`
				}
			},
			{ method: "GET", path: "/api/admin/sagas", token: customer },
			{
				method: "PUT",
				path: `/api/inventory/${UNKNOWN_ID}`,
				token: adminToken,
				body: { onHand: 1 }
			},
			{
				method: "PATCH",
				path: `/api/products/${mugId}`,
				token: adminToken,
				body: { name: "a\u0000b" }
			},
			{
				method: "PATCH",
				path: `/api/products/${mugId}`,
				token: adminToken,
				body: { name: "\ud800" }
			},
			{
				method: "PATCH",
				path: `/api/products/${mugId}`,
				token: adminToken,
				body: { price: null }
			},
			{
				method: "POST",
				path: "/api/orders",
				token: customer,
				raw: `{"items":${"[".repeat(10_000)}${"]".repeat(10_000)},"paymentMethod":"tok_visa"}`,
				headers: json
			},
			{
				method: "POST",
				path: "/api/users/login",
				raw: `{"email":"a@b.co","password":${'{"a":'.repeat(10_000)}1${"}".repeat(10_000)}}`,
				headers: json
			},
			{ method: "POST", path: "/api/inventory/reserve", body: {} },
			{ method: "DELETE", path: "/api/products" },
			{ method: "TRACE", path: "/api/products" },
			{ method: "OPTIONS", path: "/api/orders", token: customer }
		];
		const raws = [
			"GET /api/products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
			`GET /api/products HTTP/1.1\r\nHost: x\r\nX-Request-ID: ${"a".repeat(20_000)}\r\n\r\n`,
			"FOO /api/products HTTP/1.1\r\nHost: x\r\n\r\n"
		];
		const replies: [string, Reply][] = [];
		for (const r of requests) {
			replies.push([`${r.method} ${r.path.slice(0, 60)}`, await send(base, r)]);
			count(tally, r.method, r.path);
		}
		for (const raw of raws) {
			replies.push([raw.slice(0, 40), await sendRaw(base, raw)]);
			count(tally, "RAW", "/");
		}
		const leaks: string[] = [];
		const fiveXX: string[] = [];
		for (const [label, r] of replies) {
			if (r.status >= 500) {
				fiveXX.push(`${label}: ${r.status} ${r.text.slice(0, 200)}`);
				tally.fiveXX.push(`production ${label}`);
			}
			leaks.push(...problems(label, r));
			// The client's own input echoed in a validation entry (`actual`) is not a leak.
			const body = JSON.parse(JSON.stringify(r.body ?? {}));
			if (Array.isArray(body.data)) for (const d of body.data) delete d.actual;
			const text = JSON.stringify(body);
			if (
				/\bstack\b|\bat [^ ]+ \(|\/work\/|\/tmp\/|\/home\/|node_modules|\.[jt]s:\d+|Sequelize|\bpg-|\b(?:SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b|relation "|syntax error|invalid input syntax/.test(
					text
				)
			)
				leaks.push(`${label}: ${text.slice(0, 300)}`);
		}
		console.log(`production: ${replies.length} hostile requests, ${fiveXX.length} 5xx`);
		expect(fiveXX).toEqual([]);
		expect(leaks).toEqual([]);
		// The process lived through all of it.
		expect((await send(base, { method: "GET", path: "/health" })).status).toBe(200);
	}, 120_000);
});
