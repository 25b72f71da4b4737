/**
 * Security of the gateway over real HTTP (issue #6, part 3), on the one-process shop
 * (`startShopProcess`, dist/): security headers and no `X-Powered-By`, CORS as configured
 * (preflights from an allowed and a disallowed origin), the password policy and the login
 * throttle as a client meets them (429 with `Retry-After`), and — the process running with
 * `LOGLEVEL=debug` — that none of the secrets it was given or handled appears in its output:
 * JWT_SECRET, ADMIN_PASSWORD, the embedded Postgres password (DATABASE_URL), customers'
 * passwords (accepted, refused and wrong ones) and bearer tokens.
 */
import fs from "node:fs";
import path from "node:path";
import { ERRORS, FRAMEWORK_ERROR_TYPES } from "../../platform/errors";
import { api, startShopProcess, type ShopProcess } from "../support/shop-process";

const JWT_SECRET = "security-e2e-jwt-secret-6f1d0c3b9a8e7d6c5b4a";
const ADMIN = { email: "admin@example.com", password: "security-e2e-admin-pw-71c4" };
const PASSWORD = "a customer's secret pw 9e2f";
const WRONG_PASSWORD = "a wrong guess of a pw 4b7a";
const SHORT_PASSWORD = "Zq9#kX2!v"; // 9 characters: refused by validation
const ALLOWED_ORIGIN = "https://shop.example";

describe("security over HTTP (one process, LOGLEVEL=debug)", () => {
	let shop: ShopProcess;
	let base: string;
	const tokens: string[] = [];

	beforeAll(async () => {
		shop = await startShopProcess({
			env: {
				LOGLEVEL: "debug",
				JWT_SECRET,
				ADMIN_PASSWORD: ADMIN.password,
				CORS_ORIGINS: `${ALLOWED_ORIGIN},https://admin.shop.example`,
				LOGIN_MAX_FAILURES_PER_ACCOUNT: "3",
				LOGIN_BLOCK_MS: "60000"
			}
		});
		base = shop.url;
	}, 120_000);
	afterAll(async () => {
		await shop?.stop();
		if (shop) fs.rmSync(shop.dataDir, { recursive: true, force: true });
	});

	it("sends helmet's security headers and no X-Powered-By, on answers and on errors", async () => {
		for (const [method, url] of [
			["GET", "/api/products?pageSize=1"],
			["GET", "/api/users/me"],
			["POST", "/api/nope"],
			["GET", "/health"]
		] as const) {
			const res = await api(base, method, url);
			const h = res.headers;
			expect([url, h.get("x-powered-by")]).toEqual([url, null]);
			expect([url, h.get("x-content-type-options")]).toEqual([url, "nosniff"]);
			expect([url, h.get("x-frame-options")]).toEqual([url, "DENY"]);
			expect([url, h.get("referrer-policy")]).toEqual([url, "no-referrer"]);
			expect([url, h.get("cross-origin-resource-policy")]).toEqual([url, "same-origin"]);
			expect(h.get("content-security-policy")).toMatch(/frame-ancestors 'none'/);
			// Not production: no HSTS (a development shop on plain HTTP must stay reachable).
			expect(h.get("strict-transport-security")).toBeNull();
		}
		const json = await api(base, "GET", "/api/products?pageSize=1");
		expect(json.headers.get("content-security-policy")).toBe(
			"default-src 'none';frame-ancestors 'none'"
		);
	});

	it("answers a preflight from an allowed origin with that origin, the methods and headers", async () => {
		const res = await fetch(`${base}/api/orders`, {
			method: "OPTIONS",
			headers: {
				Origin: ALLOWED_ORIGIN,
				"Access-Control-Request-Method": "POST",
				"Access-Control-Request-Headers": "authorization,content-type,idempotency-key"
			}
		});
		expect(res.status).toBe(204);
		expect(res.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
		expect(res.headers.get("vary")).toMatch(/Origin/);
		expect(res.headers.get("access-control-allow-methods")).toMatch(/\bPOST\b/);
		const allowed = (res.headers.get("access-control-allow-headers") ?? "").toLowerCase();
		for (const h of ["authorization", "content-type", "idempotency-key"])
			expect(allowed).toContain(h);
		expect(res.headers.get("access-control-allow-credentials")).toBeNull();
		expect(res.headers.get("access-control-expose-headers")).toMatch(/Retry-After/);
		// And the actual request from that origin.
		const get = await api(base, "GET", "/api/products?pageSize=1", {
			headers: { Origin: ALLOWED_ORIGIN }
		});
		expect(get.status).toBe(200);
		expect(get.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
	});

	it("refuses a preflight and a request from an origin not in CORS_ORIGINS: 403 ORIGIN_NOT_ALLOWED, no CORS headers", async () => {
		for (const origin of [
			"https://evil.example",
			"https://shop.example.evil.example",
			"null"
		]) {
			const pre = await fetch(`${base}/api/orders`, {
				method: "OPTIONS",
				headers: {
					Origin: origin,
					"Access-Control-Request-Method": "POST",
					"Access-Control-Request-Headers": "authorization,content-type"
				}
			});
			expect([origin, pre.status]).toEqual([origin, 403]);
			expect(pre.headers.get("access-control-allow-origin")).toBeNull();
			expect(await pre.json()).toMatchObject({ code: 403, type: "ORIGIN_NOT_ALLOWED" });
			const get = await api(base, "GET", "/api/products?pageSize=1", {
				headers: { Origin: origin }
			});
			expect([origin, get.status, get.body.type]).toEqual([
				origin,
				403,
				"ORIGIN_NOT_ALLOWED"
			]);
			expect(get.headers.get("access-control-allow-origin")).toBeNull();
		}
		expect(FRAMEWORK_ERROR_TYPES.ORIGIN_NOT_ALLOWED?.code).toBe(403);
	});

	it("refuses weak passwords at registration with a stable type", async () => {
		const common = await api(base, "POST", "/api/users/register", {
			body: { email: "weak@example.com", password: "Password2024", name: "Weak" }
		});
		expect([common.status, common.body.type]).toEqual([422, "USERS_PASSWORD_WEAK"]);
		expect(common.body.data).toEqual({ reasons: ["COMMON"] });
		const same = await api(base, "POST", "/api/users/register", {
			body: { email: "weak@example.com", password: "WEAK@example.com", name: "Weak" }
		});
		expect(same.body).toMatchObject({
			type: "USERS_PASSWORD_WEAK",
			data: { reasons: ["SAME_AS_EMAIL"] }
		});
		const short = await api(base, "POST", "/api/users/register", {
			body: { email: "weak@example.com", password: SHORT_PASSWORD, name: "Weak" }
		});
		expect([short.status, short.body.type]).toEqual([422, "VALIDATION_ERROR"]);
		expect(short.body.data.map((d: { field: string }) => d.field)).toEqual(["password"]);
		expect(ERRORS.USERS_PASSWORD_WEAK.code).toBe(422);
	});

	it("throttles failed logins with 429 AUTH_LOGIN_THROTTLED and Retry-After, for known and unknown e-mails alike", async () => {
		const reg = await api(base, "POST", "/api/users/register", {
			body: { email: "throttled@example.com", password: PASSWORD, name: "T" }
		});
		expect(reg.status).toBe(201);
		tokens.push(reg.body.token);
		const statuses = async (email: string, last: string): Promise<unknown[]> => {
			const out: unknown[] = [];
			for (let i = 0; i < 4; i++) {
				const r = await api(base, "POST", "/api/users/login", {
					body: { email, password: i < 3 ? WRONG_PASSWORD : last }
				});
				out.push([r.status, r.body.type, r.headers.get("retry-after") !== null]);
				if (r.status === 429) {
					const retryAfter = Number(r.headers.get("retry-after"));
					expect(retryAfter).toBeGreaterThan(50);
					expect(retryAfter).toBeLessThanOrEqual(60);
					expect(r.body).toMatchObject({ code: 429, data: { retryAfter } });
				}
			}
			return out;
		};
		// The right password on the fourth try is refused too: the account is blocked.
		const known = await statuses("throttled@example.com", PASSWORD);
		const unknown = await statuses("nobody-here@example.com", PASSWORD);
		const expected = [
			[401, "USERS_INVALID_CREDENTIALS", false],
			[401, "USERS_INVALID_CREDENTIALS", false],
			[401, "USERS_INVALID_CREDENTIALS", false],
			[429, "AUTH_LOGIN_THROTTLED", true]
		];
		expect(known).toEqual(expected);
		expect(unknown).toEqual(expected);
	});

	it("logs none of the secrets it was given or handled (process output at LOGLEVEL=debug)", async () => {
		const admin = await api(base, "POST", "/api/users/login", { body: ADMIN });
		expect(admin.status).toBe(200);
		tokens.push(admin.body.token);
		for (const token of tokens) {
			const me = await api(base, "GET", "/api/users/me", { token });
			expect(me.status).toBe(200);
		}
		// A forged token and a failing call with secrets in its params, for the error paths.
		await api(base, "GET", "/api/users/me", { token: tokens[0]!.slice(0, -3) + "abc" });
		await api(base, "POST", "/api/users/login", {
			body: { email: "throttled@example.com", password: WRONG_PASSWORD, extra: PASSWORD }
		});
		await shop.stop();
		const out = shop.output();
		// The output is the debug one (else this test would prove little).
		expect(out).toMatch(/DEBUG/);
		expect(out.length).toBeGreaterThan(10_000);
		const pgPassword = fs
			.readFileSync(path.join(shop.dataDir, "postgres-password"), "utf8")
			.trim();
		const secrets: Record<string, string> = {
			JWT_SECRET,
			ADMIN_PASSWORD: ADMIN.password,
			"Postgres password": pgPassword,
			"a customer's password": PASSWORD,
			"a wrong password": WRONG_PASSWORD,
			"a refused short password": SHORT_PASSWORD
		};
		tokens.forEach((t, i) => {
			secrets[`bearer token ${i}`] = t;
			secrets[`bearer token ${i}, signature`] = t.split(".")[2]!;
		});
		const leaked = Object.entries(secrets)
			.filter(([, v]) => out.includes(v))
			.map(([k]) => k);
		expect(leaked).toEqual([]);
	});
});
