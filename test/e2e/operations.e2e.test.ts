/**
 * What an operator sees of the shop started the way `npm start` starts it (one process, its own
 * embedded Postgres, `NODE_ENV=production` so logs are JSON lines):
 *
 * - start-up progress: the first Postgres initialisation, then each service as it has started
 *   (with the migrations it applied), then a summary with the URLs of the API, the docs page, the
 *   OpenAPI document, the probes (gateway and node) and the metrics, and, on the first start
 *   only, the generated administrator credentials, which work and appear in no log line;
 * - every printed URL answers;
 * - one order's log lines, found by its X-Request-ID, are JSON objects from every service;
 * - the docs page renders in Chromium (Debian's, or `CHROMIUM_PATH`) with every route and no
 *   console error (a CSP violation is one);
 * - a second start on the same data prints no credentials and initialises nothing.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { chromium } from "playwright-core";
import { API_ALIASES } from "../../services/api/routes";
import { freePort } from "../support/ports";
import { api, startShopProcess, type ShopProcess } from "../support/shop-process";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const JWT_SECRET = "ops-e2e-secret-ops-e2e-secret-ops-e2e-0123456";

/** The `[shop] ...` lines of an output, without the prefix. */
const shopLines = (out: string): string[] =>
	out
		.split("\n")
		.filter(l => l.startsWith("[shop] "))
		.map(l => l.slice("[shop] ".length));

describe("operating the shop (npm start form)", () => {
	let shop: ShopProcess;
	let metricsPort: number;
	let healthPort: number;

	beforeAll(async () => {
		metricsPort = await freePort();
		healthPort = await freePort();
		while (healthPort === metricsPort) healthPort = await freePort();
		shop = await startShopProcess({
			env: {
				NODE_ENV: "production",
				JWT_SECRET,
				METRICS_PORT: String(metricsPort),
				HEALTH_PORT: String(healthPort)
			}
		});
	}, 120_000);
	afterAll(async () => {
		if (shop) await shop.stop();
	});

	it("shows start-up progress, then the URLs and the generated administrator once", async () => {
		// The summary follows "Ready in" (what startShopProcess waits for) at once; its last line
		// on a first start is the administrator's, which may come in a later chunk of the pipe
		// than the lines before it.
		for (let i = 0; i < 50 && !/\[shop\] Admin /.test(shop.output()); i++)
			await new Promise(r => setTimeout(r, 100));
		const lines = shopLines(shop.output());
		const at = (re: RegExp): number => lines.findIndex(l => re.test(l));
		// Progress, in order: Postgres initialised, the services one by one, then ready.
		const order = [
			/^Initialising Postgres in .* \(first start only\)\.\.\.$/,
			/^Postgres initialised in \d+\.\d s$/,
			/^Starting Postgres on 127\.0\.0\.1:\d+\.\.\.$/,
			/^Postgres started in \d+\.\d s$/,
			/^Starting 7 services \(migrations and demo data on first start\)\.\.\.$/,
			/^Ready in \d+\.\d s$/
		].map(at);
		expect(order.every(i => i >= 0)).toBe(true);
		expect([...order].sort((a, b) => a - b)).toEqual(order);
		for (const s of ["users", "products", "inventory", "payments", "orders", "notifications"]) {
			const i = at(
				new RegExp(`^  ${s} started \\([1-7]/7, \\d+\\.\\d s, \\d+ migrations? applied\\)$`)
			);
			expect({ s, i: i > order[4]! && i < order[5]! }).toEqual({ s, i: true });
		}
		expect(at(/^ {2}api started \([1-7]\/7, \d+\.\d s\)$/)).toBeGreaterThan(order[4]!);

		// The summary, with URLs that answer.
		const url = (label: string): string => {
			const line = lines.find(l => l.startsWith(label));
			expect({ label, line }).toEqual({ label, line: expect.any(String) });
			return /(http:\/\/\S+)/.exec(line!)![1]!;
		};
		expect(url("API ")).toBe(`${shop.url}/api/products`);
		expect(url("Docs ")).toBe(`${shop.url}/api/docs`);
		expect(lines.find(l => l.startsWith("Docs "))).toContain(`${shop.url}/api/openapi.json`);
		expect(url("Health ")).toBe(`${shop.url}/health`);
		expect(url("Node ")).toBe(`http://127.0.0.1:${healthPort}/health`);
		expect(url("Metrics ")).toBe(`http://127.0.0.1:${metricsPort}/metrics`);
		for (const u of [
			`${shop.url}/api/products`,
			`${shop.url}/api/docs`,
			`${shop.url}/api/openapi.json`,
			`${shop.url}/health`,
			`${shop.url}/ready`,
			`http://127.0.0.1:${healthPort}/health`,
			`http://127.0.0.1:${healthPort}/ready`,
			`http://127.0.0.1:${metricsPort}/metrics`
		])
			expect({ u, status: (await fetch(u)).status }).toEqual({ u, status: 200 });
		const node = (await (await fetch(`http://127.0.0.1:${healthPort}/ready`)).json()) as {
			checks: Record<string, string>;
		};
		expect(Object.keys(node.checks).sort()).toEqual(
			[
				"broker",
				"api",
				"users",
				"products",
				"inventory",
				"payments",
				"orders",
				"notifications"
			].sort()
		);

		// The administrator, generated on this first start: printed once, in no log line.
		const admin = /^Admin {4}(\S+) \/ (\S+) {2}\(generated on this first start/.exec(
			lines.find(l => l.startsWith("Admin ")) ?? ""
		);
		expect(admin).not.toBeNull();
		const [, email, password] = admin!;
		expect(email).toBe("admin@example.com");
		expect(shop.output().split(password!).length - 1).toBe(1);
		const login = await api(shop.url, "POST", "/api/users/login", {
			body: { email, password }
		});
		expect(login.status).toBe(200);
		expect(login.body.user.role).toBe("admin");
	});

	it("logs JSON lines, one order's found by its X-Request-ID in every service", async () => {
		const reg = await api(shop.url, "POST", "/api/users/register", {
			body: {
				email: `ops-${crypto.randomBytes(4).toString("hex")}@example.com`,
				password: `Pw-${crypto.randomBytes(12).toString("base64url")}-9z`,
				name: "Ops"
			}
		});
		expect(reg.status).toBe(201);
		const products = await api(shop.url, "GET", "/api/products?pageSize=1");
		const requestId = `ops-${crypto.randomUUID()}`;
		const placed = await api(shop.url, "POST", "/api/orders", {
			token: reg.body.token,
			headers: { "X-Request-ID": requestId },
			body: {
				items: [{ productId: products.body.rows[0].id, quantity: 1 }],
				paymentMethod: "tok_visa"
			}
		});
		expect(placed.status).toBe(202);
		const end = Date.now() + 20_000;
		const services = (): Set<string> =>
			new Set(
				shop
					.output()
					.split("\n")
					.filter(l => l.includes(requestId))
					.map(l => (JSON.parse(l) as { svc: string }).svc)
			);
		while (services().size < 5 && Date.now() < end) await new Promise(r => setTimeout(r, 100));
		expect([...services()].sort()).toEqual(
			["api", "inventory", "notifications", "orders", "payments"].sort()
		);
		for (const line of shop
			.output()
			.split("\n")
			.filter(l => l.includes(requestId)))
			expect(JSON.parse(line)).toMatchObject({ requestId, nodeID: expect.any(String) });
		// Production form: everything but the start script's own lines is JSON.
		for (const line of shop.output().split("\n"))
			if (line.trim() && !line.startsWith("[shop] "))
				expect({ line, json: line.startsWith("{") }).toEqual({ line, json: true });
	}, 60_000);

	it("renders the docs page in Chromium: every route, no console error", async () => {
		if (!fs.existsSync(CHROMIUM))
			throw new Error(
				`Chromium is not installed at ${CHROMIUM}: install it (Debian: apt-get install chromium) or set CHROMIUM_PATH.`
			);
		const browser = await chromium.launch({
			executablePath: CHROMIUM,
			headless: true,
			args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
		});
		try {
			const page = await browser.newPage();
			const problems: string[] = [];
			page.on("console", m => {
				if (m.type() === "error") problems.push(m.text());
			});
			page.on("pageerror", e => problems.push(e.message));
			const requests: string[] = [];
			page.on("request", r => requests.push(r.url()));
			await page.goto(`${shop.url}/api/docs`);
			await page.locator(".opblock").first().waitFor({ timeout: 20_000 });
			const routes = Object.keys(API_ALIASES).length + 2; // with /health and /ready
			expect(await page.locator(".opblock").count()).toBeGreaterThanOrEqual(routes);
			await page.getByText("/api/orders/{id}/cancel").first().waitFor();
			expect(problems).toEqual([]);
			// Nothing from another origin: the page is served by the gateway alone.
			expect(requests.filter(u => !u.startsWith(shop.url))).toEqual([]);
		} finally {
			await browser.close();
		}
	}, 60_000);

	it("prints no credentials and initialises nothing on the next start", async () => {
		const code = await shop.stop();
		expect(code).toBe(0);
		shop = await startShopProcess({
			dataDir: shop.dataDir,
			env: {
				NODE_ENV: "production",
				JWT_SECRET,
				METRICS_PORT: String(metricsPort),
				HEALTH_PORT: String(healthPort)
			}
		});
		const lines = shopLines(shop.output());
		expect(lines.some(l => l.startsWith("Admin "))).toBe(false);
		expect(lines.some(l => l.startsWith("Initialising Postgres"))).toBe(false);
		expect(lines.some(l => /^ {2}users started \(\d\/7, \d+\.\d s\)$/.test(l))).toBe(true);
		expect(lines.some(l => l.startsWith("Ready in"))).toBe(true);
	}, 120_000);
});
