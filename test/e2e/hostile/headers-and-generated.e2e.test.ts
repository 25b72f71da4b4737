/**
 * Hostile input at the gateway (issue #6, part 2), categories 16-19: header abuse; deep
 * nesting, NUL and lone surrogates; nothing stored (checked against this file's shop); generated
 * bodies and queries (fast-check).
 * The categories and what every answer must be: test/support/hostile.ts; the shop they run
 * against: test/support/hostile-shop.ts.
 */
import * as fc from "fast-check";
import {
	ALIASES,
	count,
	enc,
	fuzzTally,
	HOSTILE_EMAIL,
	HOSTILE_ID_STRINGS,
	HOSTILE_SKU,
	PASSWORD,
	problems,
	send,
	sendRaw,
	settledFingerprint,
	UNKNOWN_ID,
	type Expect,
	type Hostile
} from "../../support/hostile";
import { useHostileShop, type Customer, type HostileShop } from "../../support/hostile-shop";
import type { ShopProcess } from "../../support/shop-process";

describe("hostile input at the gateway", () => {
	const h = useHostileShop({ checkAtEnd: false });
	const { record, hitAll, ok, ordersOf, bodyRoutes } = h;
	let shop: ShopProcess;
	let base: string;
	let adminToken: string;
	let ann: Customer;
	let bob: Customer;
	let mug: HostileShop["mug"];
	let annOrderId: string;
	let before: Record<string, string>;
	let mugStockBefore: unknown;
	let productsTotalBefore: number;
	beforeAll(() => {
		({
			shop,
			base,
			adminToken,
			ann,
			bob,
			mug,
			annOrderId,
			before,
			mugStockBefore,
			productsTotalBefore
		} = h);
	});

	it("16. refuses header abuse: huge or malformed X-Request-ID and Idempotency-Key, framing tricks", async () => {
		const bobsBefore = await ordersOf(bob.token);
		const out: string[] = [];
		// X-Request-ID: a malformed one is replaced, never echoed.
		for (const id of [
			"a".repeat(10_000),
			"../../etc/passwd",
			"' OR 1=1 --",
			"a b",
			"<script>",
			"é"
		]) {
			const r: Hostile = {
				method: "GET",
				path: "/api/products?pageSize=1",
				headers: { "X-Request-ID": Buffer.from(id, "utf8").toString("latin1") }
			};
			const reply = await send(base, r);
			out.push(...record(`X-Request-ID ${id.slice(0, 20)}`, r, reply, { status: 200 }));
			if (!/^[0-9a-f-]{36}$/.test(String(reply.headers["x-request-id"])))
				out.push(
					`X-Request-ID ${id.slice(0, 20)} echoed: ${String(reply.headers["x-request-id"]).slice(0, 40)}`
				);
		}
		const order = { items: [{ productId: mug.id, quantity: 1 }], paymentMethod: "tok_visa" };
		const badKey = { status: 400, type: "REQUEST_INVALID_ID" };
		const list: [string, Hostile, Expect?][] = [];
		for (const key of [
			"",
			" ",
			"a b",
			"k".repeat(256),
			"k".repeat(10_000),
			"' OR 1=1 --",
			"../../etc/passwd",
			"é",
			"key,other",
			"<script>"
		])
			list.push([
				`Idempotency-Key ${JSON.stringify(key.slice(0, 20))}`,
				{
					method: "POST",
					path: "/api/orders",
					token: bob.token,
					body: order,
					headers: { "Idempotency-Key": Buffer.from(key, "utf8").toString("latin1") }
				},
				badKey
			]);
		list.push([
			"two Idempotency-Key headers",
			{
				method: "POST",
				path: "/api/orders",
				token: bob.token,
				body: order,
				headers: { "Idempotency-Key": ["key-1", "key-2"] }
			},
			badKey
		]);
		list.push([
			"X-Request-ID over 16 KB",
			{
				method: "GET",
				path: "/api/products",
				headers: { "X-Request-ID": "a".repeat(20_000) }
			},
			{ status: 431, type: "REQUEST_HEADERS_TOO_LARGE" }
		]);
		list.push([
			"cookie over 16 KB",
			{
				method: "GET",
				path: "/api/products",
				headers: { Cookie: `a=${"b".repeat(20_000)}` }
			},
			{ status: 431, type: "REQUEST_HEADERS_TOO_LARGE" }
		]);
		list.push([
			"URL over 16 KB",
			{ method: "GET", path: `/api/products?search=${"a".repeat(20_000)}` },
			{ status: 431, type: "REQUEST_HEADERS_TOO_LARGE" }
		]);
		out.push(...(await hitAll(list)));
		const malformed = { status: 400, type: "REQUEST_MALFORMED" };
		const login = '{"email":"ann@example.com","password":"x"}';
		for (const [label, bytes] of [
			[
				"two Content-Length headers",
				`POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nContent-Length: ${login.length}\r\n\r\n${login}`
			],
			[
				"Content-Length and Transfer-Encoding",
				`POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${login.length}\r\nTransfer-Encoding: chunked\r\n\r\n${login}`
			],
			[
				"a bad chunk size",
				`POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n${login}\r\n0\r\n\r\n`
			],
			[
				"a negative Content-Length",
				`POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n${login}`
			],
			[
				"a control character in X-Request-ID",
				"GET /api/products HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\u0001b\r\n\r\n"
			],
			[
				"a NUL in a header",
				"GET /api/products HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\u0000b\r\n\r\n"
			],
			[
				"a header without a colon",
				"GET /api/products HTTP/1.1\r\nHost: x\r\nX-Request-ID\r\n\r\n"
			],
			["no Host", "GET /api/products HTTP/1.1\r\n\r\n"],
			["a space in the path", "GET /api/products /x HTTP/1.1\r\nHost: x\r\n\r\n"],
			["HTTP/9.9", "GET /api/products HTTP/9.9\r\nHost: x\r\n\r\n"]
		] as const) {
			const reply = await sendRaw(base, bytes);
			out.push(
				...record(label, { method: "RAW", path: "/api/users/login" }, reply, malformed)
			);
		}
		expect(await ordersOf(bob.token)).toEqual(bobsBefore);
		expect(out).toEqual([]);
	}, 120_000);

	it("17. refuses deep nesting, NUL and lone surrogates (each was a 500, deep nesting a crash)", async () => {
		const json = { "Content-Type": "application/json" };
		const v = { status: 422, type: "VALIDATION_ERROR" };
		const list: [string, Hostile, Expect?][] = [];
		for (const depth of [33, 1_000, 10_000, 100_000]) {
			list.push(
				// Before: 10 000 nested arrays in `items` answered 500; in `password`, 10 000 nested
				// objects killed the process (the validation error echoed them; JSON.stringify of
				// the error body overflowed the stack in moleculer-web's last-resort handler).
				[
					`items nested ${depth}`,
					{
						method: "POST",
						path: "/api/orders",
						token: bob.token,
						raw: `{"items":${"[".repeat(depth)}${"]".repeat(depth)},"paymentMethod":"tok_visa"}`,
						headers: json
					},
					v
				],
				[
					`password nested ${depth}`,
					{
						method: "POST",
						path: "/api/users/login",
						raw: `{"email":"ann@example.com","password":${'{"a":'.repeat(depth)}1${"}".repeat(depth)}}`,
						headers: json
					},
					v
				],
				[
					`search nested ${depth}`,
					{
						method: "GET",
						path: "/api/products",
						raw: `{"search":${"[".repeat(depth)}${"]".repeat(depth)}}`,
						headers: json
					},
					v
				],
				[
					`unknown field nested ${depth} on /users/me`,
					{
						method: "GET",
						path: "/api/users/me",
						token: bob.token,
						raw: `{"x":${"[".repeat(depth)}${"]".repeat(depth)}}`,
						headers: json
					},
					v
				]
			);
		}
		// Before: NUL answered 500 where the value reached jsonb (`PATCH /api/products/:id`, the
		// outbox event) and was stored as the two characters `\0` elsewhere (a name, an e-mail).
		for (const s of [
			"a\u0000b",
			"\u0000",
			"x\u0001",
			"\u001b[31mred",
			"\u007f",
			"\ud800",
			"a\udc00",
			"\udfff\ud800"
		])
			list.push(
				[
					`product name ${JSON.stringify(s)}`,
					{
						method: "PATCH",
						path: `/api/products/${mug.id}`,
						token: adminToken,
						body: { name: s }
					},
					{ ...v, field: "name" }
				],
				[
					`product description ${JSON.stringify(s)}`,
					{
						method: "POST",
						path: "/api/products",
						token: adminToken,
						body: { sku: HOSTILE_SKU, name: "x", price: 1, description: s }
					},
					{ ...v, field: "description" }
				],
				[
					`register name ${JSON.stringify(s)}`,
					{
						method: "POST",
						path: "/api/users/register",
						body: { email: HOSTILE_EMAIL, password: PASSWORD, name: s }
					},
					{ ...v, field: "name" }
				],
				[
					`register email ${JSON.stringify(s)}`,
					{
						method: "POST",
						path: "/api/users/register",
						body: { email: `h${s}@example.com`, password: PASSWORD, name: "M" }
					},
					{ ...v, field: "email" }
				],
				[
					`register password ${JSON.stringify(s)}`,
					{
						method: "POST",
						path: "/api/users/register",
						body: { email: HOSTILE_EMAIL, password: `${PASSWORD}${s}`, name: "M" }
					},
					{ ...v, field: "password" }
				],
				[
					`search ${JSON.stringify(s)}`,
					{ method: "GET", path: `/api/products?search=${enc(s)}` },
					// A URL carries UTF-8: a lone surrogate arrives as U+FFFD, an ordinary search.
					/[\ud800-\udfff]/.test(s) ? { status: 200 } : { ...v, field: "search" }
				],
				[
					`paymentMethod ${JSON.stringify(s)}`,
					{
						method: "POST",
						path: "/api/orders",
						token: bob.token,
						body: {
							items: [{ productId: mug.id, quantity: 1 }],
							paymentMethod: `tok_visa${s}`
						}
					},
					{ ...v, field: "paymentMethod" }
				]
			);
		// Tab, LF and CR are ordinary text in a description; in an e-mail they are not.
		list.push([
			"register email with a tab",
			{
				method: "POST",
				path: "/api/users/register",
				body: { email: "h\t@example.com", password: PASSWORD, name: "M" }
			},
			{ ...v, field: "email" }
		]);
		expect(await hitAll(list)).toEqual([]);
		expect((await send(base, { method: "GET", path: "/health" })).status).toBe(200);
	}, 180_000);

	it("18. stored nothing: every table as before, and the API agrees", async () => {
		const after = await settledFingerprint(shop);
		expect(after).toEqual(before);
		expect(
			(await send(base, { method: "GET", path: `/api/inventory/${mug.id}` })).body
		).toEqual(mugStockBefore);
		expect(
			(await send(base, { method: "GET", path: `/api/inventory/${UNKNOWN_ID}` })).body.type
		).toBe("INVENTORY_NOT_FOUND");
		expect((await send(base, { method: "GET", path: "/api/products" })).body.total).toBe(
			productsTotalBefore
		);
		expect((await ordersOf(ann.token)).map(o => o.id)).toEqual([annOrderId]);
		expect(await ordersOf(bob.token)).toEqual([]);
		expect(
			(await send(base, { method: "GET", path: `/api/products/${mug.id}` })).body
		).toMatchObject({ name: "Developer Coffee Mug", price: mug.price, active: true });
		// The e-mail and SKU of every hostile register and create are still free.
		const reg = await send(base, {
			method: "POST",
			path: "/api/users/register",
			body: { email: HOSTILE_EMAIL, password: PASSWORD, name: "Now legit" }
		});
		expect(reg.status).toBe(201);
		const prod = await send(base, {
			method: "POST",
			path: "/api/products",
			token: adminToken,
			body: { sku: HOSTILE_SKU, name: "Now legit", price: 1 }
		});
		expect(prod.status).toBe(201);
		// SQL-looking text in a legitimate request is data: stored verbatim, never run.
		const sqlish = {
			email: "o'brien@example.com",
			password: PASSWORD,
			name: "'); DROP TABLE users; --"
		};
		const quoted = await send(base, {
			method: "POST",
			path: "/api/users/register",
			body: sqlish
		});
		expect([quoted.status, quoted.body.user?.name]).toEqual([201, sqlish.name]);
		const again = await send(base, {
			method: "POST",
			path: "/api/users/login",
			body: { email: sqlish.email, password: PASSWORD }
		});
		expect([again.status, again.body.user?.name]).toEqual([200, sqlish.name]);
		// null for an optional field of a create is "absent": `stock: null` creates no stock
		// record (it used to store the product, then fail in inventory with a 422).
		const nullStock = await send(base, {
			method: "POST",
			path: "/api/products",
			token: adminToken,
			body: { sku: "NULL-STOCK", name: "No stock", price: 1, stock: null }
		});
		expect([nullStock.status, nullStock.body.stock]).toEqual([201, undefined]);
		const noRecord = await send(base, {
			method: "GET",
			path: `/api/inventory/${nullStock.body.id}`
		});
		expect([noRecord.status, noRecord.body.type]).toEqual([404, "INVENTORY_NOT_FOUND"]);
	}, 60_000);

	it("19. generated bodies and queries (fast-check): never a 5xx, every error typed", async () => {
		const fuzzProduct = ok(
			await send(base, {
				method: "POST",
				path: "/api/products",
				token: adminToken,
				body: { sku: "FUZZ-1", name: "Fuzz", price: 100, stock: 1_000_000 }
			})
		).body;
		const fuzzer = ok(
			await send(base, {
				method: "POST",
				path: "/api/users/register",
				body: { email: "fuzz@example.com", password: PASSWORD, name: "Fuzz" }
			})
		).body.token as string;
		const failures: string[] = [];
		const weird = fc.constantFrom<unknown>(
			...HOSTILE_ID_STRINGS,
			0,
			-1,
			1.5,
			1e308,
			-1e308,
			2 ** 53,
			-0,
			Number.MIN_VALUE,
			"NaN",
			"",
			" ",
			null,
			true,
			[],
			{},
			[[]],
			{ __proto__: null },
			fuzzProduct.id,
			mug.id,
			"tok_visa",
			"ann@example.com",
			"USD",
			1,
			1000
		);
		const value = fc.oneof(
			{ depthSize: "small" },
			fc.jsonValue({ maxDepth: 3 }),
			fc.string({ unit: "binary", maxLength: 40 }),
			weird
		);
		const targets = bodyRoutes().map(r => ({
			...r,
			path: r.path.replace(mug.id, fuzzProduct.id),
			token: r.who === "admin" ? adminToken : r.who === "customer" ? fuzzer : undefined
		}));
		const mutation = fc.record({
			target: fc.nat({ max: targets.length - 1 }),
			replace: fc.dictionary(
				fc.constantFrom(
					"email",
					"password",
					"name",
					"sku",
					"description",
					"price",
					"currency",
					"active",
					"stock",
					"onHand",
					"items",
					"paymentMethod"
				),
				value,
				{ maxKeys: 4 }
			),
			items: fc.option(
				fc.array(
					fc.dictionary(
						fc.constantFrom("productId", "quantity", "price", "__proto__"),
						value,
						{ maxKeys: 3 }
					),
					{ maxLength: 4 }
				)
			),
			extra: fc.option(fc.dictionary(fc.string({ maxLength: 12 }), value, { maxKeys: 2 })),
			whole: fc.option(value, { freq: 8 })
		});
		const check = async (label: string, r: Hostile): Promise<boolean> => {
			const reply = await send(base, r);
			count(fuzzTally, r.method, r.path);
			if (reply.status >= 500)
				fuzzTally.fiveXX.push(`${label}: ${reply.status} ${reply.text.slice(0, 300)}`);
			const p = reply.status < 400 ? [] : problems(label, reply, { status: reply.status });
			if (reply.status >= 500 || p.length > 0) {
				failures.push(
					...(p.length ? p : [`${label}: ${reply.status} ${reply.text.slice(0, 300)}`])
				);
				return false;
			}
			return true;
		};
		await fc.assert(
			fc.asyncProperty(mutation, async m => {
				const t = targets[m.target]!;
				let body: unknown = { ...t.base, ...m.replace, ...(m.extra ?? {}) };
				if (m.items) (body as Record<string, unknown>).items = m.items;
				if (m.whole !== null) body = m.whole;
				return check(`${t.method} ${t.path} ${JSON.stringify(body)?.slice(0, 200)}`, {
					method: t.method,
					path: t.path,
					token: t.token,
					body
				});
			}),
			{ numRuns: 1500 }
		);
		const queryTargets = [
			{ path: "/api/products", token: undefined, keys: ["page", "pageSize", "search"] },
			{ path: "/api/orders", token: fuzzer, keys: ["page", "pageSize"] },
			{ path: "/api/notifications", token: fuzzer, keys: ["page", "pageSize", "orderId"] },
			{ path: "/api/admin/sagas", token: adminToken, keys: ["status", "page", "pageSize"] },
			{
				path: "/api/admin/dead-letters",
				token: adminToken,
				keys: ["page", "pageSize", "pending"]
			}
		];
		const queryPart = fc.oneof(
			fc.string({ unit: "binary", maxLength: 20 }),
			fc.constantFrom(...HOSTILE_ID_STRINGS.map(s => s.slice(0, 200))),
			fc.integer().map(String)
		);
		await fc.assert(
			fc.asyncProperty(
				fc.nat({ max: queryTargets.length - 1 }),
				fc.array(
					fc.tuple(
						fc.oneof(
							fc.constantFrom(
								"page",
								"pageSize",
								"search",
								"orderId",
								"status",
								"pending",
								"__proto__",
								"constructor"
							),
							fc.string({ maxLength: 8 })
						),
						queryPart,
						fc.boolean()
					),
					{ maxLength: 4 }
				),
				async (i, pairs) => {
					const t = queryTargets[i]!;
					const qs = pairs
						.map(([k, v, bracket]) => `${enc(k)}${bracket ? "[]" : ""}=${enc(v)}`)
						.join("&");
					return check(`GET ${t.path}?${qs}`, {
						method: "GET",
						path: `${t.path}?${qs}`,
						token: t.token
					});
				}
			),
			{ numRuns: 500 }
		);
		const idRoutes = [
			"GET /api/products/:id",
			"GET /api/inventory/:id",
			"GET /api/orders/:id",
			"POST /api/orders/:id/cancel"
		];
		await fc.assert(
			fc.asyncProperty(
				fc.nat({ max: idRoutes.length - 1 }),
				fc.oneof(fc.string({ unit: "binary", maxLength: 60 }), fc.uuid()),
				async (i, id) => {
					const [method, p] = idRoutes[i]!.split(" ") as [string, string];
					return check(`${method} ${p} ${JSON.stringify(id)}`, {
						method,
						path: p.replace(":id", enc(id)),
						token: fuzzer
					});
				}
			),
			{ numRuns: 400 }
		);
		// Every route of the REST table (new ones too): random path params, query and body, as
		// anyone.
		const segment = fc.oneof(
			fc.uuid(),
			fc.string({ unit: "binary", maxLength: 40 }),
			fc.constantFrom(...HOSTILE_ID_STRINGS.map(x => x.slice(0, 100)), mug.id, fuzzProduct.id)
		);
		await fc.assert(
			fc.asyncProperty(
				fc.nat({ max: ALIASES.length - 1 }),
				segment,
				fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 20 }), {
					maxKeys: 3
				}),
				fc.option(value, { freq: 2 }),
				fc.constantFrom<"anon" | "customer" | "admin">("anon", "customer", "admin"),
				async (i, id, query, body, who) => {
					const a = ALIASES[i]!;
					const qs = Object.entries(query)
						.map(([k, v]) => `${enc(k)}=${enc(v)}`)
						.join("&");
					const url = `${a.path.replace(/:[A-Za-z]+/g, enc(id))}${qs ? `?${qs}` : ""}`;
					const token =
						who === "admin" ? adminToken : who === "customer" ? fuzzer : undefined;
					return check(`${a.method} ${url} ${JSON.stringify(body)?.slice(0, 100)}`, {
						method: a.method,
						path: url,
						token,
						body: a.method === "GET" || body === null ? undefined : body
					});
				}
			),
			{ numRuns: 600 }
		);
		expect(failures).toEqual([]);
		expect(fuzzTally.fiveXX).toEqual([]);
		expect((await send(base, { method: "GET", path: "/health" })).status).toBe(200);
	}, 300_000);
});
