/**
 * Benchmark helpers: autocannon runs, CPU and resident memory of processes sampled from /proc,
 * percentiles, a text table.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import autocannon from "autocannon";

/** A process the benchmark watches. */
export interface Watched {
	readonly name: string;
	readonly pid: number;
}

/** CPU (percent of one core, averaged over the run) and peak resident memory (MB) per process. */
export type ProcessUsage = Record<string, { cpuPercent: number; maxRssMb: number }>;

const CLOCK_TICKS = 100; // _SC_CLK_TCK on Linux

/**
 * The fields of `/proc/<pid>/stat` after the command name ([1] ppid, [11] utime, [12] stime,
 * [13] cutime, [14] cstime, in clock ticks), or null when the process is gone.
 */
function statFields(pid: number | string): string[] | null {
	try {
		const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
		// Fields after the command name (which may hold spaces) start after the last ")".
		return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
	} catch {
		return null;
	}
}

function cpuTicks(pid: number): number | null {
	const f = statFields(pid);
	return f ? Number(f[11]) + Number(f[12]) : null; // utime + stime
}

/** CPU ms of this process's children that ended and were waited for (cutime + cstime). */
export function childrenCpuMs(): number {
	const f = statFields("self")!;
	return (Number(f[13]) + Number(f[14])) * (1000 / CLOCK_TICKS);
}

/** CPU ms (utime + stime) of the processes in `pids`, those gone counted as 0. */
export function cpuMs(pids: readonly number[]): number {
	return pids.reduce((t, pid) => t + (cpuTicks(pid) ?? 0), 0) * (1000 / CLOCK_TICKS);
}

/**
 * A meter of the CPU of the Postgres server one of whose long-lived processes is `serverPid` (its
 * checkpointer: `SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'`) on this
 * machine:
 * its postmaster's own time and its reaped children's (backends whose connection closed), plus
 * the time of its processes alive now (backends, background workers), in ms. Read from /proc;
 * null where that is not possible (a server on another machine, another PID namespace).
 * Other Postgres servers of the machine are not counted.
 */
export function postgresCpuMeter(serverPid: number): (() => number) | null {
	const master = Number(statFields(serverPid)?.[1]);
	if (!master || master === 1 || !statFields(master)) return null;
	return () => {
		const m = statFields(master);
		if (!m) return 0;
		// utime + stime + cutime + cstime of the postmaster
		let ticks = Number(m[11]) + Number(m[12]) + Number(m[13]) + Number(m[14]);
		for (const d of fs.readdirSync("/proc")) {
			if (!/^\d+$/.test(d)) continue;
			const f = statFields(d);
			if (f && Number(f[1]) === master) ticks += Number(f[11]) + Number(f[12]);
		}
		return ticks * (1000 / CLOCK_TICKS);
	};
}

/** Resident set size of `pid` in MB, or null when it is gone. */
export function rssMb(pid: number): number | null {
	try {
		const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
		return m ? Number(m[1]) / 1024 : null;
	} catch {
		return null;
	}
}

/** Samples CPU and RSS of `procs` every 200 ms until `stop()`. */
export function sampleUsage(procs: readonly Watched[]): { stop(): ProcessUsage } {
	const t0 = process.hrtime.bigint();
	const start = new Map(procs.map(p => [p.pid, cpuTicks(p.pid) ?? 0]));
	const maxRss = new Map(procs.map(p => [p.pid, rssMb(p.pid) ?? 0]));
	const timer = setInterval(() => {
		for (const p of procs) maxRss.set(p.pid, Math.max(maxRss.get(p.pid)!, rssMb(p.pid) ?? 0));
	}, 200);
	return {
		stop() {
			clearInterval(timer);
			const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
			const out: ProcessUsage = {};
			for (const p of procs) {
				const ticks = (cpuTicks(p.pid) ?? start.get(p.pid)!) - start.get(p.pid)!;
				out[p.name] = {
					cpuPercent: round((ticks / CLOCK_TICKS / seconds) * 100, 1),
					maxRssMb: round(maxRss.get(p.pid)!, 1)
				};
			}
			return out;
		}
	};
}

/** The result of one load run. */
export interface LoadResult {
	/** 2xx answers per second. */
	rps: number;
	/** Latency of the HTTP answers, in ms. */
	p50: number;
	p99: number;
	ok: number;
	non2xx: number;
	errors: number;
	usage: ProcessUsage;
}

/** Runs autocannon against `opts.url` while sampling `procs`. */
export async function load(
	opts: autocannon.Options,
	procs: readonly Watched[]
): Promise<LoadResult> {
	const sampler = sampleUsage(procs);
	const r = await autocannon({ timeout: 30, ...opts });
	const usage = sampler.stop();
	return {
		rps: round(r["2xx"] / r.duration, 0),
		p50: r.latency.p50,
		p99: r.latency.p99,
		ok: r["2xx"],
		non2xx: r.non2xx,
		errors: r.errors + r.timeouts,
		usage
	};
}

/** The `q`-quantile (0..1) of `xs` (nearest rank), or 0 for none. */
export function quantile(xs: readonly number[], q: number): number {
	if (xs.length === 0) return 0;
	const sorted = [...xs].sort((a, b) => a - b);
	return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export function round(x: number, digits: number): number {
	const f = 10 ** digits;
	return Math.round(x * f) / f;
}

/** A child process that prints `READY` when it is up. */
export async function spawnReady(
	args: string[],
	env: NodeJS.ProcessEnv,
	timeoutMs = 60_000
): Promise<ChildProcess> {
	const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
	let out = "";
	await new Promise<void>((resolve, reject) => {
		const timer = setTimeout(
			() => reject(new Error(`${args.join(" ")} not ready:\n${out}`)),
			timeoutMs
		);
		const onData = (d: Buffer): void => {
			out += d.toString();
			if (out.includes("READY")) {
				clearTimeout(timer);
				resolve();
			}
		};
		child.stdout!.on("data", onData);
		child.stderr!.on("data", onData);
		child.once("exit", code => {
			clearTimeout(timer);
			reject(new Error(`${args.join(" ")} exited ${code}:\n${out}`));
		});
	});
	child.stdout!.resume();
	child.stderr!.resume();
	return child;
}

/** Stops a child (SIGTERM, SIGKILL after 10 s). */
export async function stopChild(child: ChildProcess | null | undefined): Promise<void> {
	if (!child || child.exitCode !== null || child.signalCode !== null) return;
	const exited = new Promise<void>(r => child.once("exit", () => r()));
	child.kill("SIGTERM");
	const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
	await exited;
	clearTimeout(timer);
}

/** A plain text table. */
export function table(rows: readonly (readonly (string | number)[])[]): string {
	const widths = rows[0]!.map((_, i) => Math.max(...rows.map(r => String(r[i] ?? "").length)));
	return rows
		.map((r, n) => {
			const line = r.map((c, i) => String(c).padEnd(widths[i]!)).join("  ");
			return n === 0 ? `${line}\n${widths.map(w => "-".repeat(w)).join("  ")}` : line;
		})
		.join("\n");
}
