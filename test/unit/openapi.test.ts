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
 * - the docs page and its files are served from this origin with a CSP that allows nothing else.
 */
import type { ServiceBroker } from "moleculer";
import { API_ALIASES } from "../../services/api/routes";
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
			// Every operation answers something documented, and errors in the contract's form.
			const codes = Object.keys(op!.responses);
			expect(codes.some(c => /^2\d\d$/.test(c))).toBe(true);
			if (r.path.startsWith("/api/"))
				expect(op!.responses.default.content["application/json"].schema).toEqual({
					$ref: "#/components/schemas/Error"
				});
			// An action behind the alias: its parameters are known (it runs in this broker).
			const alias = API_ALIASES[`${r.method} ${r.path.replace(/^\/api\//, "")}`];
			if (alias) {
				expect(op!.description ?? "").not.toMatch(/no live node/);
				if (alias.auth) expect(op!.security).toEqual([{ bearerAuth: [] }]);
				if (alias.auth === "admin") expect(op!.responses["403"]).toBeDefined();
			}
		}
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
