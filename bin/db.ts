/**
 * `npm run db`: the embedded Postgres alone, in the foreground. Prints its DATABASE_URL for nodes
 * started one per process (`moleculer-runner`). Ctrl-C stops it.
 */
import { config } from "../platform/config";
import { startEmbeddedPostgres } from "../tools/embedded-postgres";

async function main(): Promise<void> {
	const c = config();
	if (c.databaseUrl) {
		console.log(
			`DATABASE_URL is already set (${new URL(c.databaseUrl).host}); nothing to start.`
		);
		return;
	}
	const pg = await startEmbeddedPostgres({
		dataDir: c.dataDir,
		port: c.embeddedPostgresPort,
		onProgress: m => console.log(`[db] ${m}`)
	});
	console.log(`DATABASE_URL=${pg.url}`);
	const stop = (): void => {
		pg.stop().then(
			() => process.exit(0),
			() => process.exit(1)
		);
	};
	process.on("SIGINT", stop);
	process.on("SIGTERM", stop);
}

main().catch(err => {
	console.error("[db] failed:", err instanceof Error ? err.message : err);
	process.exit(1);
});
