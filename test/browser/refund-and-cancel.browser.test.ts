/**
 * The dashboard's way out of a saga parked after its pivot (issue 16, item 3), in Debian's
 * Chromium (`/usr/bin/chromium`, or `CHROMIUM_PATH`) driven headless by playwright-core against
 * the shop started the way `npm start` starts it (dist/, built by `npm run build`).
 *
 * A fault injected in the inventory database (a trigger refuses to mark this product's
 * reservations COMMITTED) parks an order's saga after its pivot: the card charged, the order
 * CONFIRMING. The operator presses "Refund & cancel" on the parked saga, confirms, and sees the
 * saga COMPENSATED with the action audited under their name; the order ends CANCELLED
 * (`OPERATOR_REFUNDED`), its payment refunded and its stock back. No console error is allowed.
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

describe("refund and cancel from the dashboard, in Chromium", () => {
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
		shop = await startShopProcess({ env: { ADMIN_PASSWORD: ADMIN.password } });
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

	it("parks an order after its pivot, then refunds and cancels it from the dashboard", async () => {
		const base = shop.url;
		const sku = `PARK-${Date.now().toString(36)}`;
		const created = await api(base, "POST", "/api/products", {
			token: adminToken,
			body: { sku, name: "Never shipped", price: 4_499, stock: 5 }
		});
		expect(created.status).toBe(201);
		const productId = created.body.id as string;

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
			// non-transient failure of commitStock parks the saga at once).
			await db.query(`
				CREATE OR REPLACE FUNCTION browser_test_refuse_commit() RETURNS trigger
				LANGUAGE plpgsql AS $$
				BEGIN
					IF NEW.status = 'COMMITTED' AND NEW.items::text LIKE '%${productId}%' THEN
						RAISE EXCEPTION 'injected fault: commit refused (browser test)';
					END IF;
					RETURN NEW;
				END $$;
				CREATE TRIGGER browser_test_refuse_commit BEFORE UPDATE ON reservations
					FOR EACH ROW EXECUTE FUNCTION browser_test_refuse_commit();`);

			const reg = await api(base, "POST", "/api/users/register", {
				body: {
					email: `dee-${Date.now().toString(36)}@example.com`,
					password: "Purple-Otter-Lantern-42",
					name: "Dee"
				}
			});
			const order = await api(base, "POST", "/api/orders", {
				token: reg.body.token,
				body: { items: [{ productId, quantity: 2 }], paymentMethod: "tok_visa" }
			});
			expect(order.status).toBe(202);
			const orderId = order.body.id as string;

			let sagaId = "";
			const deadline = Date.now() + 30_000;
			while (!sagaId && Date.now() < deadline) {
				const failed = await api(base, "GET", "/api/admin/sagas?status=FAILED", {
					token: adminToken
				});
				sagaId =
					(failed.body.rows as { id: string; orderId: string }[]).find(
						s => s.orderId === orderId
					)?.id ?? "";
				if (!sagaId) await new Promise(r => setTimeout(r, 300));
			}
			expect(sagaId).not.toBe("");
			const parked = await api(base, "GET", `/api/orders/${orderId}`, { token: adminToken });
			expect(parked.body.status).toBe("CONFIRMING");

			context = await browser.newContext({
				viewport: { width: 1440, height: 1000 },
				locale: "en-US"
			});
			const page = await context.newPage();
			page.setDefaultTimeout(15_000);
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

			const row = page.locator(`#parked-sagas tr[data-saga="${sagaId}"]`);
			await row.waitFor();
			await row.getByRole("button", { name: /^Refund and cancel saga/ }).click();
			await page.getByText(`Saga ${sagaId.slice(0, 8)}: refund and cancel started`).waitFor();
			expect(dialogs).toEqual([expect.stringMatching(/^Refund and cancel order /)]);
			const detail = page.locator("#saga-detail");
			await detail.locator('[data-status="COMPENSATED"]').waitFor({ timeout: 30_000 });
			await detail
				.locator('[data-action="REFUND_AND_CANCEL"]')
				.getByText(/Refunded and cancelled/)
				.waitFor();
			expect(
				await detail.locator('[data-action="REFUND_AND_CANCEL"]').textContent()
			).toContain(ADMIN.email);
			await row.waitFor({ state: "detached" });
			fs.mkdirSync(ARTIFACTS, { recursive: true });
			await page.screenshot({
				path: path.join(ARTIFACTS, "dashboard-refunded.png"),
				fullPage: true
			});

			const after = await api(base, "GET", `/api/orders/${orderId}`, { token: adminToken });
			expect(after.body).toMatchObject({
				status: "CANCELLED",
				cancellationReason: "OPERATOR_REFUNDED"
			});
			const stock = await api(base, "GET", `/api/inventory/${productId}`);
			expect(stock.body).toMatchObject({ onHand: 5, reserved: 0, available: 5 });
			expect(problems).toEqual([]);
		} finally {
			await db
				.query(
					"DROP TRIGGER IF EXISTS browser_test_refuse_commit ON reservations; DROP FUNCTION IF EXISTS browser_test_refuse_commit()"
				)
				.catch(() => undefined);
			await db.end();
		}
	}, 120_000);
});
