/**
 * What the operating system says about another process, read from Linux's `/proc` (proc(5)): is
 * it alive, which program with which arguments, its parent, and its start time (the pair
 * pid + start time names one process even after its pid is reused).
 *
 * Used by crash recovery (tools/postmaster.ts, tools/cluster-recovery.ts) to judge what a previous
 * run left behind. Elsewhere than Linux `/proc` is absent and these answer "unknown" (`null`).
 */
import fs from "node:fs";

export interface ProcessInfo {
	readonly pid: number;
	/** Parent pid (proc(5) `stat` field 4). */
	readonly ppid: number;
	/** Start time in clock ticks after boot (proc(5) `stat` field 22). */
	readonly startTime: string;
	/** argv; empty for a zombie or a kernel thread. */
	readonly argv: readonly string[];
}

/**
 * The process `pid` as `/proc` shows it.
 * @returns `null` when it does not exist (or `/proc` is unavailable).
 */
export function processInfo(pid: number): ProcessInfo | null {
	if (!Number.isInteger(pid) || pid <= 0) return null;
	let stat: string;
	let cmdline: string;
	try {
		stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
		cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
	} catch {
		return null;
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
	const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
	// fields[0] is field 3 (state): a zombie has exited already.
	if (fields[0] === "Z" || fields[0] === "X") return null;
	return {
		pid,
		ppid: Number(fields[1]),
		startTime: fields[19] ?? "",
		argv: cmdline.split("\0").filter((a, i, all) => a !== "" || i < all.length - 1)
	};
}

/** Whether `pid` runs and is still the process that started at `startTime`. */
export function isSameProcess(pid: number, startTime: string): boolean {
	const info = processInfo(pid);
	return info !== null && info.startTime === startTime;
}

/** Resolves once `pid` has exited (polled every 50 ms), or with `false` after `timeoutMs`. */
export async function waitForPidExit(pid: number, timeoutMs: number): Promise<boolean> {
	const end = Date.now() + timeoutMs;
	while (processInfo(pid) !== null) {
		if (Date.now() > end) return false;
		await new Promise(r => setTimeout(r, 50));
	}
	return true;
}

/** The live children of `pid` (every process whose parent it is), from a scan of `/proc`. */
export function childProcesses(pid: number): ProcessInfo[] {
	let entries: string[];
	try {
		entries = fs.readdirSync("/proc");
	} catch {
		return [];
	}
	const children: ProcessInfo[] = [];
	for (const name of entries) {
		if (!/^\d+$/.test(name)) continue;
		const info = processInfo(Number(name));
		if (info?.ppid === pid) children.push(info);
	}
	return children;
}
