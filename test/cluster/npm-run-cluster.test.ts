/**
 * `npm run cluster -- --nats 3` as a user runs it (its compiled entry, `node dist/bin/cluster.js
 * --nats 3`; npm test has built it): its own cluster of three nats-servers (routes, JetStream, a
 * store each), one `moleculer-runner` process per node with two nodes each of orders, inventory,
 * payments and notifications (the default), the jest run's Postgres through DATABASE_URL. The
 * nodes get the three servers in TRANSPORTER and JETSTREAM_REPLICAS=3: the shop's streams have a
 * replica on each server (read from the servers' monitoring endpoints). The README's curl
 * walkthrough passes against it, and again after the server holding the most client connections
 * is SIGKILLed. Ctrl-C (SIGINT) stops every node and the nats-servers, exiting 0.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { walkthroughBlock } from "../support/readme";
import { freePort } from "../support/ports";
import { until } from "../support/cluster";

const ROOT = path.join(__dirname, "..", "..");

/** A nats-server the supervisor started, from its log line. */
interface NatsLine {
	name: string;
	pid: number;
	url: string;
	monitorUrl: string;
}

async function monitor<T>(monitorUrl: string, p: string): Promise<T> {
	const res = await fetch(`${monitorUrl}${p}`, { signal: AbortSignal.timeout(3_000) });
	return (await res.json()) as T;
}

/** The shop's streams as one server's `/jsz` reports them: name, replicas configured, messages. */
async function streamsOn(
	monitorUrl: string
): Promise<{ name: string; replicas: number; messages: number }[]> {
	const jsz = await monitor<{
		account_details?: {
			stream_detail?: {
				name: string;
				config?: { num_replicas: number };
				state: { messages: number };
			}[];
		}[];
	}>(monitorUrl, "/jsz?streams=true&config=true");
	return (jsz.account_details ?? [])
		.flatMap(a => a.stream_detail ?? [])
		.map(s => ({
			name: s.name,
			replicas: s.config?.num_replicas ?? 0,
			messages: s.state.messages
		}));
}

function alive(pid: number): boolean {
	try {
		process.kill(pid, 0);
		return true;
	} catch {
		return false;
	}
}

describe("npm run cluster -- --nats 3", () => {
	let child: ChildProcess;
	let out = "";
	let port: number;
	let dataDir: string;
	let nats: NatsLine[] = [];
	let killedNats: NatsLine | null = null;
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
		child = spawn(
			process.execPath,
			[path.join(ROOT, "dist", "bin", "cluster.js"), "--nats", "3"],
			{ cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] }
		);
		child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
		child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
		const end = Date.now() + 150_000;
		// The summary's last line: everything above it (the Admin line too) is printed.
		while (!/\[cluster\] Ctrl-C stops every node/.test(out)) {
			if (child.exitCode !== null) throw new Error(`npm run cluster exited:\n${out}`);
			if (Date.now() > end) throw new Error(`npm run cluster not ready in 150 s:\n${out}`);
			await new Promise(r => setTimeout(r, 100));
		}
		nats = [
			...out.matchAll(
				/\[cluster\] nats-server (\S+) pid (\d+) on (nats:\/\/127\.0\.0\.1:\d+) \(routes :\d+, monitoring (http:\/\/127\.0\.0\.1:\d+)\)/g
			)
		].map(m => ({ name: m[1]!, pid: Number(m[2]), url: m[3]!, monitorUrl: m[4]! }));
	}, 180_000);

	afterAll(async () => {
		if (child && child.exitCode === null && child.signalCode === null) {
			child.kill("SIGINT");
			await exited();
		}
		fs.rmSync(dataDir, { recursive: true, force: true });
	}, 60_000);

	it("runs two nodes of each stateful service, each its own moleculer-runner, over three clustered nats-servers", async () => {
		const nodes = [...out.matchAll(/\[cluster\] node (\S+) pid (\d+)/g)].map(m => m[1]);
		expect(nodes.sort()).toEqual(
			[
				"api-1",
				"inventory-1",
				"inventory-2",
				"notifications-1",
				"notifications-2",
				"orders-1",
				"orders-2",
				"payments-1",
				"payments-2",
				"products-1",
				"users-1"
			].sort()
		);
		// Three servers, each with its own JetStream store under DATA_DIR, routed to the two others.
		expect(nats.map(n => n.name)).toEqual(["shop-nats-1", "shop-nats-2", "shop-nats-3"]);
		for (const n of nats) {
			expect(fs.existsSync(path.join(dataDir, "nats-cluster", n.name, "jetstream"))).toBe(
				true
			);
			const routez = await monitor<{ num_routes: number }>(n.monitorUrl, "/routez");
			expect({ n: n.name, routes: routez.num_routes }).toEqual({ n: n.name, routes: 2 });
		}
		expect(out).toMatch(/nodes get JETSTREAM_REPLICAS=3/);
		// Every node lists the three servers.
		const ready = /Ready in [\d.]+ s: (\d+) nodes over (\S+)/.exec(out);
		expect(ready?.[1]).toBe("11");
		expect(ready![2]!.split(",").sort()).toEqual(nats.map(n => n.url).sort());
		// The nodes' connections are spread over the servers (each node picks one at random).
		const conns = await Promise.all(
			nats.map(n => monitor<{ num_connections: number }>(n.monitorUrl, "/connz"))
		);
		const total = conns.reduce((s, c) => s + c.num_connections, 0);
		expect(total).toBeGreaterThanOrEqual(11);
		console.log(
			`${out.split("\n").find(l => l.includes("Ready in"))}; client connections per server ${conns.map(c => c.num_connections).join("/")}`
		);
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

	/** Runs the README's walkthrough against the cluster; returns its output. */
	function walkthrough(): string {
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
		return run.stdout;
	}

	it("passes the README's curl walkthrough, its events in streams with a replica on each server", async () => {
		walkthrough();
		// SHOP_EVENTS (and SHOP_DLQ) configured with 3 replicas, held by every server, the
		// walkthrough's events in each copy.
		for (const n of nats) {
			const streams = await until(
				() => streamsOn(n.monitorUrl),
				s => (s.find(x => x.name === "SHOP_EVENTS")?.messages ?? 0) > 0,
				15_000,
				250
			);
			const events = streams.find(s => s.name === "SHOP_EVENTS");
			expect({ n: n.name, replicas: events?.replicas }).toEqual({ n: n.name, replicas: 3 });
			expect(events!.messages).toBeGreaterThan(0);
			expect(streams.find(s => s.name === "SHOP_DLQ")?.replicas).toBe(3);
		}
	}, 90_000);

	it("passes it again after the server with the most client connections is SIGKILLed", async () => {
		const conns = await Promise.all(
			nats.map(n => monitor<{ num_connections: number }>(n.monitorUrl, "/connz"))
		);
		const busiest = conns.indexOf(
			conns.reduce((a, b) => (b.num_connections > a.num_connections ? b : a))
		);
		killedNats = nats[busiest]!;
		process.kill(killedNats.pid, "SIGKILL");
		await until(
			async () => alive(killedNats!.pid),
			a => !a,
			5_000,
			50
		);
		const t0 = Date.now();
		walkthrough();
		console.log(
			`walkthrough with ${killedNats.name} (${conns[busiest]!.num_connections} of ${conns.map(c => c.num_connections).join("/")} connections) SIGKILLed: ${Date.now() - t0} ms`
		);
		// The two servers left hold the streams, with both walkthroughs' events.
		for (const n of nats.filter(x => x !== killedNats)) {
			const streams = await streamsOn(n.monitorUrl);
			expect(streams.find(s => s.name === "SHOP_EVENTS")?.replicas).toBe(3);
		}
	}, 120_000);

	it("stops every node and the nats-servers left on Ctrl-C, exiting 0", async () => {
		const pids = [...out.matchAll(/\[cluster\] (?:node \S+|nats-server \S+) pid (\d+)/g)].map(
			m => Number(m[1])
		);
		expect(pids).toHaveLength(14);
		const expectedAlive = pids.filter(p => p !== killedNats?.pid);
		expect(expectedAlive.every(alive)).toBe(true);
		child.kill("SIGINT");
		expect(await exited()).toBe(0);
		expect(out).toMatch(/\[cluster\] Stopped\./);
		expect(pids.filter(alive)).toEqual([]);
	}, 90_000);
});
