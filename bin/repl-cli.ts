/**
 * `npm run repl [-- --connect [<nats-url>[,<nats-url>...]]]`: the Moleculer REPL.
 *
 * - Without `--connect`: the whole shop in one process with the REPL attached (bin/repl.ts).
 * - With `--connect`: a REPL node (no services) joining a running cluster (`npm run cluster`,
 *   docker-compose, Kubernetes) over its NATS transporter, with the shop's broker options
 *   (moleculer.config.ts: namespace `shop`, serializer, NATS credentials from `NATS_*`) and the
 *   shop's REPL commands (app/repl-commands.ts: `orders`, `dlq`, `redrive`, ...); `call`, `emit`,
 *   `nodes`, `services`, `actions` reach every node. The transporter is, first found: the URL
 *   after `--connect`; `TRANSPORTER` (from the environment or `.env`); the nats-server(s) that
 *   `npm run cluster` started on this `DATA_DIR` (read from `DATA_DIR/cluster-processes.json` and
 *   the server's command line); `nats://127.0.0.1:4222`. Its nodeID is
 *   `repl-<host>-<pid>`; it serves no metrics or health port. `quit` leaves the cluster; the
 *   cluster's nodes see a node disconnect, nothing else.
 *
 * Exit status 2 for a bad argument or setting, 1 when the transporter cannot be reached.
 */
import { ConfigError } from "../platform/config";
import { connectRepl } from "../tools/repl-connect";

const USAGE = "usage: npm run repl [-- --connect [<nats-url>[,<nats-url>...]]]";

function main(argv: readonly string[]): void {
	if (argv.length === 0) {
		// The one-process shop with the REPL: bin/repl.ts runs on load.
		// eslint-disable-next-line @typescript-eslint/no-require-imports
		require("./repl");
		return;
	}
	const explicit = argv[1];
	if (argv[0] !== "--connect" || argv.length > 2 || explicit?.startsWith("-")) {
		console.error(`[repl] ${USAGE}`);
		process.exit(2);
	}
	connectRepl(explicit).catch(err => {
		if (err instanceof ConfigError) {
			console.error(`[repl] ${err.message}`);
			process.exit(2);
		}
		console.error("[repl] failed:", err instanceof Error ? err.message : err);
		process.exit(1);
	});
}

main(process.argv.slice(2));
