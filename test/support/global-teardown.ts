import fs from "node:fs";
import type { EmbeddedPostgresHandle } from "../../tools/embedded-postgres";

export default async function globalTeardown(): Promise<void> {
	const pg = (globalThis as Record<string, unknown>).__SHOP_TEST_PG__ as
		EmbeddedPostgresHandle | undefined;
	if (pg) await pg.stop();
	const dir = process.env.SHOP_TEST_PG_DIR;
	if (dir) fs.rmSync(dir, { recursive: true, force: true });
}
