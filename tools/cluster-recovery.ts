/**
 * Crash-only `npm run cluster`: what a supervisor started is written down, so that the next one on
 * the same DATA_DIR can end what a crashed one left (nodes, the nats-server, `npm run db`), and a
 * watchdog ends it at once when the supervisor dies (tools/watchdog.ts).
 *
 * `<DATA_DIR>/cluster-processes.json`: `{ supervisor: { pid, startTime }, groups: [{ pgid,
 * startTime, what, tier }] }`, rewritten on every change. Every child is `detached`, so its pid is
 * its process group and ending the group ends whatever it started (e.g. `npm run db`'s Postgres).
 * pid + start time name one process even after a pid is reused (tools/process-info.ts).
 */
import fs from "node:fs";
import path from "node:path";
import { isSameProcess, processInfo } from "./process-info";
import { watchProcessGroups, type GroupWatchdog } from "./watchdog";

interface Recorded {
	readonly pgid: number;
	readonly startTime: string;
	readonly what: string;
	readonly tier: number;
}

interface RunFile {
	readonly supervisor: { readonly pid: number; readonly startTime: string };
	readonly groups: readonly Recorded[];
}

/** Where the supervisor of `dataDir` writes down its children. */
export function runFile(dataDir: string): string {
	return path.join(dataDir, "cluster-processes.json");
}

function readRunFile(file: string): RunFile | null {
	try {
		return JSON.parse(fs.readFileSync(file, "utf8")) as RunFile;
	} catch {
		return null;
	}
}

const delay = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
	try {
		process.kill(-pgid, signal);
	} catch {
		// gone
	}
}

/**
 * Ends what a previous supervisor on `dataDir` left running: per tier (gateway, orders, other
 * nodes, servers), SIGTERM to each recorded process group whose leader is still the recorded
 * process, up to `graceMs` for them to go, then SIGKILL.
 * @returns how many process groups it ended
 * @throws Error when that supervisor still runs (a cluster is up on this DATA_DIR)
 */
export async function endPreviousRun(
	dataDir: string,
	log: (m: string) => void,
	graceMs = 10_000
): Promise<number> {
	const file = runFile(dataDir);
	const run = readRunFile(file);
	if (!run) return 0;
	const { pid, startTime } = run.supervisor;
	if (pid !== process.pid && isSameProcess(pid, startTime))
		throw new Error(
			`A cluster already runs on ${dataDir} (supervisor pid ${pid}): stop it first (Ctrl-C), or use another DATA_DIR`
		);
	const alive = run.groups.filter(g => isSameProcess(g.pgid, g.startTime));
	if (alive.length > 0)
		log(
			`A crashed run left ${alive.length} processes running (${alive.map(g => `${g.what} pid ${g.pgid}`).join(", ")}): ending them`
		);
	for (const tier of [...new Set(alive.map(g => g.tier))].sort((a, b) => a - b)) {
		const mine = alive.filter(g => g.tier === tier);
		for (const g of mine) signalGroup(g.pgid, "SIGTERM");
		const end = Date.now() + graceMs;
		while (mine.some(g => processInfo(g.pgid)) && Date.now() < end) await delay(50);
		for (const g of mine) signalGroup(g.pgid, "SIGKILL");
		while (mine.some(g => processInfo(g.pgid)) && Date.now() < end + 2_000) await delay(50);
	}
	fs.rmSync(file, { force: true });
	return alive.length;
}

/** What the supervisor tells about each child it starts and each that exits. */
export interface ProcessTracker {
	/** `pid` (a `detached` child: its own process group) runs; ended in `tier` order on a crash. */
	started(pid: number, what: string, tier: number): void;
	/** `pid` has exited (its pid may be reused: forget it). */
	exited(pid: number, tier: number): void;
	/** The supervisor stops in order: nothing to clean up any more. */
	close(): void;
}

/**
 * The supervisor's tracker: writes `cluster-processes.json` and feeds a watchdog that ends the
 * children (tier by tier, SIGTERM then SIGKILL after `graceMs`) when the supervisor dies.
 */
export function trackProcesses(dataDir: string, graceMs = 5_000): ProcessTracker {
	const file = runFile(dataDir);
	const self = processInfo(process.pid);
	const groups = new Map<number, Recorded>();
	const watchdog: GroupWatchdog = watchProcessGroups(graceMs);
	const save = (): void => {
		const run: RunFile = {
			supervisor: { pid: process.pid, startTime: self?.startTime ?? "" },
			groups: [...groups.values()]
		};
		fs.mkdirSync(dataDir, { recursive: true });
		fs.writeFileSync(file + ".tmp", JSON.stringify(run, null, "\t") + "\n");
		fs.renameSync(file + ".tmp", file);
	};
	save();
	return {
		started(pid, what, tier) {
			groups.set(pid, {
				pgid: pid,
				startTime: processInfo(pid)?.startTime ?? "",
				what,
				tier
			});
			watchdog.watch(pid, tier);
			save();
		},
		exited(pid, tier) {
			groups.delete(pid);
			watchdog.forget(pid, tier);
			save();
		},
		close() {
			watchdog.disarm();
			fs.rmSync(file, { force: true });
		}
	};
}
