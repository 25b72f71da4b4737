/**
 * `npm run cluster`: a local multi-node shop, one `moleculer-runner` process per service over NATS.
 *
 * - Transporter: `TRANSPORTER` when set (its server must have JetStream enabled), else a
 *   `nats-server` from PATH started here on 127.0.0.1:4222 (or a free port when 4222 is taken),
 *   JetStream on, its store under `DATA_DIR/nats`. `--nats 3` starts a cluster of three instead
 *   (tools/nats-cluster.ts: routes between them, JetStream stores under `DATA_DIR/nats-cluster`,
 *   ports 4222-4224 / 6222-6224 / 8222-8224 when free); the nodes get the three URLs as
 *   `TRANSPORTER` and `JETSTREAM_REPLICAS=3` (unless set): docs/nats-cluster.md.
 * - Postgres: `DATABASE_URL` when set, else the embedded one under `DATA_DIR`, run as its own
 *   child process the way `npm run db` runs it (`dist/bin/db.js`), so that its exit hooks never
 *   race this supervisor's orderly shutdown.
 * - Cacher: Redis when `CACHER` is set (every node gets the environment), else in-memory per node.
 * - Gateway on `PORT` (3000); node `i` serves `/metrics` on `METRICS_PORT + i` (0: off) and its
 *   `/health` and `/ready` on `HEALTH_PORT + i`, moved past the metrics ports when the two
 *   ranges overlap (0: off; platform/node-health.ts).
 * - Two nodes each of orders, inventory, payments and notifications (tools/cluster-args.ts):
 *   `--replicas 1` runs one of each, `--replicas products=2,orders=3` sets single services.
 *
 * Prints every node's output prefixed with its nodeID, then `[cluster] Ready in ...`. Ctrl-C (or
 * SIGTERM) stops the nodes (gateway first), then the nats-server and Postgres started here.
 *
 * Crash-only (tools/cluster-recovery.ts): every process started here is written down in
 * `DATA_DIR/cluster-processes.json` and watched by a watchdog that ends them (same order) if this
 * supervisor dies without stopping them (SIGKILL); start-up first ends whatever a crashed
 * supervisor on the same DATA_DIR left running, and refuses while that supervisor still runs.
 */
import { spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import path from "node:path";
import { endPreviousRun, trackProcesses, type ProcessTracker } from "../tools/cluster-recovery";
import { config, ConfigError } from "../platform/config";
import { SHOP_SERVICES } from "../app/services";
import { projectRoot, startCluster, type Cluster } from "../tools/cluster";
import { ClusterUsageError, parseClusterArgs } from "../tools/cluster-args";
import { memberProcess, startNatsCluster, type NatsCluster } from "../tools/nats-cluster";
import {
	freePort,
	isPortFree,
	startNatsServer,
	waitForExit,
	type ServerProcess
} from "../tools/local-servers";
import { natsSecurity, redactUrl } from "../platform/nats-options";

interface DatabaseProcess {
	readonly url: string;
	readonly child: ChildProcess;
	stop(): Promise<void>;
}

/**
 * `npm run db` as a child process: the embedded Postgres under DATA_DIR (first start initialises
 * it); resolves with its DATABASE_URL once it prints it.
 */
function startDatabaseProcess(
	log: (m: string) => void,
	track: (child: ChildProcess, what: string) => void
): Promise<DatabaseProcess> {
	const child = spawn(process.execPath, [path.join(projectRoot(), "dist", "bin", "db.js")], {
		env: process.env,
		stdio: ["ignore", "pipe", "pipe"],
		detached: true
	});
	track(child, "npm run db");
	let out = "";
	return new Promise((resolve, reject) => {
		const onData = (d: Buffer): void => {
			out += d.toString();
			const lines = out.split("\n");
			out = lines.pop() ?? "";
			for (const line of lines) {
				const m = /^DATABASE_URL=(\S+)$/.exec(line);
				if (m) {
					log(`Postgres (npm run db) pid ${child.pid} on ${new URL(m[1]!).host}`);
					resolve({
						url: m[1]!,
						child,
						stop: async () => {
							if (child.exitCode === null && child.signalCode === null)
								child.kill("SIGINT");
							await waitForExit(child, 15_000);
						}
					});
				} else if (line.trim()) log(line.replace(/^\[db\] /, ""));
			}
		};
		child.stdout!.on("data", onData);
		child.stderr!.on("data", onData);
		child.once("exit", code => reject(new Error(`npm run db exited with ${code}: ${out}`)));
	});
}

/**
 * The health port of the first node: `HEALTH_PORT`, or, when the nodes' health ports would
 * collide with their metrics ports (the defaults 3031.. and 3030..), the first port after those.
 */
function healthPortBase(healthPort: number, metricsPort: number, nodes: number): number {
	if (healthPort === 0) return 0;
	const overlap =
		metricsPort > 0 && healthPort < metricsPort + nodes && metricsPort < healthPort + nodes;
	return overlap ? metricsPort + nodes : healthPort;
}

async function main(): Promise<void> {
	const t0 = Date.now();
	const log = (m: string): void => console.log(`[cluster] ${m}`);
	const { replicas, natsServers } = parseClusterArgs(process.argv.slice(2));
	const c = config();
	if (natsServers > 1 && c.transporter)
		throw new ClusterUsageError(
			`--nats ${natsServers} starts the NATS servers here: unset TRANSPORTER, or drop --nats to use the servers it names`
		);

	let nats: ServerProcess | null = null;
	let natsCluster: NatsCluster | null = null;
	let postgres: DatabaseProcess | null = null;
	let cluster: Cluster | null = null;
	let tracker: ProcessTracker | null = null;
	/** The servers started here are ended after the nodes (tier 3) if this process crashes. */
	const track = (child: ChildProcess, what: string): void => {
		const pid = child.pid;
		if (pid === undefined || !tracker) return;
		tracker.started(pid, what, 3);
		child.once("exit", () => tracker?.exited(pid, 3));
	};
	/** A signal during start-up is acted on when the current step ends (nothing half-started leaks). */
	let phase: "starting" | "running" | "stopping" = "starting";
	let stopRequested = false;
	const stopping = (): boolean => phase === "stopping";
	const stopAll = async (): Promise<void> => {
		phase = "stopping";
		if (cluster) await cluster.stop();
		if (nats) await nats.stop();
		if (natsCluster) await natsCluster.stop();
		if (postgres) await postgres.stop();
		tracker?.close();
	};
	const stopAndExit = (): void => {
		stopAll().then(
			() => {
				log("Stopped.");
				process.exit(0);
			},
			err => {
				console.error("[cluster] stopping failed:", err);
				process.exit(1);
			}
		);
	};
	const onSignal = (signal: string): void => {
		if (phase === "stopping") return log(`${signal}: already stopping, please wait...`);
		if (phase === "starting") {
			stopRequested = true;
			return log(`${signal}: stopping once the current start-up step ends...`);
		}
		log(`${signal}: stopping the nodes (gateway first, in-flight requests drain)...`);
		stopAndExit();
	};
	for (const s of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(s, () => onSignal(s));
	// Exiting without an orderly stop (a crash): the servers started here go too (the nodes are
	// killed by tools/cluster.ts); Postgres gets SIGINT so that it shuts down cleanly.
	process.on("exit", () => {
		if (nats?.child.exitCode === null) nats.child.kill("SIGKILL");
		for (const m of natsCluster?.members ?? []) memberProcess(m)?.child.kill("SIGKILL");
		if (postgres?.child.exitCode === null) postgres.child.kill("SIGINT");
	});
	/** Whether a signal came during the last start-up step (then everything is being stopped). */
	const interrupted = (): boolean => {
		if (stopRequested) stopAndExit();
		return stopRequested;
	};

	try {
		await endPreviousRun(c.dataDir, log);
		tracker = trackProcesses(c.dataDir);
		let transporter = c.transporter;
		/** Environment of every node besides the per-node one. */
		const env: Record<string, string> = {};
		if (!transporter && natsServers > 1) {
			natsCluster = await startNatsCluster({
				size: natsServers,
				storeDir: path.join(path.resolve(c.dataDir), "nats-cluster"),
				preferConventionalPorts: true
			});
			for (const m of natsCluster.members) {
				const p = memberProcess(m);
				if (p) track(p.child, `nats-server ${m.name}`);
				log(
					`nats-server ${m.name} pid ${m.pid} on ${m.url} (routes :${m.routePort}, monitoring ${m.monitorUrl})`
				);
			}
			transporter = natsCluster.url;
			// Streams and consumers with a replica on every server; a value set by the caller wins
			// (e.g. JETSTREAM_REPLICAS=1 to see what a server's loss costs without replicas).
			if (process.env.JETSTREAM_REPLICAS === undefined)
				env.JETSTREAM_REPLICAS = String(natsServers);
			log(
				`NATS cluster of ${natsServers}, JetStream meta leader elected; nodes get JETSTREAM_REPLICAS=${env.JETSTREAM_REPLICAS ?? process.env.JETSTREAM_REPLICAS}`
			);
		} else if (!transporter) {
			const port = (await isPortFree(4222)) ? 4222 : await freePort();
			// JetStream on (durable events, mixins/events.mixin.ts), its store kept under DATA_DIR.
			nats = await startNatsServer({
				port,
				jetStreamDir: path.join(path.resolve(c.dataDir), "nats")
			});
			transporter = nats.url;
			track(nats.child, "nats-server");
			log(`nats-server pid ${nats.pid} on ${transporter}`);
		}
		if (interrupted()) return;
		let databaseUrl = c.databaseUrl;
		if (!databaseUrl) {
			postgres = await startDatabaseProcess(log, track);
			databaseUrl = postgres.url;
		}
		if (interrupted()) return;

		const port = c.port > 0 ? c.port : await freePort();
		const nodeIDs = SHOP_SERVICES.flatMap(s =>
			Array.from({ length: replicas[s] ?? 1 }, (_, i) => `${s}-${i + 1}`)
		);
		const nodeEnv: Record<string, Record<string, string>> = {};
		const healthBase = healthPortBase(c.healthPort, c.metricsPort, nodeIDs.length);
		nodeIDs.forEach((id, i) => {
			nodeEnv[id] = {
				METRICS_PORT: String(c.metricsPort > 0 ? c.metricsPort + i : 0),
				HEALTH_PORT: String(healthBase > 0 ? healthBase + i : 0)
			};
		});
		// Without ADMIN_PASSWORD the administrator's password is generated here and handed to the
		// users nodes in their environment: no node logs it; it is printed once below, when this
		// start created the administrator with it.
		const generatedAdminPassword = c.adminPassword
			? null
			: crypto.randomBytes(12).toString("base64url");
		if (generatedAdminPassword)
			for (const id of nodeIDs)
				if (id.startsWith("users-")) nodeEnv[id]!.ADMIN_PASSWORD = generatedAdminPassword;
		const width = Math.max(...nodeIDs.map(id => id.length));
		log(`Starting ${nodeIDs.length} nodes: ${nodeIDs.join(", ")}`);
		cluster = await startCluster({
			transporter,
			natsSecurity: natsSecurity(c),
			databaseUrl,
			replicas,
			baseEnv: process.env,
			env,
			nodeEnv,
			port,
			tracker,
			onOutput: (nodeID, line) => console.log(`${nodeID.padEnd(width)} | ${line}`),
			onUnexpectedExit: (node, exit) =>
				log(
					`${node.nodeID} (pid ${node.pid}) exited on its own: ${exit.signal ?? `code ${exit.code}`}`
				)
		});
		if (interrupted()) return;
		phase = "running";

		log(
			`Ready in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${cluster.nodes.length} nodes over ${redactUrl(transporter)}`
		);
		for (const n of cluster.nodes) log(`node ${n.nodeID} pid ${n.pid}`);
		log(`API      ${cluster.url}/api/products`);
		log(`Docs     ${cluster.url}/api/docs  (OpenAPI 3.1: ${cluster.url}/api/openapi.json)`);
		log(`Health   ${cluster.url}/health  ${cluster.url}/ready`);
		if (c.metricsPort > 0)
			log(
				`Metrics  http://127.0.0.1:${c.metricsPort}/metrics .. :${c.metricsPort + nodeIDs.length - 1} (one port per node, in the order above)`
			);
		if (healthBase > 0)
			log(
				`Nodes    http://127.0.0.1:${healthBase}/ready .. :${healthBase + nodeIDs.length - 1} (each node's /health and /ready, same order)`
			);
		if (generatedAdminPassword) {
			// Created now with the generated password, or on an earlier start (then it is not ours
			// to show): a login tells which.
			const login = await fetch(`${cluster.url}/api/users/login`, {
				method: "POST",
				headers: { "Content-Type": "application/json" },
				body: JSON.stringify({ email: c.adminEmail, password: generatedAdminPassword })
			}).catch(() => null);
			if (login?.status === 200)
				log(
					`Admin    ${c.adminEmail} / ${generatedAdminPassword}  (generated on this first start and shown only now, never logged: note it, or set ADMIN_PASSWORD)`
				);
			else log(`Admin    ${c.adminEmail} (its password was set on its first start)`);
		}
		if (c.jwtSecretGenerated)
			log(`JWT_SECRET not set: the nodes share the development secret in ${c.dataDir}`);
		log(
			`A REPL node: TRANSPORTER=${redactUrl(transporter)} METRICS_PORT=0 HEALTH_PORT=0 npx moleculer-runner --repl --config dist/moleculer.config.js`
		);
		const also = [
			nats ? ", the nats-server" : "",
			natsCluster ? `, the ${natsCluster.size} nats-servers` : "",
			postgres ? ", Postgres" : ""
		].join("");
		log(`Ctrl-C stops every node${also}.`);
	} catch (err) {
		if (stopping()) return;
		await stopAll().catch(() => undefined);
		throw err;
	}
}

main().catch(err => {
	if (err instanceof ClusterUsageError || err instanceof ConfigError) {
		console.error(`[cluster] ${err.message}`);
		process.exit(2);
	}
	console.error("[cluster] failed to start:", err instanceof Error ? err.message : err);
	process.exit(1);
});
