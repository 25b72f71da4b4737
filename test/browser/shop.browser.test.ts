/**
 * The web app in a real browser: Debian's Chromium (`/usr/bin/chromium`, or `CHROMIUM_PATH`)
 * driven headless by playwright-core against the shop started the way `npm start` starts it (one
 * process, its own embedded Postgres, the web app built into dist/web by `npm run build`).
 *
 * - a purchase: register, search, product page with live stock, cart, checkout with `tok_visa`,
 *   the order page following the saga live (Server-Sent Events) to CONFIRMED, history and
 *   notifications;
 * - a declined card on a phone-sized screen, checked out with the keyboard only: CANCELLED with
 *   PAYMENT_DECLINED shown, no horizontal scrolling;
 * - an admin redrive: a compensation (inventory.release) made to fail for good by a trigger on the
 *   inventory database parks the saga as FAILED; the dashboard shows it, the fault is lifted, the
 *   operator redrives it from the dashboard and sees it COMPENSATED.
 *
 * No console error (a CSP violation is one) is allowed on any page. Screenshots go to
 * test/browser/artifacts/ (gitignored); `UPDATE_SCREENSHOTS=1` also refreshes the README's
 * (docs/screenshots/).
 */
import fs from "node:fs";
import path from "node:path";
import { Client } from "pg";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { api, startShopProcess, type ShopProcess } from "../support/shop-process";

const ROOT = path.resolve(__dirname, "..", "..");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const ARTIFACTS = path.join(__dirname, "artifacts");
const DOC_SCREENSHOTS = path.join(ROOT, "docs", "screenshots");
const ADMIN = { email: "admin@example.com", password: "browser-admin-password" };
const PASSWORD = "Purple-Otter-Lantern-42";
/** In the page: how far the document is wider than the window (script text: no DOM types here). */
const HORIZONTAL_OVERFLOW = "document.documentElement.scrollWidth - window.innerWidth";

describe("the shop in Chromium", () => {
	let shop: ShopProcess;
	let browser: Browser;
	let base: string;
	let adminToken: string;
	const contexts: BrowserContext[] = [];
	const problems: string[] = [];

	/** A fresh browser profile (own localStorage) whose console errors fail the test. */
	async function newPage(name: string, viewport = { width: 1280, height: 900 }): Promise<Page> {
		const context = await browser.newContext({ viewport, locale: "en-US" });
		contexts.push(context);
		const page = await context.newPage();
		page.setDefaultTimeout(15_000);
		page.on("console", m => {
			if (m.type() === "error") problems.push(`${name}: console: ${m.text()}`);
		});
		page.on("pageerror", e => problems.push(`${name}: page error: ${e.message}`));
		return page;
	}

	async function screenshot(
		page: Page,
		file: string,
		opts: { docs?: boolean; fullPage?: boolean } = {}
	): Promise<void> {
		fs.mkdirSync(ARTIFACTS, { recursive: true });
		const target = path.join(ARTIFACTS, file);
		await page.screenshot({ path: target, fullPage: opts.fullPage ?? true });
		if (opts.docs && process.env.UPDATE_SCREENSHOTS === "1") {
			fs.mkdirSync(DOC_SCREENSHOTS, { recursive: true });
			fs.copyFileSync(target, path.join(DOC_SCREENSHOTS, file));
		}
	}

	async function register(page: Page, name: string, email: string): Promise<void> {
		await page.getByRole("link", { name: "Register", exact: true }).click();
		await page.getByRole("heading", { name: "Create an account" }).waitFor();
		await page.getByLabel("Name", { exact: true }).fill(name);
		await page.getByLabel("E-mail", { exact: true }).fill(email);
		await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
		// The form submits with Enter.
		await page.getByLabel("Password", { exact: true }).press("Enter");
		await page.getByRole("button", { name: /Log out/ }).waitFor();
	}

	const unique = (prefix: string): string =>
		`${prefix}-${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}@example.com`;

	beforeAll(async () => {
		if (!fs.existsSync(CHROMIUM))
			throw new Error(
				`Chromium is not installed at ${CHROMIUM}: the browser tests need it. ` +
					`Install it (Debian: apt-get install chromium; .ci/run does) or set CHROMIUM_PATH.`
			);
		if (!fs.existsSync(path.join(ROOT, "dist", "web", "index.html")))
			throw new Error(
				'dist/web/index.html is missing: run "npm run build" first (npm test does)'
			);
		shop = await startShopProcess({ env: { ADMIN_PASSWORD: ADMIN.password } });
		base = shop.url;
		browser = await chromium.launch({
			executablePath: CHROMIUM,
			headless: true,
			args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
		});
		const login = await api(base, "POST", "/api/users/login", { body: ADMIN });
		expect(login.status).toBe(200);
		adminToken = login.body.token;
	}, 120_000);

	afterEach(async () => {
		for (const c of contexts.splice(0)) await c.close();
		const found = problems.splice(0);
		expect(found).toEqual([]);
	});

	afterAll(async () => {
		if (browser) await browser.close();
		if (shop) await shop.stop();
	});

	it("serves the app, its deep links and files beside an untouched API", async () => {
		const home = await fetch(`${base}/`, { headers: { Accept: "text/html" } });
		expect(home.status).toBe(200);
		expect(home.headers.get("content-type")).toMatch(/^text\/html/);
		const csp = home.headers.get("content-security-policy") ?? "";
		expect(csp).toContain("script-src 'self'");
		expect(csp).toContain("style-src 'self'");
		expect(csp).toContain("connect-src 'self'");
		expect(csp).not.toContain("unsafe-inline");
		const html = await home.text();
		expect(html).toContain('<html lang="en">');
		const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)![1]!;
		const js = await fetch(base + script);
		expect(js.headers.get("content-type")).toMatch(/^text\/javascript/);
		expect(js.headers.get("cache-control")).toContain("immutable");

		for (const deep of ["/admin", "/orders/6f1c2f4e-8a51-4c1e-9f6a-3d2b7c9e5a10", "/cart"]) {
			const r = await fetch(base + deep, { headers: { Accept: "text/html" } });
			expect(r.status).toBe(200);
			expect(await r.text()).toBe(html);
		}
		// Not pages: a missing file, the API and the probes keep their JSON answers and strict CSP.
		expect((await fetch(`${base}/assets/missing.js`)).status).toBe(404);
		for (const url of ["/api/nope", "/api/index.html"]) {
			const r = await fetch(base + url, { headers: { Accept: "text/html" } });
			expect(r.status).toBe(404);
			expect(r.headers.get("content-type")).toMatch(/^application\/json/);
			expect(r.headers.get("content-security-policy")).toContain("default-src 'none'");
		}
		const products = await fetch(`${base}/api/products`);
		expect(products.headers.get("content-security-policy")).toContain("default-src 'none'");
		expect((await api(base, "GET", "/health")).body.status).toBe("ok");

		// Admin routes: admins only; $node.* itself is never reachable.
		const reg = await api(base, "POST", "/api/users/register", {
			body: { email: unique("nosy"), password: PASSWORD, name: "Nosy" }
		});
		const customer = reg.body.token as string;
		for (const url of ["/api/admin/nodes", "/api/admin/orders/rate", "/api/admin/sagas"]) {
			expect((await api(base, "GET", url)).status).toBe(401);
			expect((await api(base, "GET", url, { token: customer })).status).toBe(403);
			expect((await api(base, "GET", url, { token: adminToken })).status).toBe(200);
		}
		for (const url of ["/api/$node/list", "/api/~node/list", "/api/node/list"])
			expect((await api(base, "GET", url, { token: adminToken })).status).toBe(404);
		const nodes = await api(base, "GET", "/api/admin/nodes", { token: adminToken });
		expect(nodes.body.nodes[0].services).toEqual(
			expect.arrayContaining(["api", "orders", "inventory", "payments"])
		);
		expect(JSON.stringify(nodes.body)).not.toMatch(/argv|ipList/);
	});

	it("buys to CONFIRMED: register, search, live stock, cart, tok_visa, live order page", async () => {
		const page = await newPage("purchase");
		await page.goto(`${base}/`);
		await page.getByRole("heading", { name: "Catalog" }).waitFor();
		await page.locator(".product-card").first().waitFor();
		await screenshot(page, "storefront.png", { docs: true });

		await register(page, "Ann", unique("ann"));

		// Search with Enter.
		await page.getByLabel("Search products").fill("mug");
		await page.getByLabel("Search products").press("Enter");
		await page.getByRole("heading", { name: "Results for “mug”" }).waitFor();
		await page.getByRole("link", { name: "Developer Coffee Mug" }).click();
		await page.getByRole("heading", { name: "Developer Coffee Mug" }).waitFor();
		const stock = page.getByTestId("stock");
		await expectText(stock, /In stock: \d+ available/);
		const before = Number(/(\d+) available/.exec((await stock.textContent())!)![1]);

		await page.getByLabel("Quantity").fill("2");
		await page.getByRole("button", { name: "Add to cart" }).click();
		await page.getByRole("status").filter({ hasText: "added to the cart" }).waitFor();
		await page.getByRole("link", { name: /^Cart/ }).click();
		await page.getByRole("heading", { name: "Cart" }).waitFor();
		await expectText(page.getByTestId("cart-total"), "$25.98");
		await page.getByLabel("Card (test token)").selectOption("tok_visa");
		await page.getByRole("button", { name: /Place order/ }).click();

		await page.waitForURL(/\/orders\/[0-9a-f-]{36}$/);
		const orderId = page.url().split("/").pop()!;
		await page
			.getByTestId("order-status")
			.locator('[data-status="CONFIRMED"]')
			.waitFor({ timeout: 30_000 });
		await page.getByText("Thank you! Your order is confirmed.").waitFor();
		await screenshot(page, "order-confirmed.png");

		// The product page's stock moved by the two units.
		const o = await api(base, "GET", `/api/orders/${orderId}`, { token: adminToken });
		const productId = o.body.items[0].productId as string;
		await page.goto(`${base}/products/${productId}`);
		await expectText(page.getByTestId("stock"), `In stock: ${before - 2} available`);

		// History and notifications.
		await page.getByRole("link", { name: "Orders", exact: true }).click();
		await page.getByRole("heading", { name: "Your orders" }).waitFor();
		const row = page.getByRole("row").filter({ hasText: `#${orderId.slice(0, 8)}` });
		await row.locator('[data-status="CONFIRMED"]').waitFor();
		await page.getByRole("link", { name: "Notifications", exact: true }).click();
		await page
			.getByRole("heading", { name: `Order ${orderId.slice(0, 8)} confirmed` })
			.waitFor({ timeout: 20_000 });

		// A customer is no admin.
		await page.goto(`${base}/admin`);
		await page.getByText("This dashboard is for administrators.").waitFor();
	}, 120_000);

	it("declines a card to CANCELLED (PAYMENT_DECLINED) on a phone, checked out with the keyboard", async () => {
		const page = await newPage("declined", { width: 390, height: 844 });
		await page.goto(`${base}/`);
		await register(page, "Bob", unique("bob"));
		await page.goto(`${base}/?search=mug`);
		await page.getByRole("button", { name: "Add Developer Coffee Mug to cart" }).click();
		// Nothing wider than the screen.
		const overflow = await page.evaluate<number>(HORIZONTAL_OVERFLOW);
		expect(overflow).toBeLessThanOrEqual(0);
		await screenshot(page, "phone-catalog.png");

		await page.goto(`${base}/cart`);
		await page.getByRole("heading", { name: "Cart" }).waitFor();
		// Keyboard only: on the card select, type to pick "Declined card", Tab to the button, Enter.
		const select = page.getByLabel("Card (test token)");
		await select.focus();
		await page.keyboard.type("Declined c");
		expect(await select.inputValue()).toBe("tok_chargeDeclined");
		await page.keyboard.press("Tab");
		const focused = await page.evaluate<{ text: string; tag: string; outline: string }>(
			`(() => {
				const el = document.activeElement;
				return { text: el.textContent || "", tag: el.tagName, outline: getComputedStyle(el).outlineStyle };
			})()`
		);
		expect(focused.tag).toBe("BUTTON");
		expect(focused.text).toMatch(/Place order/);
		expect(focused.outline).not.toBe("none"); // the focus is visible
		await page.keyboard.press("Enter");

		await page.waitForURL(/\/orders\/[0-9a-f-]{36}$/);
		await page
			.getByTestId("order-status")
			.locator('[data-status="CANCELLED"]')
			.waitFor({ timeout: 30_000 });
		await expectText(page.getByTestId("cancellation-reason"), /PAYMENT_DECLINED/);
		await page.getByText("The card was declined.", { exact: false }).waitFor();
		const overflowOrder = await page.evaluate<number>(HORIZONTAL_OVERFLOW);
		expect(overflowOrder).toBeLessThanOrEqual(0);
		await screenshot(page, "phone-order-cancelled.png");
	}, 120_000);

	it("redrives a parked saga from the dashboard once its fault is lifted", async () => {
		// A product of its own, so the injected fault touches no other order.
		const sku = `FAULT-${Date.now().toString(36)}`;
		const created = await api(base, "POST", "/api/products", {
			token: adminToken,
			body: {
				sku,
				name: "Fault-injected widget",
				description: "Its stock cannot be released while the fault is on.",
				price: 500,
				stock: 10
			}
		});
		expect(created.status).toBe(201);
		const productId = created.body.id as string;

		// The fault: the inventory database refuses to mark this product's reservations RELEASED,
		// so the saga's compensation (inventory.release) fails every retry and the saga parks.
		const pgPassword = fs
			.readFileSync(path.join(shop.dataDir, "postgres-password"), "utf8")
			.trim();
		const db = new Client({
			host: "127.0.0.1",
			port: Number(shop.env.EMBEDDED_POSTGRES_PORT),
			user: "postgres",
			password: pgPassword,
			database: "inventory"
		});
		await db.connect();
		try {
			await db.query(`
				CREATE OR REPLACE FUNCTION browser_test_refuse_release() RETURNS trigger
				LANGUAGE plpgsql AS $$
				BEGIN
					IF NEW.status = 'RELEASED' AND NEW.items::text LIKE '%${productId}%' THEN
						RAISE EXCEPTION 'injected fault: release refused (browser test)';
					END IF;
					RETURN NEW;
				END $$;
				CREATE TRIGGER browser_test_refuse_release BEFORE UPDATE ON reservations
					FOR EACH ROW EXECUTE FUNCTION browser_test_refuse_release();`);

			const reg = await api(base, "POST", "/api/users/register", {
				body: { email: unique("cyd"), password: PASSWORD, name: "Cyd" }
			});
			const order = await api(base, "POST", "/api/orders", {
				token: reg.body.token,
				body: {
					items: [{ productId, quantity: 3 }],
					paymentMethod: "tok_chargeDeclined"
				}
			});
			expect(order.status).toBe(202);
			const orderId = order.body.id as string;

			// The operator's view while the compensation keeps failing.
			const page = await newPage("admin", { width: 1440, height: 1100 });
			await page.goto(`${base}/login`);
			await page.getByLabel("E-mail").fill(ADMIN.email);
			await page.getByLabel("Password").fill(ADMIN.password);
			await page.getByRole("button", { name: "Log in" }).click();
			await page.waitForURL(/\/admin$/);
			await page.getByRole("heading", { name: "Operations" }).waitFor();

			// Parked after its compensation retries (about 10 attempts with backoff).
			let sagaId = "";
			const deadline = Date.now() + 60_000;
			while (!sagaId && Date.now() < deadline) {
				const failed = await api(base, "GET", "/api/admin/sagas?status=FAILED", {
					token: adminToken
				});
				sagaId =
					(failed.body.rows as { id: string; orderId: string }[]).find(
						s => s.orderId === orderId
					)?.id ?? "";
				if (!sagaId) await new Promise(r => setTimeout(r, 500));
			}
			expect(sagaId).not.toBe("");

			const parkedRow = page.locator(`#parked-sagas tr[data-saga="${sagaId}"]`);
			await parkedRow.waitFor();
			await parkedRow.getByRole("button", { name: /^Steps/ }).click();
			const detail = page.locator("#saga-detail");
			await detail.locator('[data-status="FAILED"]').first().waitFor();
			await expectText(detail.locator(".timeline"), /inventory|release|reserveStock/);
			// The nodes panel, the chart, the stock table.
			await page.getByRole("heading", { name: "Cluster nodes" }).waitFor();
			await page.locator(".node").getByText("Healthy").first().waitFor();
			await page.locator(".chart svg polyline").first().waitFor();
			await page.getByRole("row").filter({ hasText: sku }).waitFor();
			await screenshot(page, "dashboard-full.png");
			// The README's: the top of the dashboard (chart, nodes, sagas, the parked one's steps).
			await page.evaluate("window.scrollTo(0, 0)");
			await screenshot(page, "dashboard.png", { docs: true, fullPage: false });

			// Lift the fault, then redrive from the dashboard.
			await db.query(
				"DROP TRIGGER browser_test_refuse_release ON reservations; DROP FUNCTION browser_test_refuse_release()"
			);
			await parkedRow.getByRole("button", { name: /^Redrive/ }).click();
			await page.getByText(`Saga ${sagaId.slice(0, 8)} redriven`).waitFor();
			await detail.locator('[data-status="COMPENSATED"]').waitFor({ timeout: 30_000 });
			await page.locator(`#parked-sagas tr[data-saga="${sagaId}"]`).waitFor({
				state: "detached"
			});
			await screenshot(page, "dashboard-redriven.png");

			const after = await api(base, "GET", `/api/orders/${orderId}`, { token: adminToken });
			expect(after.body.status).toBe("CANCELLED");
			expect(after.body.cancellationReason).toBe("PAYMENT_DECLINED");
			const stock = await api(base, "GET", `/api/inventory/${productId}`);
			expect(stock.body).toMatchObject({ onHand: 10, reserved: 0, available: 10 });

			// Stock adjustment from the dashboard.
			await page.getByLabel("New on-hand quantity of Fault-injected widget").fill("7");
			await page.getByLabel("New on-hand quantity of Fault-injected widget").press("Enter");
			await page
				.getByRole("row")
				.filter({ hasText: sku })
				.getByRole("status")
				.filter({ hasText: "Saved" })
				.waitFor();
			expect((await api(base, "GET", `/api/inventory/${productId}`)).body.onHand).toBe(7);
		} finally {
			await db
				.query(
					"DROP TRIGGER IF EXISTS browser_test_refuse_release ON reservations; DROP FUNCTION IF EXISTS browser_test_refuse_release()"
				)
				.catch(() => undefined);
			await db.end();
		}
	}, 150_000);
});

/** Waits until the locator's text matches. */
async function expectText(
	locator: import("playwright-core").Locator,
	want: string | RegExp,
	timeoutMs = 15_000
): Promise<void> {
	const end = Date.now() + timeoutMs;
	let text = "";
	while (Date.now() < end) {
		text = (await locator.textContent().catch(() => null)) ?? "";
		if (typeof want === "string" ? text.includes(want) : want.test(text)) return;
		await new Promise(r => setTimeout(r, 100));
	}
	throw new Error(`expected ${String(want)}, got "${text}"`);
}
