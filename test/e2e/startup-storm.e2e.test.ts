/**
 * Start-up storm (issue 15, "ready before reachable"): clients that retry through a restart hammer
 * REST while the shop starts. Whatever they get is something a client can act on: connection
 * refused before the port opens, 503 with `Retry-After` while something is not there yet, then
 * the real answers. Never a 500, never another 5xx.
 *
 * - One process (`node dist/bin/start.js`, what `npm start` runs), restarted on its existing
 *   DATA_DIR with a customer's valid token (the realistic case: the user exists after the
 *   restart): `GET /api/products`, `GET /api/orders`, `POST /api/orders` with an
 *   `Idempotency-Key`, and `GET /ready`, from before the process is spawned until after it is
 *   ready. The port opens only when every service has started.
 * - Cluster form (`moleculer-runner ... dist/services/api/api.service.js` on NATS): the gateway comes
 *   up alone and answers 503 `SERVICE_NOT_AVAILABLE` with `Retry-After` for every route, until a
 *   products node joins: then `GET /api/products` answers 200.
 */
import { spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { api, startShopProcess, type ShopProcess } from "../support/shop-process";
import { startNats, type NatsServer } from "../support/nats";
import { freePort } from "../support/ports";

const ROOT = path.resolve(__dirname, "..", "..");
const JWT_SECRET = "storm-secret-storm-secret-storm-secret-01";

interface Tally {
	/** `"<route> <status> <type>"` → count */
	answers: Map<string, number>;
	/** Requests that found no listener (before the port opened). */
	refused: number;
	/** Answers that break the promise: a 500, a 5xx other than 503, a 503 without Retry-After. */
	bad: string[];
}

type Route = { name: string; method: string; url: string; body?: unknown; key?: boolean };

/** Runs `workers` clients in a loop over `routes` until `stop` resolves; tallies every answer. */
async function storm(
	base: string,
	token: string | undefined,
	routes: Route[],
	stop: Promise<void>,
	workers = 6
): Promise<Tally> {
	const tally: Tally = { answers: new Map(), refused: 0, bad: [] };
	let running = true;
	void stop.finally(() => (running = false));
	const client = async (w: number): Promise<void> => {
		for (let i = 0; running; i++) {
			const route = routes[(w + i) % routes.length]!;
			try {
				const r = await api(base, route.method, route.url, {
					token,
					body: route.body,
					headers: route.key ? { "Idempotency-Key": `storm-${w}-${i}` } : {}
				});
				const type = String(r.body?.type ?? r.body?.status ?? "");
				const key = `${route.name} ${r.status} ${type}`;
				tally.answers.set(key, (tally.answers.get(key) ?? 0) + 1);
				if (r.status >= 500 && (r.status !== 503 || r.headers.get("retry-after") === null))
					tally.bad.push(`${key} retry-after=${r.headers.get("retry-after")}`);
			} catch {
				tally.refused++;
				await new Promise(r => setTimeout(r, 25));
			}
		}
	};
	await Promise.all(Array.from({ length: workers }, (_, w) => client(w)));
	return tally;
}

const count = (t: Tally, prefix: string): number =>
	[...t.answers].filter(([k]) => k.startsWith(prefix)).reduce((n, [, v]) => n + v, 0);

/** SIGTERM, then SIGKILL after `ms`; resolves when the child has exited. */
function terminate(child: ChildProcess | undefined, ms = 20_000): Promise<void> {
	if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
	return new Promise(resolve => {
		const timer = setTimeout(() => child.kill("SIGKILL"), ms);
		child.once("exit", () => {
			clearTimeout(timer);
			resolve();
		});
		child.kill("SIGTERM");
	});
}

/** Spawns `node <entry> ...args` with `env`; `ready` resolves when `readyLine` is printed. */
function spawnNode(
	args: string[],
	env: Record<string, string>,
	readyLine: string
): { child: ChildProcess; ready: Promise<void>; output(): string } {
	const child = spawn(process.execPath, args, {
		cwd: ROOT,
		env,
		stdio: ["ignore", "pipe", "pipe"]
	});
	let out = "";
	const ready = new Promise<void>((resolve, reject) => {
		const onData = (d: Buffer): void => {
			out += d.toString();
			if (out.includes(readyLine)) resolve();
		};
		child.stdout!.on("data", onData);
		child.stderr!.on("data", onData);
		child.once("exit", code => reject(new Error(`exited with ${code}:\n${out}`)));
	});
	ready.catch(() => undefined);
	return { child, ready, output: () => out };
}

describe("start-up storm", () => {
	it("one process restarted on its data: no 500, no 5xx but 503 with Retry-After", async () => {
		let first: ShopProcess | undefined;
		let second: ReturnType<typeof spawnNode> | undefined;
		try {
			first = await startShopProcess({
				env: {
					NODE_ENV: "production",
					JWT_SECRET,
					ADMIN_PASSWORD: "storm-admin-password"
				}
			});
			const base = first.url;
			const reg = await api(base, "POST", "/api/users/register", {
				body: { email: "storm@example.com", password: "a long storm passphrase", name: "S" }
			});
			expect(reg.status).toBe(201);
			const token = reg.body.token as string;
			const productId = (await api(base, "GET", "/api/products")).body.rows[0].id as string;
			expect(await first.stop()).toBe(0);

			let ready!: () => void;
			const stormEnds = new Promise<void>(r => (ready = r));
			const tally = storm(
				base,
				token,
				[
					{ name: "GET /api/products", method: "GET", url: "/api/products" },
					{ name: "GET /api/orders", method: "GET", url: "/api/orders" },
					{
						name: "POST /api/orders",
						method: "POST",
						url: "/api/orders",
						body: { items: [{ productId, quantity: 1 }], paymentMethod: "tok_visa" },
						key: true
					},
					{ name: "GET /ready", method: "GET", url: "/ready" }
				],
				stormEnds
			);
			await new Promise(r => setTimeout(r, 300)); // the storm is on before the spawn
			const t0 = Date.now();
			second = spawnNode(
				[path.join(ROOT, "dist", "bin", "start.js")],
				first.env,
				"[shop] Ready in"
			);
			await second.ready;
			const readyMs = Date.now() - t0;
			await new Promise(r => setTimeout(r, 1_500));
			ready();
			const t = await tally;
			console.log(
				`start-up storm, one process (ready after ${readyMs} ms): refused ${t.refused}, ` +
					`answers ${JSON.stringify(Object.fromEntries([...t.answers].sort()))}`
			);
			expect(t.bad).toEqual([]);
			expect(t.refused).toBeGreaterThan(0); // the storm began before the port opened
			expect(count(t, "GET /api/products 200")).toBeGreaterThan(0);
			expect(count(t, "GET /api/orders 200")).toBeGreaterThan(0);
			expect(count(t, "POST /api/orders 202")).toBeGreaterThan(0);
		} finally {
			await terminate(second?.child);
			await first?.stop();
			if (first) fs.rmSync(first.dataDir, { recursive: true, force: true });
		}
	}, 120_000);

	it("cluster form: the gateway alone answers 503 with Retry-After until the service joins", async () => {
		const databaseUrl = process.env.DATABASE_URL;
		if (!databaseUrl) throw new Error("DATABASE_URL is unset: jest's global-setup starts it");
		let nats: NatsServer | undefined;
		const nodes: ReturnType<typeof spawnNode>[] = [];
		try {
			nats = await startNats();
			const port = await freePort();
			const base = `http://127.0.0.1:${port}`;
			const prefix = `s${crypto.randomBytes(4).toString("hex")}_`;
			const env = (nodeID: string): Record<string, string> => ({
				PATH: `${path.join(ROOT, "node_modules", ".bin")}:${process.env.PATH ?? ""}`,
				HOME: process.env.HOME ?? "/tmp",
				NODE_ENV: "production",
				NODE_ID: nodeID,
				TRANSPORTER: nats!.url,
				DATABASE_URL: databaseUrl,
				DATABASE_PREFIX: prefix,
				PORT: String(port),
				METRICS_PORT: "0",
				HEALTH_PORT: "0",
				JWT_SECRET,
				LOGLEVEL: "info"
			});
			const runner = (service: string, nodeID: string): ReturnType<typeof spawnNode> =>
				spawnNode(
					[
						path.join(ROOT, "node_modules", "moleculer", "bin", "moleculer-runner.js"),
						"--config",
						"dist/moleculer.config.js",
						`dist/services/${service}/${service}.service.js`
					],
					env(nodeID),
					"started successfully"
				);
			const gateway = runner("api", "storm-api");
			nodes.push(gateway);
			await gateway.ready;

			let joined!: () => void;
			const stormEnds = new Promise<void>(r => (joined = r));
			const tally = storm(
				base,
				"a.b.c",
				[
					{ name: "GET /api/products", method: "GET", url: "/api/products" },
					{ name: "GET /api/orders", method: "GET", url: "/api/orders" },
					{
						name: "POST /api/orders",
						method: "POST",
						url: "/api/orders",
						body: {},
						key: true
					},
					{ name: "GET /ready", method: "GET", url: "/ready" }
				],
				stormEnds,
				3
			);
			await new Promise(r => setTimeout(r, 1_000));
			const products = runner("products", "storm-products");
			nodes.push(products);
			await products.ready;
			// Discovery over NATS: the gateway hears of the products node within a second or two.
			const end = Date.now() + 15_000;
			let listed = await api(base, "GET", "/api/products");
			while (listed.status !== 200 && Date.now() < end) {
				await new Promise(r => setTimeout(r, 100));
				listed = await api(base, "GET", "/api/products");
			}
			joined();
			const t = await tally;
			console.log(
				`start-up storm, gateway alone: answers ${JSON.stringify(Object.fromEntries([...t.answers].sort()))}`
			);
			expect(listed.status).toBe(200);
			expect(t.bad).toEqual([]);
			expect(count(t, "GET /api/products 503 SERVICE_NOT_AVAILABLE")).toBeGreaterThan(0);
			expect(count(t, "GET /api/orders 503 SERVICE_NOT_AVAILABLE")).toBeGreaterThan(0);
			expect(count(t, "POST /api/orders 503 SERVICE_NOT_AVAILABLE")).toBeGreaterThan(0);
			expect(count(t, "GET /ready 503")).toBeGreaterThan(0);
			// Nothing but 503 (and products' 200 once it joined) while the others are away.
			const other = [...t.answers.keys()].filter(
				k => !/ 503 /.test(k) && !k.startsWith("GET /api/products 200")
			);
			expect(other).toEqual([]);
		} finally {
			for (const n of nodes.reverse()) await terminate(n.child);
			await nats?.stop();
		}
	}, 90_000);
});
