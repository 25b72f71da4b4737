/**
 * `npm run repl -- --connect`: a REPL node (no services) joining a running cluster over its NATS
 * transporter (bin/repl-cli.ts has the whole description). Kept here so that the address
 * discovery can be tested without starting a REPL.
 */
import net from "node:net";
import os from "node:os";
import fs from "node:fs";
import type { BrokerOptions } from "moleculer";
import { ServiceBroker } from "moleculer";
import { config, resetConfig } from "../platform/config";
import { redactUrl } from "../platform/nats-options";
import { runFile } from "./cluster-recovery";
import { isSameProcess, processInfo } from "./process-info";

/**
 * The NATS URLs of the nats-server(s) a running `npm run cluster` started on `dataDir`, from its
 * run file and each server's `-p <port>`; `null` when there is none.
 */
export function clusterNatsUrls(dataDir: string): string | null {
	let run: { groups?: { pgid: number; startTime: string; what: string }[] };
	try {
		run = JSON.parse(fs.readFileSync(runFile(dataDir), "utf8")) as typeof run;
	} catch {
		return null;
	}
	const urls: string[] = [];
	for (const g of run.groups ?? []) {
		if (!g.what.startsWith("nats-server") || !isSameProcess(g.pgid, g.startTime)) continue;
		const argv = processInfo(g.pgid)?.argv ?? [];
		const p = argv.indexOf("-p");
		const a = argv.indexOf("-a");
		if (p >= 0 && argv[p + 1])
			urls.push(`nats://${a >= 0 ? argv[a + 1] : "127.0.0.1"}:${argv[p + 1]}`);
	}
	return urls.length > 0 ? urls.join(",") : null;
}

/** Whether a TCP connection to `host:port` opens within `ms`. */
function reachable(host: string, port: number, ms: number): Promise<boolean> {
	return new Promise(resolve => {
		const socket = net.connect({ host, port });
		const done = (ok: boolean): void => {
			socket.destroy();
			resolve(ok);
		};
		socket.setTimeout(ms, () => done(false));
		socket.once("connect", () => done(true));
		socket.once("error", () => done(false));
	});
}

/**
 * Joins the cluster and opens the REPL on stdin.
 * @param explicit the URL(s) given after `--connect`, if any
 * @throws ConfigError when `TRANSPORTER` (or `explicit`) is not a NATS URL list
 */
export async function connectRepl(explicit: string | undefined): Promise<void> {
	const log = (m: string): void => console.log(`[repl] ${m}`);
	const transporter =
		explicit ??
		config().transporter ??
		clusterNatsUrls(config().dataDir) ??
		"nats://127.0.0.1:4222";
	// This node serves nothing: no metrics or health port to collide with the cluster's.
	Object.assign(process.env, {
		TRANSPORTER: transporter,
		METRICS_PORT: "0",
		HEALTH_PORT: "0",
		NODE_ID: `repl-${os.hostname()}-${process.pid}`
	});
	resetConfig();
	config(); // validates TRANSPORTER (exit status 2 when it is not a NATS URL list)
	const first = new URL(transporter.split(",")[0]!);
	if (!(await reachable(first.hostname, Number(first.port || 4222), 3_000))) {
		console.error(
			`[repl] nothing answers on ${redactUrl(first.toString())}: is the cluster running? (npm run cluster prints its transporter; pass it as --connect <url> or TRANSPORTER)`
		);
		process.exit(1);
	}
	// The broker options read the environment set above: load them now.
	// eslint-disable-next-line @typescript-eslint/no-require-imports
	const brokerConfig = require("../moleculer.config") as BrokerOptions;
	const broker = new ServiceBroker(brokerConfig);
	await broker.start();
	// Give the other nodes' INFO packets a moment to arrive before the first prompt.
	const deadline = Date.now() + 3_000;
	const others = (): string[] =>
		(
			broker.registry.nodes.list({ onlyAvailable: true, withServices: false }) as {
				id: string;
			}[]
		)
			.map(n => n.id)
			.filter(id => id !== broker.nodeID);
	while (others().length === 0 && Date.now() < deadline)
		await new Promise(r => setTimeout(r, 100));
	const nodes = others();
	log(
		`node ${broker.nodeID} joined namespace "${broker.namespace}" over ${redactUrl(transporter)}: ${
			nodes.length > 0
				? `${nodes.length} other node(s): ${nodes.sort().join(", ")}`
				: "no other node seen yet (is the cluster on this transporter?)"
		}`
	);
	log(`type "help" for commands ("nodes", "services", "call <action>"), "quit" to leave.`);
	// moleculer-repl stops the broker and exits (status 0) on quit or Ctrl-D.
	broker.repl();
}
