/**
 * tools/postmaster.ts judges what a data directory's `postmaster.pid` names before the embedded
 * Postgres starts: nothing, a dead pid (stale), a pid reused by another program, a postmaster of
 * this directory whose starter still runs (in use), or one whose starter is gone (orphaned).
 * Real processes stand in for the postmaster: a Node process whose argv reads
 * `postgres ... -D <dir>` is what /proc shows of one. The real postmaster's cases (the orphan
 * stopped with pg_ctl, the watchdog) are in test/e2e/crash-restart.e2e.test.ts.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { inspectLeftover, ownerFile, recoverLeftover, writeOwner } from "../../tools/postmaster";
import { processInfo, waitForPidExit } from "../../tools/process-info";

/** A live process whose command line is `postgres -e ... -- -D <databaseDir>`. */
function fakePostmaster(databaseDir: string): ChildProcess {
	return spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)", "--", "-D", databaseDir], {
		argv0: "postgres",
		stdio: "ignore"
	});
}

describe("a data directory's leftover postmaster (tools/postmaster.ts)", () => {
	let dataDir: string;
	let databaseDir: string;
	const children: ChildProcess[] = [];
	const pidFile = (): string => path.join(databaseDir, "postmaster.pid");
	const writeLock = (file: string, pid: number): void =>
		fs.writeFileSync(file, `${pid}\n${databaseDir}\n1700000000\n5439\n`);
	const start = async (child: ChildProcess): Promise<number> => {
		children.push(child);
		await new Promise(r => child.once("spawn", r));
		// /proc shows the new argv once exec has happened.
		for (let i = 0; i < 100 && processInfo(child.pid!)?.argv[0] !== "postgres"; i++)
			await new Promise(r => setTimeout(r, 20));
		return child.pid!;
	};
	const opts = () => ({ dataDir, pgCtl: "/nonexistent/pg_ctl", ids: {} });

	beforeEach(() => {
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-postmaster-"));
		databaseDir = path.join(dataDir, "postgres");
		fs.mkdirSync(databaseDir);
	});
	afterEach(async () => {
		for (const c of children.splice(0))
			if (c.exitCode === null && c.signalCode === null) {
				c.kill("SIGKILL");
				await waitForPidExit(c.pid!, 5_000);
			}
		fs.rmSync(dataDir, { recursive: true, force: true });
	});

	it("none without a lock file; stale when its pid is dead (Postgres removes it itself)", async () => {
		expect(inspectLeftover(dataDir)).toEqual({ verdict: "none", pid: 0 });
		const dead = spawn("true");
		await new Promise(r => dead.once("exit", r));
		writeLock(pidFile(), dead.pid!);
		expect(await recoverLeftover(opts())).toEqual({ verdict: "stale", pid: dead.pid });
		expect(fs.existsSync(pidFile())).toBe(true);
	});

	it("a pid reused by another program: removes the lock files naming it, keeps the others", async () => {
		const sleeper = await start(spawn("sleep", ["30"], { stdio: "ignore" }));
		const other = await start(fakePostmaster("/somewhere/else"));
		writeLock(pidFile(), sleeper);
		writeLock(path.join(databaseDir, ".s.PGSQL.5439.lock"), sleeper);
		writeLock(path.join(databaseDir, ".s.PGSQL.5440.lock"), 1);
		expect(inspectLeftover(dataDir).verdict).toBe("reused");
		expect(await recoverLeftover(opts())).toEqual({ verdict: "reused", pid: sleeper });
		expect(fs.readdirSync(databaseDir)).toEqual([".s.PGSQL.5440.lock"]);
		// A postmaster of another data directory is a reuse too.
		writeLock(pidFile(), other);
		expect(inspectLeftover(dataDir).verdict).toBe("reused");
		expect(processInfo(sleeper)).not.toBeNull();
		expect(processInfo(other)).not.toBeNull();
	});

	it("in use while the process that started it runs: refuses and leaves it alone", async () => {
		const pm = await start(fakePostmaster(databaseDir));
		writeLock(pidFile(), pm);
		writeOwner(dataDir);
		expect(inspectLeftover(dataDir)).toEqual({
			verdict: "in-use",
			pid: pm,
			ownerPid: process.pid
		});
		await expect(recoverLeftover(opts())).rejects.toThrow(/belongs to a running shop/);
		expect(processInfo(pm)).not.toBeNull();
	});

	it("orphaned when its starter is gone: stopped (immediate shutdown when pg_ctl fails)", async () => {
		const pm = await start(fakePostmaster(databaseDir));
		writeLock(pidFile(), pm);
		// The starter: a process that has exited since.
		fs.writeFileSync(ownerFile(dataDir), `${process.pid} 1\n`);
		expect(inspectLeftover(dataDir).verdict).toBe("orphaned");
		const said: string[] = [];
		const found = await recoverLeftover({ ...opts(), onProgress: m => said.push(m) });
		expect(found).toEqual({ verdict: "orphaned", pid: pm });
		expect(processInfo(pm)).toBeNull();
		expect(said.join("\n")).toMatch(/left running .* by a run that is gone[\s\S]*SIGQUIT/);
	});
});
