/**
 * The shop process that `npm run dev` (tools/dev.ts) runs from the TypeScript sources through tsx
 * and restarts on every saved change: the one-process shop (app/shop.ts) on the database the
 * supervisor hands over in `DATABASE_URL`, with the Moleculer REPL on stdin unless `DEV_REPL=0`.
 *
 * Stops (draining in-flight requests, as `npm start` does) on SIGTERM (the supervisor restarting
 * it), on SIGINT, and when the supervisor's IPC channel closes (the supervisor died); the REPL's
 * `quit` (or Ctrl-D) stops it too, with exit status 0, which the supervisor takes as "stop
 * `npm run dev`".
 */
import { startShop, type RunningShop } from "../app/shop";

const log = (m: string): void => console.log(`[shop] ${m}`);
const withRepl = process.env.DEV_REPL !== "0";
let shop: RunningShop | null = null;
let stopping = false;

/** Stops the shop if it runs (a signal during start-up exits at once: crash-only start-up). */
function stop(why: string): void {
	if (stopping) return;
	stopping = true;
	if (!shop) process.exit(0);
	log(`${why}: stopping...`);
	shop.stop().then(
		() => process.exit(0),
		err => {
			console.error("[shop] stopping failed:", err);
			process.exit(1);
		}
	);
}

process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));
process.on("disconnect", () => stop("npm run dev is gone"));

const t0 = Date.now();
startShop({ onProgress: log })
	.then(started => {
		shop = started;
		log(`Ready in ${((Date.now() - t0) / 1000).toFixed(1)} s: API ${started.url}/api`);
		if (started.adminCredentials)
			log(
				`Admin    ${started.adminCredentials.email} / ${started.adminCredentials.password}  (generated on this first start and shown only now: note it, or set ADMIN_PASSWORD)`
			);
		if (withRepl) {
			log(`REPL: type "help" for commands, "quit" to stop npm run dev.`);
			// moleculer-repl stops the broker (and with it this process, status 0) on quit/Ctrl-D.
			started.broker.repl();
		}
	})
	.catch(err => {
		console.error("[shop] failed to start:", err instanceof Error ? err.message : err);
		process.exit(1);
	});
