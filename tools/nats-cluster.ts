/**
 * A local NATS cluster for development and tests: `size` real `nats-server` processes on
 * 127.0.0.1, each with JetStream on its own store directory, joined by cluster routes (a full
 * mesh: every server is given every member's route URL). What `npm run cluster -- --nats 3`
 * starts; the shop's nodes get the client URLs as `TRANSPORTER` (comma-separated) and
 * `JETSTREAM_REPLICAS` (docs/nats-cluster.md).
 *
 * Ready means more than "answers INFO": every member's monitoring endpoint (`/jsz`) reports a
 * JetStream meta leader and a meta group of `size` peers, so a stream with `size` replicas can
 * be created the moment the shop's nodes connect. A member can be stopped or SIGKILLed and
 * started again on the same ports, name and store (it rejoins and catches up from its peers).
 *
 * The layout follows the NATS documentation's cluster example (docs.nats.io, "JetStream
 * Clustering": `server_name`, `cluster { name, listen, routes }`, one `store_dir` per server);
 * deploy/nats/nats.conf and deploy/k8s/nats.yaml are the same cluster for compose and Kubernetes.
 */
import fs from "node:fs";
import path from "node:path";
import {
	freePort,
	isPortFree,
	startNatsServer,
	type NatsServerOptions,
	type ServerProcess
} from "./local-servers";

/** The conventional ports of a member: clients 4222, routes 6222, monitoring 8222 (+ index). */
export const NATS_PORT_BASES = { client: 4222, route: 6222, monitor: 8222 } as const;

/** Cluster sizes a JetStream quorum makes sense for (a majority survives the loss of one or two). */
export const NATS_CLUSTER_SIZES = [1, 3, 5] as const;

export interface NatsClusterOptions {
	/** Number of servers: 3 keeps a quorum (2 of 3) when one goes; 1 is a plain server. */
	readonly size: number;
	/** Root of the stores: member `<name>` keeps JetStream under `<storeDir>/<name>`. */
	readonly storeDir: string;
	/** Cluster name (`--cluster_name`, default `shop`); members are named `<name>-nats-<i>`. */
	readonly name?: string;
	/**
	 * Take the conventional ports (4222.., 6222.., 8222..) when all of them are free, else free
	 * ports the OS picks (default: free ports, what tests want).
	 */
	readonly preferConventionalPorts?: boolean;
	/** Clients must authenticate (every member alike): see `NatsServerOptions.auth`. */
	readonly auth?: NatsServerOptions["auth"];
	/** Clients must use TLS (every member alike): see `NatsServerOptions.tls`. */
	readonly tls?: NatsServerOptions["tls"];
	/** How long the cluster may take to elect its JetStream meta leader, in ms (default 30 s). */
	readonly timeoutMs?: number;
}

/** One member of the cluster. */
export interface NatsClusterMember {
	/** Its server name (`shop-nats-1`...), stable across restarts. */
	readonly name: string;
	/** `nats://127.0.0.1:<clientPort>`. */
	readonly url: string;
	readonly clientPort: number;
	readonly routePort: number;
	/** `http://127.0.0.1:<port>`: `/healthz`, `/varz`, `/connz`, `/routez`, `/jsz`. */
	readonly monitorUrl: string;
	/** The current process id (a new one after `start()`); -1 while stopped. */
	readonly pid: number;
	/** Whether its process runs. */
	readonly running: boolean;
	/** Everything its processes printed. */
	output(): string;
	/** Sends `signal` (SIGTERM: a clean shutdown; SIGKILL: a crash) and waits for the exit. */
	kill(signal?: NodeJS.Signals): Promise<void>;
	/** Starts it again (same ports, name and store) once stopped; resolves when it answers INFO. */
	start(): Promise<void>;
}

/** A running local NATS cluster. */
export interface NatsCluster {
	readonly members: readonly NatsClusterMember[];
	/** Every member's client URL, comma-separated: what `TRANSPORTER` takes. */
	readonly url: string;
	/** `JETSTREAM_REPLICAS` the cluster can hold: its size. */
	readonly size: number;
	/** Resolves once every running member reports a meta leader and `size` peers. */
	waitJetStreamReady(timeoutMs?: number): Promise<void>;
	/** Stops every member (SIGTERM, SIGKILL after 5 s). Leaves the stores. */
	stop(): Promise<void>;
}

/** What a member's `/jsz` says of the JetStream meta group. */
interface MetaCluster {
	leader?: string;
	cluster_size?: number;
}

const delay = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

/** `n` ports from `base` when all are free (and `prefer`), else `n` free ports. */
async function portsFrom(base: number, n: number, prefer: boolean): Promise<number[]> {
	const conventional = Array.from({ length: n }, (_, i) => base + i);
	if (prefer && (await Promise.all(conventional.map(isPortFree))).every(Boolean))
		return conventional;
	const ports: number[] = [];
	while (ports.length < n) {
		const p = await freePort();
		if (!ports.includes(p)) ports.push(p);
	}
	return ports;
}

class Member implements NatsClusterMember {
	private server: ServerProcess | null = null;
	private past = "";

	constructor(
		readonly name: string,
		readonly clientPort: number,
		readonly routePort: number,
		private readonly monitorPort: number,
		private readonly options: () => NatsServerOptions
	) {}

	get url(): string {
		return `nats://127.0.0.1:${this.clientPort}`;
	}

	get monitorUrl(): string {
		return `http://127.0.0.1:${this.monitorPort}`;
	}

	get running(): boolean {
		const c = this.server?.child;
		return !!c && c.exitCode === null && c.signalCode === null;
	}

	get pid(): number {
		return this.running ? this.server!.pid : -1;
	}

	/** The current process (for a supervisor's bookkeeping); null while stopped. */
	get process(): ServerProcess | null {
		return this.running ? this.server : null;
	}

	output(): string {
		return this.past + (this.server?.output() ?? "");
	}

	async start(): Promise<void> {
		if (this.running) return;
		this.past += this.server?.output() ?? "";
		this.server = await startNatsServer(this.options());
	}

	async kill(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
		const server = this.server;
		if (!server || !this.running) return;
		if (signal === "SIGTERM") return server.stop(5_000);
		const exited = new Promise<void>(r => server.child.once("exit", () => r()));
		server.child.kill(signal);
		await exited;
	}
}

/**
 * The JetStream meta group as one member sees it; null when it does not answer or has JetStream
 * off. A lone server has no meta group: it leads itself.
 */
async function metaCluster(member: NatsClusterMember): Promise<MetaCluster | null> {
	try {
		const res = await fetch(`${member.monitorUrl}/jsz`, { signal: AbortSignal.timeout(2_000) });
		if (!res.ok) return null;
		const jsz = (await res.json()) as { config?: object; meta_cluster?: MetaCluster };
		if (!jsz.config) return null;
		return jsz.meta_cluster ?? { leader: member.name, cluster_size: 1 };
	} catch {
		return null;
	}
}

/**
 * Starts `size` clustered nats-servers with JetStream and resolves once their JetStream meta
 * group has a leader (see the module comment). Size 1 is a single server with a name and no routes.
 * @throws Error when nats-server is missing, a member exits, or no leader is elected in time
 *   (every member that was started is stopped first)
 */
export async function startNatsCluster(opts: NatsClusterOptions): Promise<NatsCluster> {
	const size = opts.size;
	if (!(NATS_CLUSTER_SIZES as readonly number[]).includes(size))
		throw new Error(
			`A NATS cluster of ${size} servers: use ${NATS_CLUSTER_SIZES.join(", ")} (a quorum is a majority)`
		);
	const name = opts.name ?? "shop";
	const prefer = opts.preferConventionalPorts ?? false;
	const clientPorts = await portsFrom(NATS_PORT_BASES.client, size, prefer);
	const routePorts = await portsFrom(NATS_PORT_BASES.route, size, prefer);
	const monitorPorts = await portsFrom(NATS_PORT_BASES.monitor, size, prefer);
	const routes = routePorts.map(p => `nats://127.0.0.1:${p}`);
	const members = Array.from({ length: size }, (_, i) => {
		const serverName = `${name}-nats-${i + 1}`;
		const storeDir = path.join(opts.storeDir, serverName);
		fs.mkdirSync(storeDir, { recursive: true });
		return new Member(serverName, clientPorts[i]!, routePorts[i]!, monitorPorts[i]!, () => ({
			port: clientPorts[i]!,
			monitorPort: monitorPorts[i]!,
			jetStreamDir: storeDir,
			serverName,
			cluster: size > 1 ? { name, port: routePorts[i]!, routes } : undefined,
			auth: opts.auth,
			tls: opts.tls
		}));
	});
	const cluster: NatsCluster = {
		members,
		url: members.map(m => m.url).join(","),
		size,
		async waitJetStreamReady(timeoutMs = opts.timeoutMs ?? 30_000) {
			const end = Date.now() + timeoutMs;
			let last: (MetaCluster | null)[] = [];
			for (;;) {
				last = await Promise.all(members.filter(m => m.running).map(metaCluster));
				if (last.length > 0 && last.every(m => !!m?.leader && m.cluster_size === size))
					return;
				if (Date.now() > end)
					throw new Error(
						`NATS cluster: no JetStream meta leader of ${size} peers in ${timeoutMs} ms (${JSON.stringify(last)})\n` +
							members.map(m => `--- ${m.name}\n${m.output().slice(-3000)}`).join("\n")
					);
				await delay(100);
			}
		},
		async stop() {
			await Promise.all(members.map(m => m.kill("SIGTERM")));
		}
	};
	try {
		await Promise.all(members.map(m => m.start()));
		await cluster.waitJetStreamReady();
	} catch (err) {
		await cluster.stop();
		throw err;
	}
	return cluster;
}

/** The process of a member while it runs (for a supervisor that records its children). */
export function memberProcess(member: NatsClusterMember): ServerProcess | null {
	return member instanceof Member ? member.process : null;
}
