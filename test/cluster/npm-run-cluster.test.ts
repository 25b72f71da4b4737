/**
 * `npm run cluster` as a user runs it (its compiled entry, `node dist/bin/cluster.js`; npm test has
 * built it): its own nats-server, one `moleculer-runner` process per service, the jest run's
 * Postgres through DATABASE_URL. The README's curl walkthrough then passes against it, and Ctrl-C
 * (SIGINT) stops every node and the nats-server, exiting 0.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { walkthroughBlock } from "../support/readme";
import { freePort } from "../support/ports";

const ROOT = path.join(__dirname, "..", "..");

function alive(pid: number): boolean {
	try {
		process.kill(pid, 0);
		return true;
	} catch {
		return false;
	}
}

describe("npm run cluster", () => {
	let child: ChildProcess;
	let out = "";
	let port: number;
	let dataDir: string;
	const exited = (): Promise<number | null> =>
		new Promise(resolve => {
			if (child.exitCode !== null || child.signalCode !== null)
				return resolve(child.exitCode);
			child.once("exit", code => resolve(code));
		});

	beforeAll(async () => {
		port = await freePort();
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-npm-cluster-"));
		const env: Record<string, string> = {
			PATH: `${path.join(ROOT, "node_modules", ".bin")}${path.delimiter}${process.env.PATH}`,
			HOME: process.env.HOME ?? os.tmpdir(),
			DATABASE_URL: process.env.DATABASE_URL!,
			DATABASE_PREFIX: `n${crypto.randomBytes(4).toString("hex")}_`,
			DATA_DIR: dataDir,
			PORT: String(port),
			METRICS_PORT: "0",
			JWT_SECRET: "npm-run-cluster-secret-npm-run-cluster-secret",
			// No ADMIN_PASSWORD: the supervisor generates one and prints it, no node logs it.
			ADMIN_EMAIL: "admin@example.com"
		};
		child = spawn(process.execPath, [path.join(ROOT, "dist", "bin", "cluster.js")], {
			cwd: ROOT,
			env,
			stdio: ["ignore", "pipe", "pipe"]
		});
		child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
		child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
		const end = Date.now() + 90_000;
		// The summary's last line: everything above it (the Admin line too) is printed.
		while (!/\[cluster\] Ctrl-C stops every node/.test(out)) {
			if (child.exitCode !== null) throw new Error(`npm run cluster exited:\n${out}`);
			if (Date.now() > end) throw new Error(`npm run cluster not ready in 90 s:\n${out}`);
			await new Promise(r => setTimeout(r, 100));
		}
	}, 120_000);

	afterAll(async () => {
		if (child && child.exitCode === null && child.signalCode === null) {
			child.kill("SIGINT");
			await exited();
		}
		fs.rmSync(dataDir, { recursive: true, force: true });
	}, 60_000);

	it("runs each service as its own moleculer-runner node over its own nats-server", () => {
		const nodes = [...out.matchAll(/\[cluster\] node (\S+) pid (\d+)/g)].map(m => m[1]);
		expect(nodes.sort()).toEqual(
			[
				"api-1",
				"inventory-1",
				"notifications-1",
				"orders-1",
				"payments-1",
				"products-1",
				"users-1"
			].sort()
		);
		expect(out).toMatch(/\[cluster\] nats-server pid \d+ on nats:\/\/127\.0\.0\.1:\d+/);
		expect(out).toMatch(/Ready in [\d.]+ s: 7 nodes over nats:/);
		console.log(out.split("\n").find(l => l.includes("Ready in")));
	});

	it("prints a generated administrator password once, on its own line, and no node logs it", async () => {
		const m = /\[cluster\] Admin {4}admin@example\.com \/ (\S+) {2}\(generated/.exec(out);
		expect(m).not.toBeNull();
		const password = m![1]!;
		// Node output is relayed as `<nodeID> | <line>`: the password is in none of those lines.
		expect(out.split(password)).toHaveLength(2);
		const login = await fetch(`http://127.0.0.1:${port}/api/users/login`, {
			method: "POST",
			headers: { "Content-Type": "application/json" },
			body: JSON.stringify({ email: "admin@example.com", password })
		});
		expect(login.status).toBe(200);
		expect(((await login.json()) as { user: { role: string } }).user.role).toBe("admin");
	});

	it("passes the README's curl walkthrough", () => {
		const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
		const script = walkthroughBlock(readme).replace(
			"http://localhost:3000/api",
			`http://127.0.0.1:${port}/api`
		);
		const run = spawnSync("bash", ["-c", script], {
			encoding: "utf8",
			timeout: 60_000,
			env: { ...process.env }
		});
		if (run.status !== 0) console.log(run.stdout, run.stderr, out.slice(-5000));
		expect(run.error).toBeUndefined();
		expect(run.status).toBe(0);
		expect(run.stdout).toMatch(/"status":"CONFIRMED"/);
		expect(run.stdout).toMatch(/"kind":"ORDER_CONFIRMED"/);
		const levels = [...run.stdout.matchAll(/"onHand":(\d+)/g)].map(m => Number(m[1]));
		expect(levels).toHaveLength(2);
		expect(levels[0]! - levels[1]!).toBe(2);
	}, 90_000);

	it("stops every node and its nats-server on Ctrl-C, exiting 0", async () => {
		const pids = [...out.matchAll(/\[cluster\] (?:node \S+|nats-server) pid (\d+)/g)].map(m =>
			Number(m[1])
		);
		expect(pids).toHaveLength(8);
		expect(pids.every(alive)).toBe(true);
		child.kill("SIGINT");
		expect(await exited()).toBe(0);
		expect(out).toMatch(/\[cluster\] Stopped\./);
		expect(pids.filter(alive)).toEqual([]);
	}, 60_000);
});
