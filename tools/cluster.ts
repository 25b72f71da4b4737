/**
 * The shop as separate nodes, the Moleculer way: one `moleculer-runner` child process per service
 * (`node node_modules/moleculer/bin/moleculer-runner.js --config dist/moleculer.config.js
 * dist/services/<name>/<name>.service.js`), every node on one transporter and one Postgres server.
 * `npm run cluster` (bin/cluster.ts) and the multi-node tests (test/support/cluster.ts) use it.
 *
 * Readiness is observed, not guessed from log lines: the supervisor joins the cluster with a
 * broker of its own (no services) and waits until every node is in its registry holding its
 * service; then, when the cluster has a gateway, until `GET /ready` answers 200 (the gateway calls
 * every service's `readiness` action). Stopping goes in waves: the gateway first (no new
 * requests), then orders (its sagas finish their steps while inventory and payments still
 * answer), then everything else; each node gets SIGTERM (graceful: in-flight requests drain) and
 * SIGKILL after a timeout.
 *
 * Nodes run in their own process group (`detached`), so a terminal's Ctrl-C reaches only the
 * supervisor, which then stops them in order; if the supervisor process exits anyway, live nodes
 * are killed on its way out.
 */
import { spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import type { ProcessTracker } from "./cluster-recovery";
import { waitForExit } from "./local-servers";
import { natsConnectionOptions, type NatsSecurity } from "../platform/nats-options";
import { SHOP_SERVICES, type ShopService } from "../app/services";

export { SHOP_SERVICES, type ShopService } from "../app/services";

/** The shop's Moleculer namespace (moleculer.config.ts): the supervisor's broker must share it. */
export const SHOP_NAMESPACE = "shop";

/** Stop order; services not listed stop in the last wave. */
const STOP_WAVES: readonly (readonly ShopService[])[] = [["api"], ["orders"]];

/** The stop wave of a service's nodes (its index in STOP_WAVES; the last wave after them). */
function stopWave(name: ShopService): number {
	const i = STOP_WAVES.findIndex(w => w.includes(name));
	return i >= 0 ? i : STOP_WAVES.length;
}

/** Environment variables of the supervisor that must not reach a node. */
const NOT_INHERITED = [
	// moleculer-runner would load these service files in addition to the node's own one.
	"SERVICES",
	"SERVICEDIR",
	// Set per node.
	"NODE_ID"
];

/** The project root: the nearest directory above this file holding package.json. */
export function projectRoot(from: string = __dirname): string {
	let dir = from;
	while (!fs.existsSync(path.join(dir, "package.json"))) {
		const up = path.dirname(dir);
		if (up === dir) throw new Error(`No package.json above ${from}`);
		dir = up;
	}
	return dir;
}

export interface NodeExit {
	readonly code: number | null;
	readonly signal: NodeJS.Signals | null;
}

/** One node: one service in one `moleculer-runner` process. */
export interface ClusterNode {
	/** The service it holds. */
	readonly name: ShopService;
	/** Its Moleculer nodeID, `<service>-<n>`. */
	readonly nodeID: string;
	/** The current process (a new one after `restart`). */
	readonly child: ChildProcess;
	readonly pid: number;
	/** Whether its process is running. */
	readonly running: boolean;
	/** How its last process ended; `null` while running. */
	readonly exit: NodeExit | null;
	/** Everything this node printed (stdout and stderr), across restarts. */
	output(): string;
	/** Sends `signal` (SIGTERM by default) and resolves when the process has exited. */
	kill(signal?: NodeJS.Signals): Promise<NodeExit>;
	/**
	 * Stops the process if it runs (SIGTERM), starts a new one with the same nodeID (and
	 * `extraEnv` on top of its environment), and resolves when the new instance is discoverable
	 * and, with a gateway, `/ready` answers 200.
	 */
	restart(extraEnv?: Record<string, string>): Promise<void>;
}

export interface ClusterOptions {
	/** Transporter URL every node uses, e.g. `nats://127.0.0.1:4222` (may carry credentials). */
	readonly transporter: string;
	/**
	 * `NATS_TOKEN` and `NATS_TLS_*` of the supervisor's own broker (platform/nats-options.ts); the
	 * nodes read theirs from their environment (`env`, `baseEnv`).
	 */
	readonly natsSecurity?: NatsSecurity;
	/** Postgres server URL (no database name) every node uses. */
	readonly databaseUrl: string;
	/** Services to run, one node each (default: all of SHOP_SERVICES). */
	readonly services?: readonly ShopService[];
	/** More than one node for a service, e.g. `{ inventory: 2 }`. */
	readonly replicas?: Partial<Record<ShopService, number>>;
	/** The environment nodes start from (default: PATH and HOME only). */
	readonly baseEnv?: Readonly<Record<string, string | undefined>>;
	/** Environment of every node, on top of `baseEnv`. */
	readonly env?: Readonly<Record<string, string>>;
	/** Environment per service (`{ orders: {...} }`) or per nodeID (`{ "inventory-2": {...} }`). */
	readonly nodeEnv?: Readonly<Record<string, Readonly<Record<string, string>>>>;
	/** Gateway port (required when `api` runs). */
	readonly port?: number;
	/** Every line a node prints, as it comes. */
	readonly onOutput?: (nodeID: string, line: string) => void;
	/** A node's process ended without being asked to. */
	readonly onUnexpectedExit?: (node: ClusterNode, exit: NodeExit) => void;
	/** How long start-up (and a restart) may take, in ms (default 60 s). */
	readonly readyTimeoutMs?: number;
	/** How long a node may take to stop after SIGTERM before SIGKILL, in ms (default 15 s). */
	readonly stopTimeoutMs?: number;
	/**
	 * Told about each node process started and exited, with its stop wave as tier (0: gateway,
	 * 1: orders, 2: the rest), so that a crash of this process ends them too (tools/cluster-recovery.ts).
	 */
	readonly tracker?: Pick<ProcessTracker, "started" | "exited">;
}

export interface Cluster {
	/** `http://127.0.0.1:<port>` of the gateway; `null` without an `api` node. */
	readonly url: string | null;
	/** Every node, in start order (added nodes last). */
	readonly nodes: readonly ClusterNode[];
	/** The node with this nodeID. @throws Error when there is none */
	node(nodeID: string): ClusterNode;
	/** The supervisor's own broker in the cluster (no services): its registry sees every node. */
	readonly broker: ServiceBroker;
	/** Starts one more node for `name` (nodeID `<name>-<n+1>`); resolves when discoverable. */
	addNode(name: ShopService, env?: Record<string, string>): Promise<ClusterNode>;
	/** Resolves when the gateway's `/ready` answers 200. @throws Error after `timeoutMs` */
	waitReady(timeoutMs?: number): Promise<void>;
	/** Every node's output, each under a heading (for failure reports). */
	outputs(): string;
	/** Stops every node (in waves, SIGTERM then SIGKILL) and the supervisor's broker. */
	stop(): Promise<void>;
}

const delay = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

interface RegistryNode {
	available: boolean;
	instanceID: string | null;
	services?: { name: string }[];
}

class NodeProcess implements ClusterNode {
	child!: ChildProcess;
	exit: NodeExit | null = null;
	private out = "";
	private expectingExit = false;
	private exited!: Promise<NodeExit>;

	constructor(
		readonly name: ShopService,
		readonly nodeID: string,
		private env: Record<string, string>,
		private readonly owner: ClusterImpl
	) {}

	get pid(): number {
		return this.child.pid ?? -1;
	}

	get running(): boolean {
		return this.exit === null;
	}

	output(): string {
		return this.out;
	}

	private append(text: string): void {
		this.out += text;
		if (this.out.length > 4_000_000) this.out = this.out.slice(-2_000_000);
	}

	/** Starts the process (first start or restart). */
	spawn(): void {
		const root = this.owner.root;
		const child = spawn(
			process.execPath,
			[
				this.owner.runner,
				"--config",
				path.join(root, "dist", "moleculer.config.js"),
				path.join(root, "dist", "services", this.name, `${this.name}.service.js`)
			],
			{ cwd: root, env: this.env, stdio: ["ignore", "pipe", "pipe"], detached: true }
		);
		this.child = child;
		this.exit = null;
		this.expectingExit = false;
		const tier = stopWave(this.name);
		if (child.pid !== undefined) this.owner.tracker?.started(child.pid, this.nodeID, tier);
		for (const stream of [child.stdout!, child.stderr!]) {
			let partial = "";
			stream.on("data", (d: Buffer) => {
				const text = d.toString();
				this.append(text);
				const lines = (partial + text).split("\n");
				partial = lines.pop() ?? "";
				for (const line of lines) this.owner.onOutput?.(this.nodeID, line);
			});
			stream.on("end", () => {
				if (partial) this.owner.onOutput?.(this.nodeID, partial);
			});
		}
		this.exited = new Promise(resolve => {
			child.once("exit", (code, signal) => {
				if (child.pid !== undefined) this.owner.tracker?.exited(child.pid, tier);
				const exit = { code, signal };
				if (this.child === child) this.exit = exit;
				this.append(`\n[${this.nodeID} exited: ${signal ?? `code ${code}`}]\n`);
				if (!this.expectingExit && !this.owner.stopping)
					this.owner.onUnexpectedExit?.(this, exit);
				resolve(exit);
			});
			child.once("error", err => {
				// The process could not be spawned at all: no "exit" follows.
				if (child.pid !== undefined) return;
				this.append(`\n[${this.nodeID} failed to start: ${err.message}]\n`);
				const exit = { code: null, signal: null };
				if (this.child === child) this.exit = exit;
				resolve(exit);
			});
		});
	}

	async kill(signal: NodeJS.Signals = "SIGTERM"): Promise<NodeExit> {
		if (this.exit) return this.exit;
		this.expectingExit = true;
		this.child.kill(signal);
		return this.exited;
	}

	/** SIGTERM, SIGKILL after `timeoutMs`. */
	async terminate(timeoutMs: number): Promise<NodeExit> {
		if (this.exit) return this.exit;
		this.expectingExit = true;
		this.child.kill("SIGTERM");
		await waitForExit(this.child, timeoutMs);
		return this.exited;
	}

	async restart(extraEnv: Record<string, string> = {}): Promise<void> {
		await this.terminate(this.owner.stopTimeoutMs);
		const previous = this.owner.registryNode(this.nodeID)?.instanceID ?? null;
		this.env = { ...this.env, ...extraEnv };
		this.append(`\n[${this.nodeID} restarting]\n`);
		this.spawn();
		await this.owner.waitDiscoverable([this], previous);
		if (this.owner.url) await this.owner.waitReady();
	}
}

class ClusterImpl implements Cluster {
	readonly root = projectRoot();
	readonly runner = path.join(
		this.root,
		"node_modules",
		"moleculer",
		"bin",
		"moleculer-runner.js"
	);
	readonly nodes: NodeProcess[] = [];
	readonly url: string | null;
	readonly broker: ServiceBroker;
	readonly onOutput: ClusterOptions["onOutput"];
	readonly onUnexpectedExit: ClusterOptions["onUnexpectedExit"];
	readonly stopTimeoutMs: number;
	readonly readyTimeoutMs: number;
	readonly tracker: ClusterOptions["tracker"];
	stopping = false;
	private readonly killAll = (): void => {
		for (const n of this.nodes) if (n.running) n.child.kill("SIGKILL");
	};

	constructor(private readonly opts: ClusterOptions) {
		// Nodes run on this process's Node (moleculer 0.15 needs >= 22): npm scripts put the
		// project's pinned Node (the `node` devDependency) first on PATH.
		if (Number(process.versions.node.split(".")[0]) < 22)
			throw new Error(
				`Node ${process.versions.node} is too old for moleculer 0.15 (>= 22): run through npm (npm run cluster) so that the project's Node 24 is used`
			);
		for (const file of [this.runner, path.join(this.root, "dist", "moleculer.config.js")])
			if (!fs.existsSync(file))
				throw new Error(`${file} is missing: run "npm ci" and "npm run build" first`);
		const services = opts.services ?? SHOP_SERVICES;
		if (services.includes("api") && opts.port === undefined)
			throw new Error("startCluster: `port` is required when the gateway (api) runs");
		this.url = services.includes("api") ? `http://127.0.0.1:${opts.port}` : null;
		this.onOutput = opts.onOutput;
		this.onUnexpectedExit = opts.onUnexpectedExit;
		this.tracker = opts.tracker;
		this.stopTimeoutMs = opts.stopTimeoutMs ?? 15_000;
		this.readyTimeoutMs = opts.readyTimeoutMs ?? 60_000;
		this.broker = new ServiceBroker({
			namespace: SHOP_NAMESPACE,
			nodeID: `cluster-supervisor-${process.pid}-${crypto.randomBytes(3).toString("hex")}`,
			transporter: {
				type: "NATS",
				options: {
					...natsConnectionOptions(opts.transporter, opts.natsSecurity),
					maxReconnectAttempts: -1,
					reconnectTimeWait: 500
				}
			},
			serializer: "JSON",
			logger: false,
			heartbeatInterval: 2,
			heartbeatTimeout: 8,
			skipProcessEventRegistration: true,
			metrics: { enabled: false },
			tracing: { enabled: false }
		});
		process.on("exit", this.killAll);
	}

	/** The environment of a new node. */
	nodeEnvironment(
		name: ShopService,
		nodeID: string,
		extra: Record<string, string> = {}
	): Record<string, string> {
		const env: Record<string, string> = {};
		const base = this.opts.baseEnv ?? { PATH: process.env.PATH, HOME: process.env.HOME };
		for (const [k, v] of Object.entries(base))
			if (v !== undefined && !NOT_INHERITED.includes(k)) env[k] = v;
		Object.assign(env, this.opts.env, {
			TRANSPORTER: this.opts.transporter,
			DATABASE_URL: this.opts.databaseUrl,
			NODE_ID: nodeID
		});
		if (name === "api") env.PORT = String(this.opts.port);
		Object.assign(env, this.opts.nodeEnv?.[name], this.opts.nodeEnv?.[nodeID], extra);
		return env;
	}

	newNode(name: ShopService, extra: Record<string, string> = {}): NodeProcess {
		const n = this.nodes.filter(x => x.name === name).length + 1;
		const nodeID = `${name}-${n}`;
		const node = new NodeProcess(name, nodeID, this.nodeEnvironment(name, nodeID, extra), this);
		this.nodes.push(node);
		node.spawn();
		return node;
	}

	registryNode(nodeID: string): RegistryNode | undefined {
		return (
			this.broker.registry as unknown as { nodes: { get(id: string): unknown } }
		).nodes.get(nodeID) as RegistryNode | undefined;
	}

	node(nodeID: string): ClusterNode {
		const node = this.nodes.find(n => n.nodeID === nodeID);
		if (!node) throw new Error(`No node "${nodeID}" (have ${this.nodes.map(n => n.nodeID)})`);
		return node;
	}

	/** Until every node is in the supervisor's registry (a new instance) holding its service. */
	async waitDiscoverable(
		nodes: NodeProcess[],
		previousInstance: string | null = null
	): Promise<void> {
		const end = Date.now() + this.readyTimeoutMs;
		for (;;) {
			const dead = nodes.find(n => !n.running);
			if (dead)
				throw new Error(
					`${dead.nodeID} exited (${dead.exit?.signal ?? `code ${dead.exit?.code}`}) while starting:\n${tail(dead.output())}`
				);
			const waiting = nodes.filter(n => {
				const r = this.registryNode(n.nodeID);
				return !(
					r?.available &&
					r.instanceID !== previousInstance &&
					r.services?.some(s => s.name === n.name)
				);
			});
			if (waiting.length === 0) return;
			if (Date.now() > end)
				throw new Error(
					`Not discoverable after ${this.readyTimeoutMs} ms: ${waiting.map(n => n.nodeID).join(", ")}\n` +
						waiting.map(n => `--- ${n.nodeID}\n${tail(n.output())}`).join("\n")
				);
			await delay(50);
		}
	}

	async waitReady(timeoutMs = this.readyTimeoutMs): Promise<void> {
		if (!this.url) return;
		const end = Date.now() + timeoutMs;
		let last = "";
		for (;;) {
			try {
				const res = await fetch(`${this.url}/ready`, {
					signal: AbortSignal.timeout(5_000)
				});
				last = `${res.status} ${await res.text()}`;
				if (res.status === 200) return;
			} catch (err) {
				last = String(err);
			}
			const api = this.nodes.find(n => n.name === "api" && !n.running);
			if (api) throw new Error(`The gateway ${api.nodeID} exited:\n${tail(api.output())}`);
			if (Date.now() > end)
				throw new Error(`${this.url}/ready did not answer 200 in ${timeoutMs} ms: ${last}`);
			await delay(100);
		}
	}

	async start(): Promise<void> {
		await this.broker.start();
		const started: NodeProcess[] = [];
		for (const name of this.opts.services ?? SHOP_SERVICES)
			for (let i = 0; i < (this.opts.replicas?.[name] ?? 1); i++)
				started.push(this.newNode(name));
		await this.waitDiscoverable(started);
		await this.waitReady();
	}

	async addNode(name: ShopService, env: Record<string, string> = {}): Promise<ClusterNode> {
		const node = this.newNode(name, env);
		await this.waitDiscoverable([node]);
		return node;
	}

	outputs(): string {
		return this.nodes.map(n => `===== ${n.nodeID} (pid ${n.pid})\n${n.output()}`).join("\n");
	}

	async stop(): Promise<void> {
		if (this.stopping) return;
		this.stopping = true;
		const waves: NodeProcess[][] = STOP_WAVES.map(w =>
			this.nodes.filter(n => w.includes(n.name))
		);
		waves.push(this.nodes.filter(n => !STOP_WAVES.some(w => w.includes(n.name))));
		for (const wave of waves) await Promise.all(wave.map(n => n.terminate(this.stopTimeoutMs)));
		await this.broker.stop().catch(() => undefined);
		process.removeListener("exit", this.killAll);
	}
}

/** The last `lines` lines of a text. */
function tail(text: string, lines = 60): string {
	return text.split("\n").slice(-lines).join("\n");
}

/**
 * Starts the shop as separate nodes and resolves when every node is discoverable and the gateway
 * (if any) is ready. On failure everything started is stopped and the error carries the nodes'
 * last output lines.
 */
export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
	const cluster = new ClusterImpl(opts);
	try {
		await cluster.start();
	} catch (err) {
		await cluster.stop();
		throw err;
	}
	return cluster;
}
