/**
 * The OpenAPI document states what the server does (issue 19 §6), checked against the
 * one-process shop (`dist/bin/start.js`, test/support/shop-process.ts):
 *
 * - requests generated from the document's own parameter and body schemas by json-schema-faker
 *   (test/support/openapi-requests.mjs), valid ones and invalid variants of each (a path id that
 *   is not a uuid, a required body key dropped, an unknown body key, a wrong type, a control
 *   character, a query value of the wrong type, no token, a lower-case `bearer`), to every
 *   operation, with the ids of a real product, order and saga now and then: every answer's
 *   status is one the operation declares (there is no `default` to fall back on), its body
 *   matches that status's schema (ajv, JSON Schema 2020-12, formats checked), its content type
 *   is a declared one, its required headers (`X-Request-ID`, `Retry-After`) are there, and none
 *   is a 5xx;
 * - the rules the document states for every route: an unknown query key is ignored on a read
 *   (`?_=1`) and refused on a write, a
 *   public route ignores a token it cannot verify, the bearer scheme in any case, and a method a
 *   path does not have is 405 with `Allow` listing exactly the document's methods of that path.
 *
 * The generator's seed is `OPENAPI_FUZZ_SEED` (default: the clock), printed with any failure so
 * that a failing run can be repeated.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { ADMIN, PASSWORD, SHOP_ENV } from "../support/hostile";
import { api, startShopProcess, type ShopProcess } from "../support/shop-process";

type Obj = Record<string, any>;

const ROOT = path.resolve(__dirname, "..", "..");
const SEED = Number(process.env.OPENAPI_FUZZ_SEED ?? Date.now() % 1_000_000);
/** Generated requests per operation (each also sent as one invalid variant). */
const SAMPLES = 6;

/**
 * Ajv for JSON Schema 2020-12 (OpenAPI 3.1's dialect). The top-level `ajv` package is 6.x
 * (draft-07 only); ajv 8 (which has `ajv/dist/2020`) is installed with ajv-formats, whose
 * formats it takes.
 */
function newAjv(): { getSchema(ref: string): any; addSchema(s: unknown, key: string): void } {
	const fromFormats = createRequire(require.resolve("ajv-formats"));
	const Ajv2020 = fromFormats("ajv/dist/2020").default;
	const formats = require("ajv-formats");
	const ajv = new Ajv2020({ strict: false, allErrors: true });
	(formats.default ?? formats)(ajv);
	return ajv;
}

/** A generated request (test/support/openapi-requests.mjs). */
interface Sample {
	method: string;
	/** The document's path template (`/api/orders/{id}`). */
	path: string;
	operationId: string;
	pathParams: Record<string, unknown>;
	query: Record<string, unknown>;
	body?: unknown;
}

/** json-schema-faker's requests for every operation of `doc` (a child process: an ES module). */
function generateRequests(doc: Obj, samples: number, seed: number): Sample[] {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-openapi-fuzz-"));
	const file = path.join(dir, "openapi.json");
	fs.writeFileSync(file, JSON.stringify(doc));
	try {
		const run = spawnSync(
			process.execPath,
			[
				path.join(ROOT, "test", "support", "openapi-requests.mjs"),
				file,
				String(samples),
				String(seed)
			],
			{ cwd: ROOT, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 }
		);
		if (run.status !== 0) throw new Error(`generator failed: ${run.stderr}`);
		return JSON.parse(run.stdout) as Sample[];
	} finally {
		fs.rmSync(dir, { recursive: true, force: true });
	}
}

/** A request as sent. */
interface Case {
	label: string;
	method: string;
	/** The document's path template, for its operation. */
	template: string;
	url: string;
	headers: Record<string, string>;
	body?: unknown;
	/** An invalid variant: the server must refuse it (4xx). */
	invalid?: boolean;
}

/** An answer as received (the body of an event stream is not read). */
interface Answer {
	status: number;
	contentType: string;
	headers: Headers;
	text: string;
}

/**
 * `sendOnce`, again once when the server closed an idle keep-alive connection just as the request
 * went out on it (undici repeats only idempotent requests by itself): no answer was given.
 */
async function send(base: string, c: Case): Promise<Answer> {
	try {
		return await sendOnce(base, c);
	} catch (err) {
		const cause = (err as { cause?: { message?: string; code?: string } }).cause;
		if (cause?.message !== "other side closed" && cause?.code !== "ECONNRESET") throw err;
		return sendOnce(base, c);
	}
}

async function sendOnce(base: string, c: Case): Promise<Answer> {
	const headers: Record<string, string> = { ...c.headers };
	let body: string | undefined;
	if (c.body !== undefined) {
		body = JSON.stringify(c.body);
		headers["Content-Type"] = "application/json";
	}
	const abort = new AbortController();
	const timer = setTimeout(() => abort.abort(), 15_000);
	try {
		const res = await fetch(base + c.url, {
			method: c.method,
			headers,
			body,
			redirect: "manual",
			signal: abort.signal
		});
		const contentType = res.headers.get("content-type") ?? "";
		// An order stream lasts until the order is final: its headers are the answer.
		const text = contentType.startsWith("text/event-stream") ? "" : await res.text();
		if (contentType.startsWith("text/event-stream")) abort.abort();
		return { status: res.status, contentType, headers: res.headers, text };
	} finally {
		clearTimeout(timer);
	}
}

/** `/api/orders/{id}` with its parameters, and the query string. */
function urlOf(template: string, pathParams: Record<string, unknown>, query: Obj): string {
	const p = template.replace(/\{([^}]+)\}/g, (_m, name: string) =>
		encodeURIComponent(String(pathParams[name]))
	);
	const qs = new URLSearchParams();
	for (const [k, v] of Object.entries(query))
		qs.append(k, typeof v === "object" ? JSON.stringify(v) : String(v));
	const s = qs.toString();
	return s ? `${p}?${s}` : p;
}

const JSON_POINTER = (parts: string[]): string =>
	"/" + parts.map(p => p.replace(/~/g, "~0").replace(/\//g, "~1")).join("/");

describe("the OpenAPI document against the running shop", () => {
	let shop: ShopProcess;
	let base: string;
	let doc: Obj;
	let admin: string;
	let customer: string;
	/** Real ids, by the kind of thing a path names. */
	const known: Record<"product" | "order" | "saga", string> = {
		product: "",
		order: "",
		saga: ""
	};

	beforeAll(async () => {
		shop = await startShopProcess({ env: SHOP_ENV });
		base = shop.url;
		const login = await api(base, "POST", "/api/users/login", {
			body: { email: ADMIN.email, password: ADMIN.password }
		});
		expect(login.status).toBe(200);
		admin = login.body.token;
		const reg = await api(base, "POST", "/api/users/register", {
			body: { email: "fuzz-customer@example.com", password: PASSWORD, name: "Fuzz" }
		});
		expect(reg.status).toBe(201);
		customer = reg.body.token;
		const products = await api(base, "GET", "/api/products?pageSize=1");
		known.product = products.body.rows[0].id;
		const order = await api(base, "POST", "/api/orders", {
			token: customer,
			body: { items: [{ productId: known.product, quantity: 1 }], paymentMethod: "tok_visa" }
		});
		expect(order.status).toBe(202);
		known.order = order.body.id;
		for (let i = 0; i < 50 && !known.saga; i++) {
			const sagas = await api(base, "GET", "/api/admin/sagas?pageSize=1", { token: admin });
			known.saga = sagas.body.rows?.[0]?.id ?? "";
			if (!known.saga) await new Promise(r => setTimeout(r, 100));
		}
		const res = await api(base, "GET", "/api/openapi.json");
		expect(res.status).toBe(200);
		doc = res.body;
	}, 120_000);

	afterAll(async () => {
		await shop?.stop();
	});

	/** The kind of id a path parameter names, by the path. */
	const kindOf = (template: string): keyof typeof known | null =>
		/^\/api\/(products|inventory)\//.test(template)
			? "product"
			: /^\/api\/(admin\/)?orders\/\{/.test(template)
				? "order"
				: /^\/api\/admin\/sagas\/\{/.test(template)
					? "saga"
					: null;

	/** The token a case carries: the operation's role, and now and then none or a bad one. */
	function authFor(op: Obj, i: number): Record<string, string> {
		if (!op.security) {
			// Public: a token it cannot verify is ignored (docs/api.md); sometimes a good one.
			if (i % 3 === 1) return { Authorization: "Bearer x.y.z" };
			if (i % 3 === 2) return { Authorization: `Bearer ${customer}` };
			return {};
		}
		const token = op.responses["403"] ? admin : customer;
		if (i % 5 === 4) return {}; // 401 AUTH_TOKEN_MISSING
		if (i % 5 === 3) return { Authorization: `bearer ${token}` }; // any case (RFC 9110)
		return { Authorization: `Bearer ${token}` };
	}

	/** One invalid variant of a generated request (which rule it breaks turns with `i`). */
	function invalidVariant(s: Sample, op: Obj, c: Case, i: number): Case | null {
		const body = op.requestBody?.content?.["application/json"]?.schema as Obj | undefined;
		const queryParams = ((op.parameters ?? []) as Obj[]).filter(p => p.in === "query");
		const variants: (() => Case | null)[] = [
			() => {
				const name = Object.keys(s.pathParams)[0];
				if (!name) return null;
				return {
					...c,
					label: `${c.label} path ${name} not a uuid`,
					url: urlOf(s.path, { ...s.pathParams, [name]: "not-a-uuid" }, s.query)
				};
			},
			() => {
				const required = (body?.required ?? []) as string[];
				if (!required[0] || !s.body) return null;
				const b = { ...(s.body as Obj) };
				delete b[required[0]];
				return { ...c, label: `${c.label} body without ${required[0]}`, body: b };
			},
			() =>
				body?.additionalProperties === false
					? {
							...c,
							label: `${c.label} body with an unknown key`,
							body: { ...((s.body as Obj) ?? {}), unknownKey: 1 }
						}
					: null,
			() => {
				const str = Object.entries((body?.properties ?? {}) as Obj).find(
					([, v]) => v.type === "string"
				)?.[0];
				if (!str) return null;
				return {
					...c,
					label: `${c.label} body ${str} with a control character`,
					body: { ...((s.body as Obj) ?? {}), [str]: "a\u0007b" }
				};
			},
			() => {
				const name = Object.keys((body?.properties ?? {}) as Obj)[0];
				if (!name) return null;
				return {
					...c,
					label: `${c.label} body ${name} of another type`,
					body: { ...((s.body as Obj) ?? {}), [name]: { not: "expected" } }
				};
			},
			() => {
				const p = queryParams[0];
				if (!p) return null;
				return {
					...c,
					label: `${c.label} query ${p.name} of another type`,
					url: urlOf(s.path, s.pathParams, { ...s.query, [p.name]: "x\u0001" })
				};
			}
		];
		for (let k = 0; k < variants.length; k++) {
			const v = variants[(i + k) % variants.length]!();
			if (v) return { ...v, invalid: true };
		}
		return null;
	}

	/** What is wrong with an answer, by the document (empty: nothing). */
	function check(ajv: ReturnType<typeof newAjv>, c: Case, a: Answer): string[] {
		const where = `${c.label} -> ${a.status} ${a.text.slice(0, 300)}`;
		const method = c.method.toLowerCase();
		const response = doc.paths[c.template]?.[method]?.responses?.[String(a.status)] as
			Obj | undefined;
		if (a.status >= 500) return [`5xx: ${where}`];
		if (!response) return [`status not declared: ${where}`];
		const out: string[] = [];
		for (const [name, h] of Object.entries((response.headers ?? {}) as Obj)) {
			const header = h.$ref ? doc.components.headers[h.$ref.split("/").pop()] : h;
			if (header.required && a.headers.get(name) === null)
				out.push(`header ${name} missing: ${where}`);
		}
		const media = a.contentType.split(";")[0]!.trim();
		const content = (response.content ?? {}) as Obj;
		if (!(media in content) && !("*/*" in content))
			out.push(`content type ${media} not declared (${Object.keys(content)}): ${where}`);
		if (media === "application/json" && media in content) {
			const pointer = JSON_POINTER([
				"paths",
				c.template,
				method,
				"responses",
				String(a.status),
				"content",
				media,
				"schema"
			]);
			const validate = ajv.getSchema(`openapi.json#${pointer}`);
			let body: unknown;
			try {
				body = JSON.parse(a.text);
			} catch {
				return [...out, `body is not JSON: ${where}`];
			}
			if (!validate(body))
				out.push(
					`body does not match: ${where}\n  ${JSON.stringify(validate.errors).slice(0, 600)}`
				);
		}
		return out;
	}

	it("answers generated requests, valid and invalid, with declared statuses and bodies", async () => {
		const ajv = newAjv();
		ajv.addSchema(doc, "openapi.json");
		const samples = generateRequests(doc, SAMPLES, SEED);
		const operations = Object.values(doc.paths as Obj).flatMap(item => Object.keys(item));
		expect(samples.length).toBe(operations.length * SAMPLES);
		const cases: Case[] = [];
		samples.forEach((s, i) => {
			const op = doc.paths[s.path][s.method.toLowerCase()] as Obj;
			const kind = kindOf(s.path);
			const pathParams = { ...s.pathParams };
			// Every other request names a real product, order or saga (else: mostly 404s).
			if (kind && i % 2 === 0)
				for (const name of Object.keys(pathParams)) pathParams[name] = known[kind];
			const valid: Case = {
				label: `#${i} ${s.method} ${s.path}`,
				method: s.method,
				template: s.path,
				url: urlOf(s.path, pathParams, s.query),
				headers: authFor(op, i),
				...(s.body !== undefined ? { body: s.body } : {})
			};
			cases.push(valid);
			const invalid = invalidVariant({ ...s, pathParams }, op, valid, i);
			if (invalid) cases.push(invalid);
		});
		const problems: string[] = [];
		const statuses = new Map<string, Set<number>>();
		for (let i = 0; i < cases.length; i += 4)
			await Promise.all(
				cases.slice(i, i + 4).map(async c => {
					let a: Answer;
					try {
						a = await send(base, c);
					} catch (err) {
						const cause = (err as { cause?: { message?: string } }).cause?.message;
						problems.push(`no answer: ${c.label} (${String(err)}: ${cause})`);
						return;
					}
					const key = `${c.method} ${c.template}`;
					statuses.set(key, (statuses.get(key) ?? new Set()).add(a.status));
					problems.push(...check(ajv, c, a));
					if (c.invalid && a.status < 400)
						problems.push(
							`accepted: ${c.label} -> ${a.status} ${a.text.slice(0, 200)}`
						);
					// A public route ignores a token it cannot verify.
					if (
						c.headers.Authorization === "Bearer x.y.z" &&
						a.status === 401 &&
						JSON.parse(a.text).type === "AUTH_TOKEN_INVALID"
					)
						problems.push(`a public route refused an unverifiable token: ${c.label}`);
				})
			);
		if (problems.length > 0)
			console.log(
				`OPENAPI_FUZZ_SEED=${SEED}: ${problems.length} problems\n${problems.slice(0, 40).join("\n")}`
			);
		expect(problems).toEqual([]);
		// The generated requests reached the operations: each answered at least one success.
		const succeeded = [...statuses].filter(([, s]) => [...s].some(x => x < 300));
		expect(succeeded.length).toBeGreaterThanOrEqual(operations.length * 0.75);
		console.log(
			`openapi fuzz (seed ${SEED}): ${cases.length} requests to ${operations.length} operations, ${succeeded.length} answered a 2xx`
		);
	}, 120_000);

	it("follows the document's rules for every route: query keys, tokens, methods", async () => {
		const problems: string[] = [];
		// Unknown query keys are ignored on every operation without required parameters.
		for (const [p, item] of Object.entries(doc.paths as Obj))
			for (const [method, op] of Object.entries(item as Obj)) {
				if (method !== "get" || p.includes("{") || p.endsWith("/events")) continue;
				if (((op.parameters ?? []) as Obj[]).some(x => x.required && x.in === "query"))
					continue;
				const token = op.security ? (op.responses["403"] ? admin : customer) : undefined;
				const plain = await api(base, "GET", p, { token });
				const busted = await api(base, "GET", `${p}?_=${Date.now()}&zz=1`, { token });
				if (plain.status !== 200 || busted.status !== 200)
					problems.push(`GET ${p}: ${plain.status} without, ${busted.status} with ?_=`);
			}
		// On a write an unknown query key is refused, as an unknown body key: nothing is placed.
		const write = await api(base, "POST", "/api/orders?total=1", {
			token: customer,
			body: { items: [{ productId: known.product, quantity: 1 }], paymentMethod: "tok_visa" }
		});
		expect([write.status, write.body.type]).toEqual([422, "VALIDATION_ERROR"]);
		// The bearer scheme in any case; a public route ignores a token it cannot verify.
		for (const scheme of ["Bearer", "bearer", "BEARER"]) {
			const me = await api(base, "GET", "/api/users/me", {
				headers: { Authorization: `${scheme} ${customer}` }
			});
			if (me.status !== 200) problems.push(`${scheme}: /api/users/me answered ${me.status}`);
		}
		const publicBad = await api(base, "GET", "/api/products", {
			headers: { Authorization: "Bearer x.y.z" }
		});
		const privateBad = await api(base, "GET", "/api/users/me", {
			headers: { Authorization: "Bearer x.y.z" }
		});
		expect([publicBad.status, privateBad.status, privateBad.body.type]).toEqual([
			200,
			401,
			"AUTH_TOKEN_INVALID"
		]);
		// A method a path does not have: 405, `Allow` = the document's methods of that path.
		for (const [p, item] of Object.entries(doc.paths as Obj)) {
			const url = p.replace(/\{[^}]+\}/g, known.product);
			const documented = Object.keys(item as Obj)
				.map(m => m.toUpperCase())
				.sort();
			for (const method of ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]) {
				if (documented.includes(method)) continue;
				const r = await api(base, method, url, { token: admin });
				const allow = r.headers.get("allow");
				if (r.status !== 405 || allow !== documented.join(", "))
					problems.push(`${method} ${p}: ${r.status} Allow ${allow}`);
				else if (r.body?.type !== "REQUEST_METHOD_NOT_ALLOWED")
					problems.push(`${method} ${p}: type ${r.body?.type}`);
			}
		}
		// A path the document does not have is still 404.
		const none = await api(base, "POST", "/api/nope", { body: {} });
		expect([none.status, none.body.type]).toEqual([404, "REQUEST_NOT_FOUND"]);
		expect(problems).toEqual([]);
	}, 60_000);
});
