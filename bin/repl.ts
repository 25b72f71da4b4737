/**
 * `npm run repl`: the whole shop in one process with the Moleculer REPL attached
 * (`call products.list`, `call orders.create ...`, `services`, `actions`, `quit`).
 */
import { startShop } from "../app/shop";

startShop({ onProgress: m => console.log(`[shop] ${m}`) })
	.then(async shop => {
		if (shop.adminCredentials)
			console.log(
				`[shop] Admin ${shop.adminCredentials.email} / ${shop.adminCredentials.password}  (generated on this first start and shown only now)`
			);
		console.log(
			`[shop] API on ${shop.url}/api — type "help" for REPL commands, "quit" to stop.`
		);
		const repl = shop.broker.repl() as unknown as
			{ on?(e: string, f: () => void): void } | undefined;
		repl?.on?.("exit", () => {
			shop.stop().then(
				() => process.exit(0),
				() => process.exit(1)
			);
		});
	})
	.catch(err => {
		console.error("[shop] failed to start:", err instanceof Error ? err.message : err);
		process.exit(1);
	});
