/**
 * The development loop as a developer runs it, on a copy of this checkout (its own dist/, its own
 * `.env`, node_modules linked), through the package.json scripts with npm:
 *
 * - `npm start` twice: the first builds (tsc, Vite), the second starts without building; both
 *   read `.env` (its PORT, DATA_DIR, EMBEDDED_POSTGRES_PORT), and a variable set in the
 *   environment wins over `.env` (Node's `--env-file-if-exists`).
 * - `npm run dev`: the shop from the sources with the REPL on stdin and its Postgres, Vite's dev
 *   server proxying /api to it; `npm run repl -- --connect` joins it over NATS (TRANSPORTER from
 *   `.env`) and calls it; a saved source file restarts the shop with the new code while Postgres
 *   keeps running (same postmaster); a syntax error leaves it waiting until the next save; the
 *   REPL's `quit` ends everything (Postgres and Vite included).
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort } from "../support/ports";
import { startNats, type NatsServer } from "../support/nats";

const ROOT = path.resolve(__dirname, "..", "..");
/** What a fresh clone would not have, or what is large and not an input. */
const NOT_COPIED = new Set([
	"node_modules",
	"dist",
	".git",
	".data",
	"coverage",
	"test-artifacts",
	".env"
]);

jest.setTimeout(600_000);

interface Run {
	child: ChildProcess;
	output(): string;
	/** Waits until the output after `from` matches. */
	waitFor(re: RegExp, from?: number, ms?: number): Promise<string>;
	write(line: string): void;
	exited(): Promise<number | null>;
	/**
	 * SIGINT to the whole process group (Ctrl-C), then waits for the exit: resolves with the exit
	 * status, or the signal when npm re-raised it (npm does after forwarding a Ctrl-C).
	 */
	interrupt(): Promise<number | NodeJS.Signals | null>;
}

/** Whether `pid` has exited within 15 s (npm may exit before the script it ran). */
async function gone(pid: number): Promise<boolean> {
	const end = Date.now() + 15_000;
	while (alive(pid) && Date.now() < end) await new Promise(r => setTimeout(r, 100));
	return !alive(pid);
}

function alive(pid: number): boolean {
	try {
		process.kill(pid, 0);
		return true;
	} catch {
		return false;
	}
}

describe("the development loop (npm start, npm run dev, npm run repl -- --connect)", () => {
	let copy: string;
	let dataDir: string;
	let nats: NatsServer;
	let port: number;
	const runs: Run[] = [];

	/** The environment of a developer's shell: none of the shop's settings (they are in .env). */
	const shellEnv = (): NodeJS.ProcessEnv => {
		const env: NodeJS.ProcessEnv = {
			...process.env,
			PATH: `${path.join(ROOT, "node_modules", ".bin")}:${process.env.PATH ?? ""}`,
			FORCE_COLOR: "0",
			NO_COLOR: "1"
		};
		for (const k of [
			"DATABASE_URL",
			"PORT",
			"DATA_DIR",
			"EMBEDDED_POSTGRES_PORT",
			"TRANSPORTER",
			"METRICS_PORT",
			"HEALTH_PORT",
			"LOGLEVEL",
			"NODE_ID"
		])
			delete env[k];
		return env;
	};

	const npm = (args: string[], env: NodeJS.ProcessEnv = shellEnv()): Run => {
		const child = spawn("npm", args, {
			cwd: copy,
			env,
			stdio: ["pipe", "pipe", "pipe"],
			detached: true
		});
		let out = "";
		// eslint-disable-next-line no-control-regex
		const plain = (d: Buffer): string => d.toString().replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
		child.stdout!.on("data", d => (out += plain(d)));
		child.stderr!.on("data", d => (out += plain(d)));
		const exited = (): Promise<number | null> =>
			new Promise(resolve => {
				if (child.exitCode !== null || child.signalCode !== null)
					return resolve(child.exitCode);
				child.once("exit", code => resolve(code));
			});
		const run: Run = {
			child,
			output: () => out,
			async waitFor(re, from = 0, ms = 240_000) {
				const end = Date.now() + ms;
				for (;;) {
					const m = re.exec(out.slice(from));
					if (m) return m[0];
					if (Date.now() > end)
						throw new Error(`timed out waiting for ${re} in:\n${out.slice(-4000)}`);
					if (child.exitCode !== null || child.signalCode !== null)
						throw new Error(
							`npm ${args.join(" ")} exited while waiting for ${re}:\n${out}`
						);
					await new Promise(r => setTimeout(r, 50));
				}
			},
			write: line => child.stdin!.write(line + "\n"),
			exited,
			async interrupt() {
				try {
					process.kill(-child.pid!, "SIGINT");
				} catch {
					// gone
				}
				await exited();
				return child.exitCode ?? child.signalCode;
			}
		};
		runs.push(run);
		return run;
	};

	const postmasterPid = (): number =>
		Number(
			fs.readFileSync(path.join(dataDir, "postgres", "postmaster.pid"), "utf8").split("\n")[0]
		);

	beforeAll(async () => {
		copy = fs.mkdtempSync(path.join(os.tmpdir(), "shop-dev-loop-"));
		fs.cpSync(ROOT, copy, {
			recursive: true,
			filter: src => !NOT_COPIED.has(path.basename(src)) || path.dirname(src) !== ROOT
		});
		fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(copy, "node_modules"));
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-dev-loop-data-"));
		fs.chmodSync(dataDir, 0o755);
		nats = await startNats();
		port = await freePort();
		fs.writeFileSync(
			path.join(copy, ".env"),
			[
				"# read by npm start, npm run dev, npm run repl and npm run cluster",
				`PORT=${port}`,
				`DATA_DIR=${dataDir}`,
				`EMBEDDED_POSTGRES_PORT=${await freePort()}`,
				"METRICS_PORT=0",
				"HEALTH_PORT=0",
				"LOGLEVEL=warn",
				""
			].join("\n")
		);
	});

	afterAll(async () => {
		for (const run of runs)
			if (run.child.exitCode === null && run.child.signalCode === null) {
				try {
					process.kill(-run.child.pid!, "SIGTERM");
				} catch {
					// gone
				}
				await run.exited();
			}
		await nats?.stop();
		if (copy) fs.rmSync(copy, { recursive: true, force: true });
		if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
	});

	it("npm start builds on the first start only, and reads .env", async () => {
		const first = npm(["start"]);
		await first.waitFor(/\[shop\] Ready in/);
		expect(first.output()).toMatch(/\[build\] server: no stamp: tsc -p \./);
		expect(first.output()).toMatch(/\[build\] web: no stamp: vite build/);
		// PORT and DATA_DIR came from .env.
		expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
		expect(fs.existsSync(path.join(dataDir, "postgres", "PG_VERSION"))).toBe(true);
		const postmaster = postmasterPid();
		expect([0, "SIGINT"]).toContain(await first.interrupt());
		expect(first.output()).toMatch(/SIGINT: stopping/);
		expect(await gone(postmaster)).toBe(true);

		// The environment wins over .env: the second start on another port.
		const otherPort = await freePort();
		const t0 = Date.now();
		const second = npm(["start"], { ...shellEnv(), PORT: String(otherPort) });
		await second.waitFor(/\[shop\] Ready in/);
		const readyMs = Date.now() - t0;
		expect(second.output()).toMatch(/\[build\] server: up to date/);
		expect(second.output()).toMatch(/\[build\] web: up to date/);
		expect(second.output()).not.toMatch(/tsc -p|vite build/);
		expect((await fetch(`http://127.0.0.1:${otherPort}/api/products?pageSize=1`)).status).toBe(
			200
		);
		console.log(
			`npm start on an unchanged checkout: ready ${readyMs} ms after spawn (load average ${os.loadavg()[0]!.toFixed(1)})`
		);
		expect([0, "SIGINT"]).toContain(await second.interrupt());
	});

	it("npm run dev: REPL, Vite proxy, a REPL joining over NATS, restart on save with Postgres kept, quit", async () => {
		fs.appendFileSync(path.join(copy, ".env"), `TRANSPORTER=${nats.url}\n`);
		const webPort = await freePort();
		const dev = npm(["run", "dev", "--", "--web-port", String(webPort)]);
		await dev.waitFor(/\[shop\] Ready in/);
		const postmaster = postmasterPid();
		expect(alive(postmaster)).toBe(true);

		// The REPL on stdin.
		let from = dev.output().length;
		dev.write("call products.list --pageSize 1");
		await dev.waitFor(/totalPages: \d+/, from);

		// Vite's dev server: the page with its client, /api proxied to the shop.
		const webUrl = (await dev.waitFor(/Web app\s+http\S+/)).split(/\s+/)[2]!;
		const page = await fetch(webUrl);
		expect(page.status).toBe(200);
		expect(await page.text()).toMatch(/@vite\/client/);
		const proxied = await fetch(new URL("/api/products?pageSize=1", webUrl));
		expect(proxied.status).toBe(200);
		expect(((await proxied.json()) as { rows: unknown[] }).rows).toHaveLength(1);

		// Another terminal: a REPL node joining over the transporter named in .env.
		const repl = npm(["run", "repl", "--", "--connect"]);
		await repl.waitFor(/joined namespace "shop" over nats:\/\/\S+: 1 other node/);
		expect(repl.output()).toMatch(/\[build\] server: up to date/);
		const before = repl.output().length;
		repl.write("call products.list --pageSize 1");
		await repl.waitFor(/totalPages: \d+/, before);
		repl.write("quit");
		expect(await repl.exited()).toBe(0);

		// A saved change: the shop restarts with the new code; Postgres is the same process.
		const marker = `dev-loop-marker-${process.pid}`;
		const products = path.join(copy, "services", "products", "products.service.ts");
		const original = fs.readFileSync(products, "utf8");
		from = dev.output().length;
		fs.writeFileSync(products, `${original}\nconsole.log("${marker}");\n`);
		await dev.waitFor(/products\.service\.ts changed: restarting the shop/, from);
		await dev.waitFor(new RegExp(`${marker}[\\s\\S]*\\[shop\\] Ready in`), from);
		expect(postmasterPid()).toBe(postmaster);
		expect(alive(postmaster)).toBe(true);
		expect((await fetch(new URL("/api/products?pageSize=1", webUrl))).status).toBe(200);

		// A syntax error: the shop exits and the loop waits for the next save.
		from = dev.output().length;
		fs.writeFileSync(products, `${original}\nexport const broken = ;\n`);
		await dev.waitFor(/the shop exited \(status 1\): fix the error and save/, from);
		from = dev.output().length;
		fs.writeFileSync(products, original);
		await dev.waitFor(/\[shop\] Ready in/, from);
		from = dev.output().length;
		dev.write("call products.list --pageSize 1");
		await dev.waitFor(/totalPages: \d+/, from);

		// quit: the shop, Vite and Postgres stop; npm run dev exits 0.
		dev.write("quit");
		expect(await dev.exited()).toBe(0);
		expect(dev.output()).toMatch(/\[dev\] Stopped\./);
		expect(await gone(postmaster)).toBe(true);
		await expect(fetch(webUrl)).rejects.toThrow();
	});
});
