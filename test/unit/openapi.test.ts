/**
 * The gateway's OpenAPI 3.1 document (`GET /api/openapi.json`, platform/web/openapi.ts) and its docs page
 * (`GET /api/docs`, Swagger UI from the swagger-ui-dist package), with the shop's real services in
 * one broker:
 *
 * - the document is valid OpenAPI 3.1 (@seriousme/openapi-schema-validator) and every `$ref`
 *   resolves;
 * - every REST route is documented: each `API_ALIASES` entry under `/api`, and `/health` and
 *   `/ready`;
 * - parameters come from the actions' fastest-validator schemas (path, query, JSON body), answers
 *   from the error body and the main success shapes;
 * - every status an operation answers is declared (no `default`): the 404s of `{id}` routes, the
 *   409s, login's 401, 400, 415, 429 and 503, each with its error types; the answers' headers;
 *   the order event stream (a uuid, `text/event-stream`); `Idempotency-Key` where honoured;
 * - the docs page and its files are served from this origin with a CSP that allows nothing else.
 *
 * test/e2e/openapi-fuzz.e2e.test.ts checks the document against the running shop's answers.
 */
import type { ServiceBroker } from "moleculer";
import { ERRORS_BY_ACTION } from "../../services/api/openapi-schemas";
import { API_ALIASES, IDEMPOTENCY_KEY_ACTIONS } from "../../services/api/routes";
import { startTestBroker, type TestBroker } from "../support/broker";
import { danglingRefs, validateOpenApi } from "../support/openapi";

type Obj = Record<string, any>;

describe("OpenAPI document and docs page", () => {
	let tb: TestBroker;
	let base: string;
	let doc: Obj;

	beforeAll(async () => {
		tb = await startTestBroker([
			"users",
			"products",
			"inventory",
			"payments",
			"orders",
			"notifications",
			"api"
		]);
		const api = (tb.broker as ServiceBroker).getLocalService("api") as unknown as {
			server: { address(): { port: number } };
		};
		base = `http://127.0.0.1:${api.server.address().port}`;
		const res = await fetch(`${base}/api/openapi.json`);
		expect(res.status).toBe(200);
		expect(res.headers.get("content-type")).toMatch(/^application\/json/);
		doc = (await res.json()) as Obj;
	}, 60_000);
	afterAll(async () => {
		await tb?.stop();
	});

	it("is valid OpenAPI 3.1 whose references all resolve", () => {
		expect(doc.openapi).toBe("3.1.0");
		const result = validateOpenApi(doc);
		expect(result.errors).toBeNull();
		expect(result.valid).toBe(true);
		expect(result.version).toBe("3.1");
		expect(danglingRefs(doc)).toEqual([]);
	});

	it("documents every REST route: each API_ALIASES entry, /health and /ready", () => {
		const routes = [
			...Object.keys(API_ALIASES).map(key => {
				const [method, p] = key.split(" ") as [string, string];
				return { method, path: `/api/${p}` };
			}),
			{ method: "GET", path: "/health" },
			{ method: "GET", path: "/ready" }
		];
		expect(routes.length).toBeGreaterThanOrEqual(22);
		for (const r of routes) {
			const p = r.path.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
			const op = doc.paths[p]?.[r.method.toLowerCase()] as Obj | undefined;
			expect({ route: `${r.method} ${r.path}`, documented: op !== undefined }).toEqual({
				route: `${r.method} ${r.path}`,
				documented: true
			});
			// Every operation answers something documented, and errors in the contract's form,
			// each status declared (nothing left to `default`).
			const codes = Object.keys(op!.responses);
			expect(codes.some(c => /^2\d\d$/.test(c))).toBe(true);
			expect(codes).not.toContain("default");
			if (r.path.startsWith("/api/")) {
				for (const c of ["400", "429", "500", "503"])
					expect(op!.responses[c]).toBeDefined();
				for (const c of codes.filter(x => Number(x) >= 400)) {
					const schema = op!.responses[c].content["application/json"].schema as Obj;
					expect(schema.allOf).toEqual([{ $ref: "#/components/schemas/Error" }]);
					expect(schema.properties.code).toEqual({ const: Number(c) });
					// The types that status carries there: at least one.
					expect(schema.properties.type.enum.length).toBeGreaterThan(0);
				}
			}
			// An action behind the alias: its parameters are known (it runs in this broker).
			const alias = API_ALIASES[`${r.method} ${r.path.replace(/^\/api\//, "")}`];
			if (alias) {
				expect(op!.description ?? "").not.toMatch(/no live node/);
				if (alias.auth) expect(op!.security).toEqual([{ bearerAuth: [] }]);
				if (alias.auth === "admin") expect(op!.responses["403"]).toBeDefined();
			}
		}
	});

	it("declares every status with its error types: 404s, 409s, login's 401, 400, 415, 429, 503", () => {
		const types = (p: string, m: string, code: number): string[] =>
			doc.paths[p]?.[m]?.responses?.[String(code)]?.content["application/json"].schema
				.properties.type.enum ?? [];
		// Every route with an id answers 404 for an unknown one (the docs' files: 422).
		for (const [p, item] of Object.entries(doc.paths as Obj))
			for (const [m, op] of Object.entries(item as Obj)) {
				if (!p.includes("{") || p.startsWith("/api/docs/")) continue;
				expect({
					op: `${m} ${p}`,
					has404: (op as Obj).responses["404"] !== undefined
				}).toEqual({
					op: `${m} ${p}`,
					has404: true
				});
			}
		expect(types("/api/orders/{id}", "get", 404)).toEqual(["ORDERS_NOT_FOUND"]);
		expect(types("/api/products/{id}", "patch", 404)).toEqual(["PRODUCTS_NOT_FOUND"]);
		expect(types("/api/users/register", "post", 409)).toEqual(["USERS_EMAIL_TAKEN"]);
		expect(types("/api/products", "post", 409)).toEqual(["PRODUCTS_SKU_TAKEN"]);
		expect(types("/api/orders/{id}/cancel", "post", 409)).toEqual(["ORDERS_NOT_CANCELLABLE"]);
		expect(types("/api/admin/sagas/{id}/redrive", "post", 409)).toEqual(["SAGAS_NOT_PARKED"]);
		expect(types("/api/users/login", "post", 401)).toEqual(["USERS_INVALID_CREDENTIALS"]);
		expect(types("/api/users/login", "post", 400)).toEqual(
			expect.arrayContaining(["REQUEST_INVALID_JSON", "REQUEST_BODY_NOT_OBJECT"])
		);
		expect(types("/api/users/login", "post", 415)).toEqual(["REQUEST_UNSUPPORTED_MEDIA_TYPE"]);
		expect(types("/api/users/login", "post", 429)).toEqual(
			expect.arrayContaining(["REQUEST_RATE_LIMITED", "AUTH_LOGIN_THROTTLED"])
		);
		expect(types("/api/orders", "post", 503)).toEqual(
			expect.arrayContaining(["SERVICE_NOT_AVAILABLE", "ORDERS_OVERLOADED"])
		);
		// A public route has no 401 (a token it cannot verify is ignored); a customer's has.
		expect(doc.paths["/api/products"].get.responses["401"]).toBeUndefined();
		expect(types("/api/orders", "get", 401)).toEqual([
			"AUTH_TOKEN_MISSING",
			"AUTH_TOKEN_INVALID"
		]);
		// Every type an action is said to answer is in the document, under its status.
		for (const [key, list] of Object.entries(ERRORS_BY_ACTION)) {
			const [method, p] = key.includes(" ") ? key.split(" ") : [undefined, undefined];
			const op = Object.entries(doc.paths as Obj)
				.flatMap(([path, item]) =>
					Object.entries(item as Obj).map(([m, o]) => ({ path, m, o: o as Obj }))
				)
				.find(x =>
					method
						? x.m === method.toLowerCase() &&
							x.path === p!.replace(/:([A-Za-z0-9_]+)/g, "{$1}")
						: x.o.summary === `\`${key}\``
				);
			expect({ key, found: op !== undefined }).toEqual({ key, found: true });
			const declared = Object.values(op!.o.responses as Obj).flatMap(
				r => r.content?.["application/json"]?.schema?.properties?.type?.enum ?? []
			);
			for (const t of list)
				expect({ key, t, declared: declared.includes(t) }).toEqual({
					key,
					t,
					declared: true
				});
		}
	});

	it("declares the answers' headers, the event stream, Idempotency-Key and the admin shapes", () => {
		const headers = doc.components.headers as Obj;
		expect(headers.RequestId.required).toBe(true);
		expect(headers.RetryAfter.required).toBe(true);
		for (const [p, item] of Object.entries(doc.paths as Obj))
			for (const [m, op] of Object.entries(item as Obj)) {
				if (!p.startsWith("/api/")) continue;
				for (const [code, r] of Object.entries((op as Obj).responses as Obj)) {
					expect({ at: `${m} ${p} ${code}`, h: r.headers?.["X-Request-ID"] }).toEqual({
						at: `${m} ${p} ${code}`,
						h: { $ref: "#/components/headers/RequestId" }
					});
					if (code === "429" || code === "503")
						expect(r.headers["Retry-After"]).toEqual({
							$ref: "#/components/headers/RetryAfter"
						});
				}
				// Idempotency-Key exactly where it is honoured.
				const action =
					API_ALIASES[
						`${m.toUpperCase()} ${p.replace(/^\/api\//, "").replace(/\{([^}]+)\}/g, ":$1")}`
					]?.action;
				const declares = ((op as Obj).parameters as Obj[]).some(
					x => x.$ref === "#/components/parameters/IdempotencyKey"
				);
				expect({ op: `${m} ${p}`, declares }).toEqual({
					op: `${m} ${p}`,
					declares: action !== undefined && IDEMPOTENCY_KEY_ACTIONS.has(action)
				});
			}
		expect(doc.paths["/api/orders"].post.description).toMatch(/may appear once/);
		const events = doc.paths["/api/orders/{id}/events"].get as Obj;
		expect(events.parameters).toContainEqual({
			name: "id",
			in: "path",
			required: true,
			schema: { type: "string", format: "uuid" }
		});
		expect(Object.keys(events.responses["200"].content)).toEqual(["text/event-stream"]);
		expect(events.security).toEqual([{ bearerAuth: [] }]);
		expect(
			events.responses["429"].content["application/json"].schema.properties.type.enum
		).toContain("ORDERS_STREAM_LIMIT");
		const ok = (p: string, code = "200") =>
			doc.paths[p].get?.responses[code]?.content["application/json"].schema ??
			doc.paths[p].post.responses[code].content["application/json"].schema;
		expect(ok("/api/admin/nodes")).toEqual({ $ref: "#/components/schemas/Nodes" });
		expect(ok("/api/admin/orders/rate")).toEqual({ $ref: "#/components/schemas/OrderRate" });
		const schemas = doc.components.schemas as Obj;
		expect(
			doc.paths["/api/products"].post.responses["201"].content["application/json"].schema
		).toEqual({
			$ref: "#/components/schemas/ProductCreated"
		});
		expect(schemas.ProductCreated.allOf[1].properties.stock).toMatchObject({ type: "integer" });
		const step = schemas.SagaDetail.allOf[1].properties.steps.items as Obj;
		expect(step.properties.id).toEqual({ type: "integer" });
		expect(step.properties.sagaId).toEqual({ type: "string", format: "uuid" });
	});

	it("describes the error body and the main success shapes", () => {
		const schemas = doc.components.schemas as Obj;
		expect(Object.keys(schemas.Error.properties).sort()).toEqual(
			["code", "data", "message", "name", "type"].sort()
		);
		expect(schemas.Error.required).toEqual(["name", "message", "code", "type"]);
		for (const s of ["Order", "Product", "Stock", "AuthResult", "User", "Notification", "Saga"])
			expect(schemas[s]).toBeDefined();
		const resp = (p: string, m: string, code: string) =>
			doc.paths[p][m].responses[code].content["application/json"].schema;
		expect(resp("/api/orders", "post", "202")).toEqual({ $ref: "#/components/schemas/Order" });
		expect(resp("/api/users/login", "post", "200")).toEqual({
			$ref: "#/components/schemas/AuthResult"
		});
		expect(resp("/api/products", "get", "200")).toEqual({
			$ref: "#/components/schemas/ProductPage"
		});
		expect(resp("/api/inventory/{productId}", "get", "200")).toEqual({
			$ref: "#/components/schemas/Stock"
		});
		expect(resp("/ready", "get", "503")).toEqual({ $ref: "#/components/schemas/Ready" });
	});

	it("takes parameters from the actions' schemas: path, query and JSON body", () => {
		const create = doc.paths["/api/orders"].post as Obj;
		const body = create.requestBody.content["application/json"].schema as Obj;
		expect(create.requestBody.required).toBe(true);
		expect(body.additionalProperties).toBe(false);
		expect(body.required.sort()).toEqual(["items", "paymentMethod"]);
		expect(body.properties.items).toMatchObject({ type: "array", minItems: 1, maxItems: 50 });
		expect(body.properties.items.items).toMatchObject({
			type: "object",
			additionalProperties: false,
			required: ["productId", "quantity"],
			properties: {
				productId: { type: "string", format: "uuid" },
				quantity: { type: "integer", minimum: 1, maximum: 1000 }
			}
		});
		expect(body.properties.paymentMethod).toMatchObject({
			type: "string",
			minLength: 1,
			maxLength: 100,
			pattern: "^[A-Za-z0-9_]+$"
		});
		expect(create.parameters).toContainEqual({
			$ref: "#/components/parameters/IdempotencyKey"
		});
		expect(create.security).toEqual([{ bearerAuth: [] }]);
		expect(create.responses["422"]).toBeDefined();

		const list = doc.paths["/api/products"].get as Obj;
		const query = Object.fromEntries(
			(list.parameters as Obj[]).filter(p => p.in === "query").map(p => [p.name, p])
		);
		expect(Object.keys(query).sort()).toEqual(["page", "pageSize", "search"]);
		expect(query.pageSize).toMatchObject({
			required: false,
			schema: { type: "integer", minimum: 1, maximum: 100, default: 20 }
		});
		expect(list.security).toBeUndefined();

		const get = doc.paths["/api/orders/{id}"].get as Obj;
		expect(get.parameters).toContainEqual({
			name: "id",
			in: "path",
			required: true,
			schema: { type: "string", format: "uuid" }
		});
		// The path parameter is not repeated in the body of a PATCH.
		const patch = doc.paths["/api/products/{id}"].patch as Obj;
		expect(
			Object.keys(patch.requestBody.content["application/json"].schema.properties)
		).not.toContain("id");
		expect(doc.components.securitySchemes.bearerAuth).toEqual({
			type: "http",
			scheme: "bearer",
			bearerFormat: "JWT"
		});
	});

	it("serves the docs page and its files from this origin, no CDN", async () => {
		const page = await fetch(`${base}/api/docs`);
		expect(page.status).toBe(200);
		expect(page.headers.get("content-type")).toMatch(/^text\/html/);
		const csp = page.headers.get("content-security-policy") ?? "";
		expect(csp).toContain("script-src 'self'");
		expect(csp).toContain("default-src 'none'");
		const html = await page.text();
		const urls = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map(m => m[1]!);
		expect(urls).toContain("/api/docs/swagger-ui-bundle.js");
		for (const u of urls) {
			expect(u.startsWith("/api/docs/")).toBe(true);
			const res = await fetch(base + u);
			expect({ u, status: res.status }).toEqual({ u, status: 200 });
		}
		const bundle = await fetch(`${base}/api/docs/swagger-ui-bundle.js`);
		expect(bundle.headers.get("content-type")).toMatch(/^application\/javascript/);
		expect((await bundle.arrayBuffer()).byteLength).toBeGreaterThan(100_000);
		const init = await (await fetch(`${base}/api/docs/init.js`)).text();
		expect(init).toContain('url: "/api/openapi.json"');
		const css = await fetch(`${base}/api/docs/swagger-ui.css`);
		expect(css.headers.get("content-type")).toMatch(/^text\/css/);
		// Only the page's own files: anything else is refused.
		const other = await fetch(`${base}/api/docs/package.json`);
		expect(other.status).toBe(422);
	});
});
