/**
 * `npm run dev`: the development loop. One supervisor (this process) keeps three things running:
 *
 * - the embedded Postgres under `DATA_DIR` (unless `DATABASE_URL` is set), started once here so
 *   that it survives the shop's restarts (tools/embedded-postgres.ts: crash-only start-up, and a
 *   watchdog that stops it if this process dies);
 * - the shop (tools/dev-shop.ts) from the TypeScript sources through tsx, no `tsc` needed, with
 *   the Moleculer REPL on this terminal; restarted (SIGTERM, then a fresh process) when a file
 *   under tsconfig.json's `include` folders (app, platform, services, mixins, tools, bin) or
 *   `moleculer.config.ts` is saved. A shop that fails to start or crashes waits for the next save;
 *   the REPL's `quit` ends `npm run dev`;
 * - Vite's dev server for the web app (web/vite.config.mts, hot reload), its `/api` proxied to the
 *   shop (`SHOP_URL`), on port 5173 (`--web-port`; Vite takes the next free one when taken).
 *
 * The shop listens on `PORT` (3000; a free port when 0, fixed for the session so that the proxy
 * follows restarts). `.env` is read once at start (`node --env-file-if-exists=.env`): after
 * editing it, restart `npm run dev`.
 *
 * Flags: `--no-web` (no Vite), `--no-repl` (no REPL; stdin unused), `--web-port <port>`. Ctrl-C
 * (or SIGTERM) stops the shop, Vite, then Postgres.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { config, ConfigError } from "../platform/config";
import { readTsconfig } from "./build-if-changed";
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from "./embedded-postgres";
import { freePort, waitForExit } from "./local-servers";

const ROOT = path.resolve(__dirname, "..");
const USAGE = "usage: npm run dev [-- --no-web] [--no-repl] [--web-port <port>]";
/** Saves arriving within this many ms of each other restart the shop once. */
const DEBOUNCE_MS = 150;
/** How long a stopping shop may drain before it is killed, ms. */
const STOP_GRACE_MS = 10_000;

const log = (m: string): void => console.log(`[dev] ${m}`);

interface DevOptions {
	readonly web: boolean;
	readonly repl: boolean;
	/** Vite's port (it takes the next free one when this one is taken). */
	readonly webPort: number;
}

function parseArgs(argv: readonly string[]): DevOptions {
	let web = true;
	let repl = true;
	let webPort = 5173;
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i]!;
		if (arg === "--no-web") web = false;
		else if (arg === "--no-repl") repl = false;
		else if (arg === "--web-port" && /^\d{1,5}$/.test(argv[i + 1] ?? ""))
			webPort = Number(argv[++i]);
		else throw new ConfigError(`unknown argument "${arg}"\n${USAGE}`);
	}
	return { web, repl, webPort };
}

/** Whether a changed file (relative to ROOT) is a source of the shop. */
function isSource(rel: string): boolean {
	const base = path.basename(rel);
	return !base.startsWith(".") && /\.(ts|json)$/.test(base) && !base.endsWith(".d.ts");
}

/**
 * Calls `onChange(relativePath)` for every change under the shop's source folders and files
 * (tsconfig.json's `include`); returns a function that stops watching.
 */
function watchSources(onChange: (rel: string) => void): () => void {
	const include = readTsconfig(ROOT).include;
	const watchers: fs.FSWatcher[] = [];
	const files = new Set<string>();
	for (const entry of include) {
		const abs = path.join(ROOT, entry);
		if (fs.statSync(abs, { throwIfNoEntry: false })?.isDirectory())
			watchers.push(
				fs.watch(abs, { recursive: true }, (_event, name) => {
					if (name && isSource(name)) onChange(path.join(entry, name.toString()));
				})
			);
		else files.add(entry);
	}
	// Single files through their folder: editors replace a file on save (a new inode).
	if (files.size > 0)
		watchers.push(
			fs.watch(ROOT, (_event, name) => {
				if (name && files.has(name.toString())) onChange(name.toString());
			})
		);
	return () => watchers.forEach(w => w.close());
}

/** Vite's dev server as a child process, its lines prefixed `[web]`; resolves with its URL. */
function startVite(
	shopUrl: string,
	port: number
): Promise<{ child: ChildProcess; url: string | null }> {
	const vite = path.join(ROOT, "node_modules", ".bin", "vite");
	const child = spawn(
		vite,
		["--config", path.join("web", "vite.config.mts"), "--port", String(port)],
		{
			cwd: ROOT,
			env: { ...process.env, SHOP_URL: shopUrl, FORCE_COLOR: "0" },
			stdio: ["ignore", "pipe", "pipe"]
		}
	);
	return new Promise((resolve, reject) => {
		let pending = "";
		let settled = false;
		const onData = (d: Buffer): void => {
			pending += d.toString();
			const lines = pending.split("\n");
			pending = lines.pop() ?? "";
			for (const raw of lines) {
				// eslint-disable-next-line no-control-regex
				const line = raw.replace(/\x1b\[[0-9;]*m/g, "").trimEnd();
				if (line.trim()) console.log(`[web] ${line.trim()}`);
				const m = /Local:\s+(http\S+)/.exec(line);
				if (m && !settled) {
					settled = true;
					resolve({ child, url: m[1]! });
				}
			}
		};
		child.stdout!.on("data", onData);
		child.stderr!.on("data", onData);
		child.once("error", err => {
			if (!settled) reject(err);
		});
		child.once("exit", code => {
			if (!settled) reject(new Error(`vite exited with ${code}`));
			else log(`Vite dev server exited (${code})`);
		});
	});
}

async function main(): Promise<void> {
	const opts = parseArgs(process.argv.slice(2));
	const c = config();
	let postgres: EmbeddedPostgresHandle | null = null;
	let vite: ChildProcess | null = null;
	let shop: ChildProcess | null = null;
	let stopWatching = (): void => undefined;
	let stopping = false;
	/** Whether the running shop was told to stop by this supervisor (a restart). */
	let restarting = false;
	let restartTimer: NodeJS.Timeout | null = null;
	const changed = new Set<string>();

	const stopAll = async (why: string): Promise<void> => {
		if (stopping) return;
		stopping = true;
		log(
			`${why}: stopping the shop${vite ? ", Vite" : ""}${postgres ? " and Postgres" : ""}...`
		);
		stopWatching();
		if (restartTimer) clearTimeout(restartTimer);
		if (shop) await stopChild(shop);
		if (vite) await stopChild(vite);
		if (postgres) await postgres.stop();
		log("Stopped.");
		process.exit(0);
	};
	const stopChild = async (child: ChildProcess): Promise<void> => {
		if (child.exitCode !== null || child.signalCode !== null) return;
		child.kill("SIGTERM");
		// SIGKILL when it is still there after the grace period.
		await waitForExit(child, STOP_GRACE_MS);
	};
	for (const s of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(s, () => void stopAll(s));

	const env: NodeJS.ProcessEnv = { ...process.env, DEV_REPL: opts.repl ? "1" : "0" };
	try {
		if (!c.databaseUrl) {
			postgres = await startEmbeddedPostgres({
				dataDir: c.dataDir,
				port: c.embeddedPostgresPort,
				onProgress: log
			});
			env.DATABASE_URL = postgres.url;
		}
		const port = c.port > 0 ? c.port : await freePort();
		env.PORT = String(port);
		const shopUrl = `http://127.0.0.1:${port}`;

		const startShopProcess = (): void => {
			restarting = false;
			const child = spawn(process.execPath, ["--import", "tsx", "tools/dev-shop.ts"], {
				cwd: ROOT,
				env,
				stdio: [opts.repl ? "inherit" : "ignore", "inherit", "inherit", "ipc"]
			});
			shop = child;
			child.once("exit", (code, signal) => {
				if (shop === child) shop = null;
				if (stopping || restarting) return;
				if (code === 0) {
					// The REPL's quit (or the shop stopped from outside): the session ends.
					void stopAll("the shop stopped");
					return;
				}
				log(
					`the shop exited (${signal ?? `status ${code}`}): fix the error and save a file to restart it`
				);
			});
		};
		/** One restart at a time: saves during one are picked up when the old shop is gone. */
		let restartRunning = false;
		const restart = async (): Promise<void> => {
			restartTimer = null;
			if (stopping || restartRunning) return;
			restartRunning = true;
			try {
				while (changed.size > 0 && !stopping) {
					const files = [...changed];
					changed.clear();
					log(
						`${files.slice(0, 3).join(", ")}${files.length > 3 ? ` and ${files.length - 3} more` : ""} changed: restarting the shop`
					);
					if (shop) {
						restarting = true;
						await stopChild(shop);
					}
					if (!stopping && changed.size === 0) startShopProcess();
				}
			} finally {
				restartRunning = false;
			}
		};

		if (opts.web) {
			const started = await startVite(shopUrl, opts.webPort);
			vite = started.child;
			log(
				`Web app  ${started.url}  (Vite dev server, hot reload; /api proxied to ${shopUrl})`
			);
		}
		stopWatching = watchSources(rel => {
			changed.add(rel);
			if (restartTimer) clearTimeout(restartTimer);
			restartTimer = setTimeout(() => void restart(), DEBOUNCE_MS);
		});
		log(
			`Watching ${readTsconfig(ROOT).include.join(", ")}: a saved change restarts the shop (Postgres${opts.web ? " and Vite" : ""} keep running)`
		);
		startShopProcess();
	} catch (err) {
		stopping = true;
		stopWatching();
		if (vite) await stopChild(vite);
		if (postgres) await postgres.stop();
		throw err;
	}
}

main().catch(err => {
	if (err instanceof ConfigError) {
		console.error(`[dev] ${err.message}`);
		process.exit(2);
	}
	console.error("[dev] failed to start:", err instanceof Error ? err.message : err);
	process.exit(1);
});
