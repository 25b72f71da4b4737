/**
 * A PRIVATE Postgres for a suite that stops and starts it (the chaos suite): the jest run's shared
 * server (global-setup.ts) must never go down under the suites running beside it.
 *
 * Same server as global-setup's (tools/embedded-postgres.ts: embedded-postgres binaries, a fresh
 * data dir readable by the `postgres` user when running as root, a free port), run by a small
 * helper process on `dist/tools/embedded-postgres.js`: inside jest's module registry the
 * embedded-postgres ES module cannot be required. `down()` asks the helper to stop the server the
 * way embedded-postgres does (SIGINT to the postmaster: a fast shutdown; clients are disconnected,
 * their transactions rolled back) and waits for it; `up()` starts it again on the same port and
 * data (the URL and password do not change). Needs `npm run build`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { projectRoot } from "../../tools/cluster";
import { freePort } from "./ports";

export interface PrivatePostgres {
	/**
	 * `postgres://postgres:<password>@127.0.0.1:<port>/postgres?host=<socket dir>` (set the path
	 * for another database; keep the query); stable across `up()`.
	 */
	readonly url: string;
	/** Fast shutdown; resolves when the server has exited. */
	down(): Promise<void>;
	/** Starts it again on the same port and data; resolves when it accepts connections. */
	up(): Promise<void>;
	/** Stops it and removes its data. */
	stop(): Promise<void>;
	/** The server's last log lines. */
	log(): string;
}

/** The helper: starts the server, prints `READY <url>`, stops it on SIGTERM. */
const HELPER = `
const { startEmbeddedPostgres } = require(process.env.SHOP_PG_LIB);
let handle = null;
process.on("SIGTERM", () => {
	Promise.resolve(handle && handle.stop()).finally(() => process.exit(0));
});
startEmbeddedPostgres({
	dataDir: process.env.SHOP_PG_DIR,
	port: Number(process.env.SHOP_PG_PORT),
	onLog: m => process.stderr.write(m + "\\n")
}).then(
	h => {
		handle = h;
		process.stdout.write("READY " + h.url + "\\n");
	},
	err => {
		process.stderr.write(String(err && err.stack ? err.stack : err) + "\\n");
		process.exit(1);
	}
);
`;

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
	const lib = path.join(projectRoot(), "dist", "tools", "embedded-postgres.js");
	if (!fs.existsSync(lib)) throw new Error(`${lib} is missing: run "npm run build" first`);
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-private-pg-"));
	fs.chmodSync(dataDir, 0o755);
	const port = await freePort();
	let log = "";
	let child: ChildProcess | null = null;
	const killOnExit = (): void => {
		child?.kill("SIGTERM");
	};
	process.on("exit", killOnExit);

	const start = (): Promise<string> =>
		new Promise((resolve, reject) => {
			const c = spawn(process.execPath, ["-e", HELPER], {
				env: {
					PATH: process.env.PATH,
					HOME: process.env.HOME,
					SHOP_PG_LIB: lib,
					SHOP_PG_DIR: dataDir,
					SHOP_PG_PORT: String(port)
				},
				stdio: ["ignore", "pipe", "pipe"]
			});
			child = c;
			let out = "";
			c.stderr!.on("data", (d: Buffer) => {
				log += d.toString();
				if (log.length > 200_000) log = log.slice(-100_000);
			});
			c.stdout!.on("data", (d: Buffer) => {
				out += d.toString();
				const m = /READY (\S+)/.exec(out);
				if (m) resolve(m[1]!);
			});
			c.once("exit", code =>
				reject(new Error(`Private Postgres exited (${code}) while starting:\n${log}`))
			);
		});

	const down = async (): Promise<void> => {
		const c = child;
		if (!c || c.exitCode !== null || c.signalCode !== null) return;
		await new Promise<void>(resolve => {
			c.once("exit", () => resolve());
			c.kill("SIGTERM");
		});
		child = null;
	};

	const url = await start();
	return {
		url,
		down,
		async up() {
			await start();
		},
		async stop() {
			await down();
			process.removeListener("exit", killOnExit);
			fs.rmSync(dataDir, { recursive: true, force: true });
		},
		log: () => log
	};
}
