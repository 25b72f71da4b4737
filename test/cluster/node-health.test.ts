/**
 * Every node's own `/health` and `/ready` (platform/node-health.ts, `HEALTH_PORT`), over HTTP, with
 * the shop as separate `moleculer-runner` nodes over NATS:
 *
 * - every node of a running cluster answers `/health` 200 and `/ready` 200, its checks naming the
 *   broker, the transporter and its service (database reachable and migrated);
 * - a payments node whose database URL points at a closed port cannot finish starting (its
 *   database never connects): it still answers `/health` 200, and `/ready` 503 saying why, the
 *   payments check carrying the database error, the broker still starting.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { SHOP_SERVICES } from "../../tools/cluster";
import { waitForExit } from "../../tools/local-servers";
import {
	CLUSTER_JWT_SECRET,
	startCluster,
	until,
	withOutputOnFailure,
	type TestCluster
} from "../support/cluster";
import { freePort } from "../support/ports";

const ROOT = path.resolve(__dirname, "..", "..");
const NODE_IDS = SHOP_SERVICES.map(s => `${s}-1`);

async function get(url: string): Promise<{ status: number; body: any }> {
	const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
	return { status: res.status, body: await res.json() };
}

describe("every node's health endpoint", () => {
	let cluster: TestCluster;
	const ports: Record<string, number> = {};

	beforeAll(async () => {
		const used = new Set<number>();
		for (const id of [...NODE_IDS, "payments-broken"]) {
			let p = await freePort();
			while (used.has(p)) p = await freePort();
			used.add(p);
			ports[id] = p;
		}
		cluster = await startCluster({
			nodeEnv: Object.fromEntries(
				NODE_IDS.map(id => [id, { HEALTH_PORT: String(ports[id]) }])
			)
		});
	}, 120_000);
	afterAll(async () => {
		await cluster?.stop();
	}, 60_000);

	it("answers /health and /ready 200 on every node, naming what it checked", () =>
		withOutputOnFailure(cluster, async () => {
			for (const id of NODE_IDS) {
				const service = id.replace(/-1$/, "");
				const base = `http://127.0.0.1:${ports[id]}`;
				const live = await get(`${base}/health`);
				expect(live.status).toBe(200);
				expect(live.body).toMatchObject({ status: "ok", nodeID: id });
				const ready = await get(`${base}/ready`);
				expect({ id, status: ready.status, body: ready.body }).toEqual({
					id,
					status: 200,
					body: {
						status: "ready",
						nodeID: id,
						checks: { broker: "ok", transporter: "ok", [service]: "ok" }
					}
				});
				const other = await fetch(`${base}/metrics`);
				expect(other.status).toBe(404);
			}
		}));

	it("answers /ready 503 with the database error on a node whose database is unreachable", async () => {
		const closedPort = await freePort();
		const child: ChildProcess = spawn(
			process.execPath,
			[
				path.join(ROOT, "node_modules", "moleculer", "bin", "moleculer-runner.js"),
				"--config",
				path.join(ROOT, "dist", "moleculer.config.js"),
				path.join(ROOT, "dist", "services", "payments", "payments.service.js")
			],
			{
				cwd: ROOT,
				env: {
					PATH: process.env.PATH,
					HOME: process.env.HOME,
					NODE_ID: "payments-broken",
					TRANSPORTER: cluster.nats.url,
					DATABASE_URL: process.env.DATABASE_URL!,
					PAYMENTS_DATABASE_URL: `postgres://shop:pw@127.0.0.1:${closedPort}/payments`,
					DATABASE_PREFIX: cluster.prefix,
					JWT_SECRET: CLUSTER_JWT_SECRET,
					METRICS_PORT: "0",
					HEALTH_PORT: String(ports["payments-broken"]),
					LOG_FORMAT: "json"
				},
				stdio: ["ignore", "pipe", "pipe"]
			}
		);
		let out = "";
		child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
		child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
		try {
			const base = `http://127.0.0.1:${ports["payments-broken"]}`;
			const ready = await until(
				() => get(`${base}/ready`).catch(() => ({ status: 0, body: null })),
				r =>
					r.status === 503 &&
					r.body?.checks?.transporter === "ok" &&
					/Database/.test(String(r.body?.checks?.payments)),
				20_000
			);
			expect(ready.status).toBe(503);
			expect(ready.body.status).toBe("unavailable");
			expect(ready.body.nodeID).toBe("payments-broken");
			expect(ready.body.checks.broker).toBe("starting");
			expect(ready.body.checks.transporter).toBe("ok");
			expect(ready.body.checks.payments).toMatch(
				/^SERVICE_UNAVAILABLE: Database unreachable \(.*ECONNREFUSED.*\)$/
			);
			// Alive all the same: the process answers.
			const live = await get(`${base}/health`);
			expect(live.status).toBe(200);
			expect(child.exitCode).toBeNull();
		} catch (err) {
			console.log(`payments-broken output:\n${out}`);
			throw err;
		} finally {
			child.kill("SIGKILL");
			await waitForExit(child, 5_000);
		}
	}, 60_000);
});
