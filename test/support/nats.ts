/**
 * A real `nats-server` for a suite: JetStream on (a temporary store), client and monitoring ports
 * free on 127.0.0.1. Stop it in afterAll. A missing binary throws, so a suite that needs NATS
 * fails rather than skips (CI installs nats-server in .ci/run).
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import {
	findExecutable,
	freePort,
	startNatsServer,
	type NatsServerOptions,
	type ServerProcess,
	waitForExit
} from "../../tools/local-servers";

export interface NatsServer {
	/**
	 * `nats://127.0.0.1:<port>`, with the token (`nats://<token>@...`) when started with one:
	 * what a client uses. Stays the same across `restart()`.
	 */
	readonly url: string;
	/** `http://127.0.0.1:<port>` of the monitoring endpoint (`/varz`, `/connz`). */
	readonly monitorUrl: string;
	/** The current server process id. */
	readonly pid: number;
	output(): string;
	/** Stops the server and removes its store. */
	stop(): Promise<void>;
	/** Stops the server and starts a new one on the same ports and store (clients reconnect). */
	restart(): Promise<void>;
}

/**
 * @param opts.token - clients must present this token (`nats-server --auth`)
 * @param opts.tls - clients must use TLS with this server certificate and key
 */
export async function startNats(
	opts: { token?: string; tls?: NatsServerOptions["tls"] } = {}
): Promise<NatsServer> {
	const port = await freePort();
	const monitorPort = await freePort();
	const storeDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-nats-"));
	const start = (): Promise<ServerProcess> =>
		startNatsServer({
			port,
			monitorPort,
			jetStreamDir: storeDir,
			auth: opts.token ? { token: opts.token } : undefined,
			tls: opts.tls
		});
	let server: ServerProcess;
	try {
		server = await start();
	} catch (err) {
		fs.rmSync(storeDir, { recursive: true, force: true });
		throw err;
	}
	return {
		url: opts.token
			? server.url.replace("nats://", `nats://${encodeURIComponent(opts.token)}@`)
			: server.url,
		monitorUrl: `http://127.0.0.1:${monitorPort}`,
		get pid() {
			return server.pid;
		},
		output: () => server.output(),
		async stop() {
			await server.stop();
			fs.rmSync(storeDir, { recursive: true, force: true });
		},
		async restart() {
			await server.stop();
			server = await start();
		}
	};
}

/** One server of a `startNatsCluster` cluster. */
export interface NatsClusterServer {
	/** `n1`, `n2`, `n3`: its `--name` (what `/jsz` and stream infos call it). */
	readonly name: string;
	/** `nats://127.0.0.1:<port>`: its client URL (the same across `restart()`). */
	readonly url: string;
	/** `http://127.0.0.1:<port>` of its monitoring endpoint (`/varz`, `/connz`, `/jsz`). */
	readonly monitorUrl: string;
	/** The current process id (-1 while stopped). */
	readonly pid: number;
	/** Whether its process runs. */
	readonly running: boolean;
	output(): string;
	/** SIGKILL (no goodbye, as a dead host) and waits for the exit; the store stays. */
	kill(): Promise<void>;
	/** Starts it again on the same ports, routes and store (it rejoins the cluster). */
	restart(): Promise<void>;
}

/** A local NATS cluster of clustered `nats-server` processes with JetStream. */
export interface NatsCluster {
	/** Every server's client URL, comma-separated: a `TRANSPORTER` value. */
	readonly url: string;
	readonly servers: readonly NatsClusterServer[];
	/** Stops every server (SIGTERM, SIGKILL after 5 s) and removes the stores. Idempotent. */
	stop(): Promise<void>;
}

/**
 * Starts `size` (3) clustered `nats-server` processes on 127.0.0.1, each with JetStream (`-js`,
 * its own `-sd` store), a client port, a monitoring port (`-m`) and a cluster port (`--cluster`),
 * routed to every other (`--routes`), all under `--cluster_name shop-test`. Resolves when every
 * server answers clients and JetStream has a meta leader (`/jsz` names one on each server), so
 * a replicated stream can be created at once. On any failure every child started so far is
 * stopped before the error is thrown; stop the cluster in afterAll.
 * @param opts.size - servers (3 by default; JetStream needs at least 3 for R3 streams)
 * @param opts.readyTimeoutMs - how long the cluster may take to elect its meta leader (30 s)
 */
export async function startNatsCluster(
	opts: { size?: number; readyTimeoutMs?: number } = {}
): Promise<NatsCluster> {
	const size = opts.size ?? 3;
	const bin = findExecutable("nats-server");
	if (!bin)
		throw new Error("nats-server not found on PATH (Debian: apt-get install nats-server)");
	const ports: { client: number; monitor: number; route: number }[] = [];
	for (let i = 0; i < size; i++)
		ports.push({
			client: await freePort(),
			monitor: await freePort(),
			route: await freePort()
		});
	const root = fs.mkdtempSync(path.join(os.tmpdir(), "shop-nats-cluster-"));
	const servers = ports.map((p, i) => {
		const name = `n${i + 1}`;
		const storeDir = path.join(root, name);
		fs.mkdirSync(storeDir);
		const routes = ports
			.filter((_, j) => j !== i)
			.map(o => `nats://127.0.0.1:${o.route}`)
			.join(",");
		const args = [
			"--name",
			name,
			"-a",
			"127.0.0.1",
			"-p",
			String(p.client),
			"-m",
			String(p.monitor),
			"-js",
			"-sd",
			storeDir,
			"--cluster_name",
			"shop-test",
			"--cluster",
			`nats://127.0.0.1:${p.route}`,
			"--routes",
			routes
		];
		return new ClusterServerProcess(bin, name, args, p.client, p.monitor);
	});
	// Should jest's process end without afterAll, its servers end with it.
	const killAll = (): void => {
		for (const s of servers) s.killNow();
	};
	process.on("exit", killAll);
	const cluster: NatsCluster = {
		url: servers.map(s => s.url).join(","),
		servers,
		async stop() {
			await Promise.all(servers.map(s => s.stop()));
			process.off("exit", killAll);
			fs.rmSync(root, { recursive: true, force: true });
		}
	};
	try {
		for (const s of servers) s.spawn();
		await Promise.all(servers.map(s => s.waitClients()));
		await waitMetaLeader(servers, opts.readyTimeoutMs ?? 30_000);
	} catch (err) {
		await cluster.stop();
		throw err;
	}
	return cluster;
}

/** Until every running server's `/jsz` names the same JetStream meta leader. */
export async function waitMetaLeader(
	servers: readonly NatsClusterServer[],
	timeoutMs = 30_000
): Promise<string> {
	const end = Date.now() + timeoutMs;
	let last = "";
	for (;;) {
		const leaders = await Promise.all(
			servers
				.filter(s => s.running)
				.map(async s => {
					try {
						const jsz = (await (
							await fetch(`${s.monitorUrl}/jsz`, {
								signal: AbortSignal.timeout(1_000)
							})
						).json()) as { meta_cluster?: { leader?: string } };
						return jsz.meta_cluster?.leader ?? "";
					} catch (err) {
						return `error: ${String(err)}`;
					}
				})
		);
		last = leaders.join(",");
		if (
			leaders.length > 0 &&
			leaders[0] &&
			leaders.every(l => l === leaders[0]) &&
			!leaders[0].startsWith("error")
		)
			return leaders[0];
		if (Date.now() > end)
			throw new Error(
				`No JetStream meta leader after ${timeoutMs} ms (servers say: ${last})`
			);
		await new Promise(r => setTimeout(r, 200));
	}
}

/** One clustered nats-server child process (startNatsCluster). */
class ClusterServerProcess implements NatsClusterServer {
	readonly url: string;
	readonly monitorUrl: string;
	private child: ChildProcess | null = null;
	private out = "";

	constructor(
		private readonly bin: string,
		readonly name: string,
		private readonly args: readonly string[],
		private readonly port: number,
		monitorPort: number
	) {
		this.url = `nats://127.0.0.1:${port}`;
		this.monitorUrl = `http://127.0.0.1:${monitorPort}`;
	}

	get pid(): number {
		return this.running ? (this.child?.pid ?? -1) : -1;
	}

	get running(): boolean {
		return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
	}

	output(): string {
		return this.out;
	}

	spawn(): void {
		// Its own process group, as tools/local-servers.ts does: a Ctrl-C reaches jest only.
		const child = spawn(this.bin, [...this.args], {
			stdio: ["ignore", "pipe", "pipe"],
			detached: true
		});
		const append = (d: Buffer): void => {
			this.out += d.toString();
			if (this.out.length > 1_000_000) this.out = this.out.slice(-500_000);
		};
		child.stdout!.on("data", append);
		child.stderr!.on("data", append);
		child.on("error", err => append(Buffer.from(`\n[${this.name} failed: ${err.message}]\n`)));
		this.child = child;
	}

	/** Until it greets a client with INFO (10 s). */
	async waitClients(timeoutMs = 10_000): Promise<void> {
		const end = Date.now() + timeoutMs;
		for (;;) {
			if (!this.running)
				throw new Error(
					`nats-server ${this.name} exited before it was ready:\n${this.out}`
				);
			if (await greets(this.port)) return;
			if (Date.now() > end)
				throw new Error(
					`nats-server ${this.name} did not answer in ${timeoutMs} ms:\n${this.out}`
				);
			await new Promise(r => setTimeout(r, 50));
		}
	}

	/** SIGKILL without waiting (process exit). */
	killNow(): void {
		if (this.child && this.running) this.child.kill("SIGKILL");
	}

	async kill(): Promise<void> {
		if (!this.child || !this.running) return;
		this.child.kill("SIGKILL");
		await waitForExit(this.child, 5_000);
	}

	async restart(): Promise<void> {
		await this.stop();
		this.spawn();
		await this.waitClients();
	}

	async stop(): Promise<void> {
		if (!this.child || !this.running) return;
		this.child.kill("SIGTERM");
		await waitForExit(this.child, 5_000);
	}
}

/** Whether a NATS server on 127.0.0.1:`port` sends its INFO greeting within 500 ms. */
function greets(port: number): Promise<boolean> {
	return new Promise(resolve => {
		const socket = net.connect({ host: "127.0.0.1", port });
		const done = (ok: boolean): void => {
			socket.destroy();
			resolve(ok);
		};
		socket.setTimeout(500, () => done(false));
		socket.on("error", () => done(false));
		socket.on("data", d => done(d.toString().startsWith("INFO ")));
	});
}
