/**
 * The local NATS and Redis servers that a development cluster (`npm run cluster`) or a test
 * starts as child processes: the real `nats-server` and `redis-server` binaries, bound to
 * 127.0.0.1, resolved when they answer their protocol's greeting (NATS `INFO`, Redis `PONG`).
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

/** Where Debian and friends put server binaries that are not always on a user's PATH. */
const EXTRA_BIN_DIRS = ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"];

/**
 * The absolute path of an executable: searched on PATH, then in the usual system directories.
 * @returns `null` when it is nowhere.
 */
export function findExecutable(name: string, searchPath = process.env.PATH ?? ""): string | null {
	const dirs = [...searchPath.split(path.delimiter).filter(Boolean), ...EXTRA_BIN_DIRS];
	for (const dir of dirs) {
		const file = path.join(dir, name);
		try {
			fs.accessSync(file, fs.constants.X_OK);
			if (fs.statSync(file).isFile()) return file;
		} catch {
			// not here
		}
	}
	return null;
}

/** A TCP port free on 127.0.0.1 right now (the OS picks it). */
export function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const srv = net.createServer();
		srv.unref();
		srv.on("error", reject);
		srv.listen(0, "127.0.0.1", () => {
			const addr = srv.address();
			const port = typeof addr === "object" && addr ? addr.port : 0;
			srv.close(() => resolve(port));
		});
	});
}

/** Whether `port` can be listened on at 127.0.0.1 right now. */
export function isPortFree(port: number): Promise<boolean> {
	return new Promise(resolve => {
		const srv = net.createServer();
		srv.unref();
		srv.once("error", () => resolve(false));
		srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
	});
}

/** A server child process. */
export interface ServerProcess {
	/** `nats://127.0.0.1:<port>` or `redis://127.0.0.1:<port>`. */
	readonly url: string;
	readonly port: number;
	readonly pid: number;
	readonly child: ChildProcess;
	/** Everything the server printed. */
	output(): string;
	/** SIGTERM, SIGKILL after `timeoutMs`; resolves when it has exited. */
	stop(timeoutMs?: number): Promise<void>;
}

interface SpawnServerOptions {
	readonly name: string;
	readonly bin: string;
	readonly args: readonly string[];
	readonly url: string;
	readonly port: number;
	/** Sends a probe on a fresh connection and says whether the answer means "ready". */
	readonly probe: { send?: string; ready: (answer: string) => boolean };
	readonly timeoutMs: number;
	readonly cwd?: string;
}

/** Waits for `child` to exit; SIGKILL after `timeoutMs`. */
export function waitForExit(child: ChildProcess, timeoutMs: number): Promise<void> {
	return new Promise(resolve => {
		if (child.exitCode !== null || child.signalCode !== null) return resolve();
		const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
		child.once("exit", () => {
			clearTimeout(timer);
			resolve();
		});
	});
}

/** One probe: connect, optionally send, resolve with whatever arrives first (or ""). */
function probeOnce(port: number, send: string | undefined): Promise<string> {
	return new Promise(resolve => {
		const socket = net.connect({ host: "127.0.0.1", port });
		let answer = "";
		const done = (): void => {
			socket.destroy();
			resolve(answer);
		};
		socket.setTimeout(500, done);
		socket.on("error", done);
		socket.on("connect", () => {
			if (send) socket.write(send);
		});
		socket.on("data", d => {
			answer += d.toString();
			done();
		});
	});
}

async function spawnServer(opts: SpawnServerOptions): Promise<ServerProcess> {
	// Its own process group: a terminal's Ctrl-C reaches only the supervisor, which stops the
	// server after the nodes that use it.
	const child = spawn(opts.bin, [...opts.args], {
		cwd: opts.cwd,
		stdio: ["ignore", "pipe", "pipe"],
		detached: true
	});
	let out = "";
	const append = (d: Buffer): void => {
		out += d.toString();
		if (out.length > 1_000_000) out = out.slice(-500_000);
	};
	child.stdout!.on("data", append);
	child.stderr!.on("data", append);
	const spawned = new Promise<void>((resolve, reject) => {
		child.once("spawn", resolve);
		child.once("error", reject);
	});
	await spawned;

	const end = Date.now() + opts.timeoutMs;
	for (;;) {
		if (child.exitCode !== null || child.signalCode !== null)
			throw new Error(
				`${opts.name} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${out}`
			);
		if (opts.probe.ready(await probeOnce(opts.port, opts.probe.send))) break;
		if (Date.now() > end) {
			child.kill("SIGKILL");
			throw new Error(
				`${opts.name} did not answer on 127.0.0.1:${opts.port} in ${opts.timeoutMs} ms:\n${out}`
			);
		}
		await new Promise(r => setTimeout(r, 50));
	}
	return {
		url: opts.url,
		port: opts.port,
		pid: child.pid!,
		child,
		output: () => out,
		stop: async (timeoutMs = 5_000) => {
			if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
			await waitForExit(child, timeoutMs);
		}
	};
}

export interface NatsServerOptions {
	/** Client port on 127.0.0.1. */
	readonly port: number;
	/** HTTP monitoring port on 127.0.0.1 (`/varz`, `/connz`); none when absent. */
	readonly monitorPort?: number;
	/** Enables JetStream with this store directory. */
	readonly jetStreamDir?: string;
	/**
	 * The server's name (`--server_name`): in a cluster JetStream tells its peers apart by it, so
	 * each needs its own, the same across restarts (tools/nats-cluster.ts).
	 */
	readonly serverName?: string;
	/**
	 * Joins a cluster: listens for routes on 127.0.0.1:`port` and connects to `routes` (every
	 * member's route URL, its own included: a server skips itself), all under cluster `name`.
	 */
	readonly cluster?: {
		readonly name: string;
		readonly port: number;
		readonly routes: readonly string[];
	};
	/**
	 * Clients must authenticate: with this token (`--auth`), or this user and password
	 * (`--user`/`--pass`). On the command line, so visible to `ps` on this machine: for tests and
	 * development; production servers take them from a config file (deploy/nats/nats.conf).
	 */
	readonly auth?:
		{ readonly token: string } | { readonly user: string; readonly password: string };
	/** Clients must use TLS: the server's certificate and key (PEM files), and optionally the CA
	 * that client certificates must be signed by (`verifyClients`: clients must present one). */
	readonly tls?: {
		readonly certFile: string;
		readonly keyFile: string;
		readonly caFile?: string;
		readonly verifyClients?: boolean;
	};
	/** How long to wait for the server to answer, in ms. */
	readonly timeoutMs?: number;
}

/**
 * Starts `nats-server` on 127.0.0.1; resolves once it greets a client with `INFO`.
 * @throws Error when the binary is missing (install the `nats-server` package) or it fails.
 */
export async function startNatsServer(opts: NatsServerOptions): Promise<ServerProcess> {
	const bin = findExecutable("nats-server");
	if (!bin)
		throw new Error(
			"nats-server not found on PATH (nor in /usr/sbin): install it (Debian: apt-get install nats-server) or set TRANSPORTER"
		);
	const args = ["-a", "127.0.0.1", "-p", String(opts.port)];
	if (opts.monitorPort !== undefined) args.push("-m", String(opts.monitorPort));
	if (opts.jetStreamDir !== undefined) args.push("-js", "-sd", opts.jetStreamDir);
	if (opts.serverName !== undefined) args.push("--server_name", opts.serverName);
	if (opts.cluster)
		args.push(
			"--cluster_name",
			opts.cluster.name,
			"--cluster",
			`nats://127.0.0.1:${opts.cluster.port}`,
			"--routes",
			opts.cluster.routes.join(",")
		);
	if (opts.auth && "token" in opts.auth) args.push("--auth", opts.auth.token);
	else if (opts.auth) args.push("--user", opts.auth.user, "--pass", opts.auth.password);
	if (opts.tls) {
		args.push("--tls", "--tlscert", opts.tls.certFile, "--tlskey", opts.tls.keyFile);
		if (opts.tls.caFile) args.push("--tlscacert", opts.tls.caFile);
		if (opts.tls.verifyClients) args.push("--tlsverify");
	}
	return spawnServer({
		name: "nats-server",
		bin,
		args,
		url: `nats://127.0.0.1:${opts.port}`,
		port: opts.port,
		probe: { ready: answer => answer.startsWith("INFO ") },
		timeoutMs: opts.timeoutMs ?? 10_000
	});
}

export interface RedisServerOptions {
	readonly port: number;
	/** Working directory of the server (no data is saved: `--save ""`, no AOF). */
	readonly dir?: string;
	readonly timeoutMs?: number;
}

/**
 * Starts `redis-server` on 127.0.0.1 without persistence; resolves once it answers `PING`.
 * @throws Error when the binary is missing (install the `redis-server` package) or it fails.
 */
export async function startRedisServer(opts: RedisServerOptions): Promise<ServerProcess> {
	const bin = findExecutable("redis-server");
	if (!bin)
		throw new Error(
			"redis-server not found on PATH (nor in /usr/bin): install it (Debian: apt-get install redis-server)"
		);
	const args = [
		"--port",
		String(opts.port),
		"--bind",
		"127.0.0.1",
		"--save",
		"",
		"--appendonly",
		"no",
		"--daemonize",
		"no"
	];
	if (opts.dir !== undefined) args.push("--dir", opts.dir);
	return spawnServer({
		name: "redis-server",
		bin,
		args,
		url: `redis://127.0.0.1:${opts.port}`,
		port: opts.port,
		probe: { send: "PING\r\n", ready: answer => answer.startsWith("+PONG") },
		timeoutMs: opts.timeoutMs ?? 10_000
	});
}
