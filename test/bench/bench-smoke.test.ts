/**
 * `npm run bench` works (its compiled entry, built by `npm test`'s build step plus `tsc -p bench`):
 * a one-second run of every floor and of the one-process shop's workloads produces the table and
 * the JSON with every figure. It checks that the benchmark runs and reports, never how fast
 * anything is (speed is reported by the benchmark, not asserted by tests).
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const ROOT = path.join(__dirname, "..", "..");

describe("npm run bench (smoke)", () => {
	it("runs the floors and the one-process shop's workloads and writes every figure", () => {
		const tsc = spawnSync(
			process.execPath,
			[require.resolve("typescript/bin/tsc"), "-p", "bench"],
			{
				cwd: ROOT,
				encoding: "utf8"
			}
		);
		expect(tsc.status).toBe(0);
		const out = path.join(
			fs.mkdtempSync(path.join(os.tmpdir(), "bench-smoke-")),
			"latest.json"
		);
		const run = spawnSync(process.execPath, [path.join(ROOT, "dist", "bench", "run.js")], {
			cwd: ROOT,
			encoding: "utf8",
			timeout: 240_000,
			env: {
				...process.env,
				BENCH_DURATION_S: "1",
				BENCH_CONNECTIONS: "4",
				BENCH_FORMS: "single",
				BENCH_OUT: out
			}
		});
		if (run.status !== 0) console.log(run.stdout, run.stderr);
		expect(run.status).toBe(0);
		expect(run.stdout).toMatch(/ratio to floor/);
		const result = JSON.parse(fs.readFileSync(out, "utf8")) as {
			floors: Record<string, number>;
			figures: { form: string; name: string; value: number }[];
		};
		expect(Object.keys(result.floors).sort()).toEqual(["gatewayLocal", "http", "pgCommits"]);
		const names = result.figures.map(f => `${f.form} ${f.name}`);
		for (const want of [
			"single (a) GET /api/products/:id, cached",
			"single (b) GET /api/products?search=…, uncached",
			"single (c) POST /api/orders accepted (202)",
			"single (c) orders confirmed",
			"single (d) shop mix 10 reads : 1 order"
		])
			expect(names).toContain(want);
		for (const f of result.figures) expect([f.name, f.value > 0]).toEqual([f.name, true]);
		fs.rmSync(path.dirname(out), { recursive: true, force: true });
	}, 300_000);
});
