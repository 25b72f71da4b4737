/**
 * `npm start`: the whole shop in one process, gateway on `PORT` (3000). "Ready in" counts from
 * this process's start (module loading included).
 */
import { flushCompileCache } from "./compile-cache"; // first: the modules below use the cache
import { config } from "../platform/config";
import { startShop, type RunningShop } from "../app/shop";

async function main(): Promise<void> {
	const log = (m: string): void => console.log(`[shop] ${m}`);
	const shop: RunningShop = await startShop({ onProgress: log });
	const c = config();
	log(`Ready in ${(performance.now() / 1000).toFixed(1)} s`);
	log(`API      ${shop.url}/api/products`);
	log(`Docs     ${shop.url}/api/docs  (OpenAPI 3.1: ${shop.url}/api/openapi.json)`);
	log(`Health   ${shop.url}/health  ${shop.url}/ready`);
	if (c.healthPort > 0)
		log(
			`Node     http://127.0.0.1:${c.healthPort}/health  http://127.0.0.1:${c.healthPort}/ready`
		);
	if (c.metricsPort > 0) log(`Metrics  http://127.0.0.1:${c.metricsPort}/metrics`);
	if (shop.adminCredentials)
		log(
			`Admin    ${shop.adminCredentials.email} / ${shop.adminCredentials.password}  (generated on this first start and shown only now: note it, or set ADMIN_PASSWORD)`
		);
	if (c.jwtSecretGenerated)
		log(`JWT_SECRET not set: using a development secret kept in ${c.dataDir}/jwt-secret`);

	let stopping = false;
	const stop = (signal: string): void => {
		if (stopping) return;
		stopping = true;
		log(`${signal}: stopping (draining in-flight requests)...`);
		shop.stop().then(
			() => process.exit(0),
			err => {
				console.error(err);
				process.exit(1);
			}
		);
	};
	process.on("SIGINT", () => stop("SIGINT"));
	process.on("SIGTERM", () => stop("SIGTERM"));
	flushCompileCache();
}

main().catch(err => {
	console.error("[shop] failed to start:", err instanceof Error ? err.message : err);
	process.exit(1);
});
