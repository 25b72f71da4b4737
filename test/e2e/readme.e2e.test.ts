/**
 * The README's curl walkthrough, run verbatim (only the port differs) against a fresh shop
 * started the way `npm start` starts it.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { walkthroughBlock } from "../support/readme";
import { startShopProcess, type ShopProcess } from "../support/shop-process";

describe("README walkthrough", () => {
	let shop: ShopProcess;

	beforeAll(async () => {
		shop = await startShopProcess();
	}, 120_000);
	afterAll(async () => {
		if (shop) await shop.stop();
	});

	it("works as written", () => {
		const readme = fs.readFileSync(path.join(__dirname, "..", "..", "README.md"), "utf8");
		const block = walkthroughBlock(readme);
		expect(block).toContain("API=http://localhost:3000/api");
		const script = block.replace("http://localhost:3000/api", `${shop.url}/api`);
		const run = spawnSync("bash", ["-c", script], {
			encoding: "utf8",
			timeout: 60_000,
			env: { ...process.env }
		});
		expect(run.error).toBeUndefined();
		expect(run.status).toBe(0);
		const out = run.stdout;
		expect(out).toMatch(/"status":"CONFIRMED"/);
		expect(out).toMatch(/"kind":"ORDER_CONFIRMED"/);
		// The mug's stock: the second inventory line shows two fewer on hand than the first.
		const levels = [...out.matchAll(/"onHand":(\d+)/g)].map(m => Number(m[1]));
		expect(levels).toHaveLength(2);
		expect(levels[0]! - levels[1]!).toBe(2);
	}, 90_000);
});
