/**
 * Admin refunds and stuck orders on the dashboard (issue 16, item 4, and "no order stays in a
 * non-terminal status without an operator seeing it"), in Debian's Chromium (`/usr/bin/chromium`,
 * or `CHROMIUM_PATH`) driven headless by playwright-core against the shop started the way
 * `npm start` starts it (dist/, built by `npm run build`).
 *
 * An order parked after its pivot (a trigger in the inventory database refuses to commit this
 * product's reservations) shows in "Stuck orders" once past `ORDERS_STUCK_AFTER_MS` (1 s here),
 * with its parked saga. Another, CONFIRMED order is looked up in the "Order" panel and refunded
 * with restock: the operator confirms, the order ends REFUNDED, the panel shows the ledger's
 * REFUND entry and the action under the operator's name; its stock is back. No console error is
 * allowed.
 */
import fs from "node:fs";
import path from "node:path";
import { Client } from "pg";
import { chromium, type Browser, type BrowserContext } from "playwright-core";
import { api, startShopProcess, type ShopProcess } from "../support/shop-process";

const ROOT = path.resolve(__dirname, "..", "..");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const ARTIFACTS = path.join(__dirname, "artifacts");
const ADMIN = { email: "admin@example.com", password: "browser-admin-password" };

describe("admin refund and stuck orders on the dashboard, in Chromium", () => {
	let shop: ShopProcess;
	let browser: Browser;
	let context: BrowserContext | undefined;
	let adminToken: string;
	const problems: string[] = [];

	beforeAll(async () => {
		if (!fs.existsSync(CHROMIUM))
			throw new Error(
				`Chromium is not installed at ${CHROMIUM}: the browser tests need it (Debian: apt-get install chromium) or set CHROMIUM_PATH.`
			);
		if (!fs.existsSync(path.join(ROOT, "dist", "web", "index.html")))
			throw new Error(
				'dist/web/index.html is missing: run "npm run build" first (npm test does)'
			);
		shop = await startShopProcess({
			env: {
				ADMIN_PASSWORD: ADMIN.password,
				ORDERS_STUCK_AFTER_MS: "1000",
				ORDERS_STUCK_CHECK_INTERVAL_MS: "500"
			}
		});
		browser = await chromium.launch({
			executablePath: CHROMIUM,
			headless: true,
			args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
		});
		const login = await api(shop.url, "POST", "/api/users/login", { body: ADMIN });
		expect(login.status).toBe(200);
		adminToken = login.body.token;
	}, 120_000);

	afterAll(async () => {
		await context?.close();
		if (browser) await browser.close();
		if (shop) await shop.stop();
	});

	it("shows a parked order as stuck, and refunds a confirmed order with restock", async () => {
		const base = shop.url;
		const product = async (sku: string): Promise<string> => {
			const created = await api(base, "POST", "/api/products", {
				token: adminToken,
				body: { sku, name: `Returned ${sku}`, price: 4_499, stock: 5 }
			});
			expect(created.status).toBe(201);
			return created.body.id as string;
		};
		const stamp = Date.now().toString(36);
		const sold = await product(`RET-${stamp}`);
		const stuckProduct = await product(`STUCK-${stamp}`);
		const reg = await api(base, "POST", "/api/users/register", {
			body: {
				email: `ret-${stamp}@example.com`,
				password: "Purple-Otter-Lantern-42",
				name: "Ret"
			}
		});
		expect(reg.status).toBe(201);
		const place = async (productId: string): Promise<string> => {
			const o = await api(base, "POST", "/api/orders", {
				token: reg.body.token,
				body: { items: [{ productId, quantity: 2 }], paymentMethod: "tok_visa" }
			});
			expect(o.status).toBe(202);
			return o.body.id as string;
		};
		const statusOf = async (id: string): Promise<string> =>
			(await api(base, "GET", `/api/orders/${id}`, { token: adminToken })).body.status;
		const until = async (id: string, status: string): Promise<void> => {
			const deadline = Date.now() + 30_000;
			while ((await statusOf(id)) !== status) {
				if (Date.now() > deadline) throw new Error(`order ${id} never ${status}`);
				await new Promise(r => setTimeout(r, 200));
			}
		};
		const confirmed = await place(sold);
		await until(confirmed, "CONFIRMED");

		const db = new Client({
			host: "127.0.0.1",
			port: Number(shop.env.EMBEDDED_POSTGRES_PORT),
			user: "postgres",
			password: fs.readFileSync(path.join(shop.dataDir, "postgres-password"), "utf8").trim(),
			database: "inventory"
		});
		await db.connect();
		try {
			// The fault: this product's reservations cannot be committed (after the pivot, a
			// non-transient failure of commitStock parks the saga at once: CONFIRMING).
			await db.query(`
				CREATE OR REPLACE FUNCTION browser_test_refuse_commit2() RETURNS trigger
				LANGUAGE plpgsql AS $$
				BEGIN
					IF NEW.status = 'COMMITTED' AND NEW.items::text LIKE '%${stuckProduct}%' THEN
						RAISE EXCEPTION 'injected fault: commit refused (browser test)';
					END IF;
					RETURN NEW;
				END $$;
				CREATE TRIGGER browser_test_refuse_commit2 BEFORE UPDATE ON reservations
					FOR EACH ROW EXECUTE FUNCTION browser_test_refuse_commit2();`);
			const parked = await place(stuckProduct);
			await until(parked, "CONFIRMING");

			context = await browser.newContext({
				viewport: { width: 1440, height: 1000 },
				locale: "en-US"
			});
			const page = await context.newPage();
			page.setDefaultTimeout(20_000);
			page.on("console", m => {
				if (m.type() === "error") problems.push(`console: ${m.text()}`);
			});
			page.on("pageerror", e => problems.push(`page error: ${e.message}`));
			const dialogs: string[] = [];
			page.on("dialog", d => {
				dialogs.push(d.message());
				void d.accept();
			});
			await page.goto(`${base}/login`);
			await page.getByLabel("E-mail").fill(ADMIN.email);
			await page.getByLabel("Password").fill(ADMIN.password);
			await page.getByRole("button", { name: "Log in" }).click();
			await page.waitForURL(/\/admin$/);

			// The parked order is stuck: listed with its parked saga; it opens in the Order panel.
			const stuckRow = page.locator(`#stuck-orders tr[data-order="${parked}"]`);
			await stuckRow.waitFor();
			await stuckRow.locator('[data-status="CONFIRMING"]').waitFor();
			await stuckRow.locator('[data-status="FAILED"]').waitFor();
			await stuckRow
				.getByRole("button", { name: `Show order ${parked.slice(0, 8)}` })
				.click();
			const detail = page.locator("#order-detail");
			await detail.locator(`[data-order="${parked}"] [data-status="CONFIRMING"]`).waitFor();
			expect(await detail.getByRole("button", { name: /^Refund order/ }).count()).toBe(0);

			// The confirmed order, refunded with restock.
			await detail.getByLabel("Order id").fill(confirmed);
			await detail.getByRole("button", { name: "Show" }).click();
			const shown = detail.locator(`[data-order="${confirmed}"]`);
			await shown
				.locator('[data-testid="order-detail-status"] [data-status="CONFIRMED"]')
				.waitFor();
			expect(await detail.getByLabel("Restock the items").isChecked()).toBe(true);
			await detail.getByLabel("Note").fill("returned unopened");
			await detail
				.getByRole("button", { name: `Refund order ${confirmed.slice(0, 8)}` })
				.click();
			await page.getByText(`Order ${confirmed.slice(0, 8)}: refund started`).waitFor();
			expect(dialogs).toEqual([
				expect.stringMatching(/^Refund order .* and restock its items\?/)
			]);
			await shown
				.locator('[data-testid="order-detail-status"] [data-status="REFUNDED"]')
				.waitFor({ timeout: 30_000 });
			await shown.locator('[data-ledger="REFUND"]').waitFor();
			expect(await shown.locator('[data-action="REFUND"]').textContent()).toContain(
				ADMIN.email
			);
			expect(await shown.locator('[data-action="REFUND"]').textContent()).toContain(
				"returned unopened"
			);
			fs.mkdirSync(ARTIFACTS, { recursive: true });
			await page.screenshot({
				path: path.join(ARTIFACTS, "dashboard-admin-refund.png"),
				fullPage: true
			});

			expect(await statusOf(confirmed)).toBe("REFUNDED");
			const stock = await api(base, "GET", `/api/inventory/${sold}`);
			expect(stock.body).toMatchObject({ onHand: 5, reserved: 0, available: 5 });
			expect(problems).toEqual([]);
		} finally {
			await db
				.query(
					"DROP TRIGGER IF EXISTS browser_test_refuse_commit2 ON reservations; DROP FUNCTION IF EXISTS browser_test_refuse_commit2()"
				)
				.catch(() => undefined);
			await db.end();
		}
	}, 150_000);
});
