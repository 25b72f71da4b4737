/**
 * The shop as separate `moleculer-runner` processes, one per service (tools/cluster.ts, what
 * `npm run cluster` runs), for multi-node suites: a real NATS (its own unless one is passed), the
 * jest run's Postgres (DATABASE_URL from global-setup, unless a suite passes its own) with a fresh
 * DATABASE_PREFIX, the gateway on a free port. Needs `npm run build` (npm test builds before jest).
 *
 * Every node's output is kept: `outputs()`, and `withOutputOnFailure` prints it when a test fails.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
	startCluster as startNodes,
	type Cluster,
	type ClusterNode,
	type ShopService
} from "../../tools/cluster";
import { startNats, type NatsServer } from "./nats";
import { freePort } from "./ports";

export type { ClusterNode, ShopService };

export const CLUSTER_ADMIN = { email: "admin@example.com", password: "cluster-admin-password" };
export const CLUSTER_JWT_SECRET = "cluster-secret-cluster-secret-cluster-0123";

export interface TestClusterOptions {
	/** Services to run, one node each (default: every service). */
	services?: ShopService[];
	/** More nodes for a service, e.g. `{ inventory: 2 }` (nodeIDs `inventory-1`, `inventory-2`). */
	replicas?: Partial<Record<ShopService, number>>;
	/** Environment of every node (e.g. `{ CACHER: redis.url, SAGA_DEADLINE_MS: "5000" }`). */
	env?: Record<string, string>;
	/** Environment per service (`{ orders: {...} }`) or per nodeID (`{ "inventory-2": {...} }`). */
	nodeEnv?: Record<string, Record<string, string>>;
	/** Use this NATS (e.g. to restart it in a test); default: one of the cluster's own. */
	nats?: NatsServer;
	/**
	 * Postgres server URL (no database name); default: the jest run's shared one (DATABASE_URL).
	 * A suite that stops or restarts Postgres must bring a private server.
	 */
	databaseUrl?: string;
}

export interface TestCluster {
	/** `http://127.0.0.1:<port>` of the gateway (`null` without an `api` node). */
	readonly url: string | null;
	readonly nodes: readonly ClusterNode[];
	node(nodeID: string): ClusterNode;
	/** The harness's own broker in the cluster (no services; its registry sees every node). */
	readonly broker: Cluster["broker"];
	readonly nats: NatsServer;
	/** The DATABASE_PREFIX of this cluster's databases. */
	readonly prefix: string;
	addNode(name: ShopService, env?: Record<string, string>): Promise<ClusterNode>;
	waitReady(timeoutMs?: number): Promise<void>;
	/** Every node's output, each under a heading. */
	outputs(): string;
	/** SIGTERM to every node (gateway first), waits for them; then its own NATS, if any. */
	stop(): Promise<void>;
}

export async function startCluster(opts: TestClusterOptions = {}): Promise<TestCluster> {
	const databaseUrl = opts.databaseUrl ?? process.env.DATABASE_URL;
	if (!databaseUrl) throw new Error("DATABASE_URL is unset: jest's global-setup starts Postgres");
	const ownNats = opts.nats ? null : await startNats();
	const nats = (opts.nats ?? ownNats)!;
	const prefix = `c${crypto.randomBytes(4).toString("hex")}_`;
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-cluster-"));
	const cleanUp = async (): Promise<void> => {
		if (ownNats) await ownNats.stop();
		fs.rmSync(dataDir, { recursive: true, force: true });
	};
	let cluster: Cluster;
	try {
		cluster = await startNodes({
			transporter: nats.url,
			databaseUrl,
			services: opts.services,
			replicas: opts.replicas,
			port: await freePort(),
			env: {
				DATABASE_PREFIX: prefix,
				DATA_DIR: dataDir,
				METRICS_PORT: "0",
				HEALTH_PORT: "0",
				LOGLEVEL: "info",
				JWT_SECRET: CLUSTER_JWT_SECRET,
				ADMIN_EMAIL: CLUSTER_ADMIN.email,
				ADMIN_PASSWORD: CLUSTER_ADMIN.password,
				...opts.env
			},
			nodeEnv: opts.nodeEnv,
			readyTimeoutMs: 60_000,
			stopTimeoutMs: 15_000
		});
	} catch (err) {
		await cleanUp();
		throw err;
	}
	return {
		url: cluster.url,
		get nodes() {
			return cluster.nodes;
		},
		node: id => cluster.node(id),
		broker: cluster.broker,
		nats,
		prefix,
		addNode: (name, env) => cluster.addNode(name, env),
		waitReady: ms => cluster.waitReady(ms),
		outputs: () => cluster.outputs(),
		async stop() {
			// A frozen node (freezeNode) would take SIGTERM only once continued.
			for (const n of cluster.nodes) if (n.running) thawNode(n);
			await cluster.stop();
			await cleanUp();
		}
	};
}

/**
 * Freezes a node's process with SIGSTOP: a hung process, which keeps its connections (NATS, its
 * Postgres sessions) and the calls it received, and answers nothing. `TestCluster.stop()` thaws
 * every node first; a test replaces a hung node with `node.kill("SIGKILL")` then `node.restart()`.
 */
export function freezeNode(node: ClusterNode): void {
	process.kill(node.pid, "SIGSTOP");
}

/** Continues a node frozen by `freezeNode` (SIGCONT); harmless on a running one. */
export function thawNode(node: ClusterNode): void {
	try {
		process.kill(node.pid, "SIGCONT");
	} catch {
		// Already gone.
	}
}

/** Runs `fn`; when it throws, prints every node's output (then rethrows). */
export async function withOutputOnFailure<T>(
	cluster: TestCluster | undefined,
	fn: () => Promise<T>
): Promise<T> {
	try {
		return await fn();
	} catch (err) {
		if (cluster)
			console.log(`Cluster output (databases ${cluster.prefix}*):\n${cluster.outputs()}`);
		throw err;
	}
}

/** Polls `fn` until `ok(value)` holds or `timeoutMs` passes; returns the last value. */
export async function until<T>(
	fn: () => Promise<T>,
	ok: (v: T) => boolean,
	timeoutMs = 20_000,
	everyMs = 100
): Promise<T> {
	const end = Date.now() + timeoutMs;
	let v = await fn();
	while (!ok(v) && Date.now() < end) {
		await new Promise(r => setTimeout(r, everyMs));
		v = await fn();
	}
	return v;
}
