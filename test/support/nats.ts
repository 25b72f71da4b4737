/**
 * A real `nats-server` for a suite: JetStream on (a temporary store), client and monitoring ports
 * free on 127.0.0.1. Stop it in afterAll. A missing binary throws, so a suite that needs NATS
 * fails rather than skips (CI installs nats-server in .ci/run).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
	freePort,
	startNatsServer,
	type NatsServerOptions,
	type ServerProcess
} from "../../tools/local-servers";

export interface NatsServer {
	/**
	 * `nats://127.0.0.1:<port>`, with the token (`nats://<token>@...`) when started with one:
	 * what a client uses. Stays the same across `restart()`.
	 */
	readonly url: string;
	/** `http://127.0.0.1:<port>` of the monitoring endpoint (`/varz`, `/connz`). */
	readonly monitorUrl: string;
	/** The current server process id. */
	readonly pid: number;
	output(): string;
	/** Stops the server and removes its store. */
	stop(): Promise<void>;
	/** Stops the server and starts a new one on the same ports and store (clients reconnect). */
	restart(): Promise<void>;
}

/**
 * @param opts.token - clients must present this token (`nats-server --auth`)
 * @param opts.tls - clients must use TLS with this server certificate and key
 */
export async function startNats(
	opts: { token?: string; tls?: NatsServerOptions["tls"] } = {}
): Promise<NatsServer> {
	const port = await freePort();
	const monitorPort = await freePort();
	const storeDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-nats-"));
	const start = (): Promise<ServerProcess> =>
		startNatsServer({
			port,
			monitorPort,
			jetStreamDir: storeDir,
			auth: opts.token ? { token: opts.token } : undefined,
			tls: opts.tls
		});
	let server: ServerProcess;
	try {
		server = await start();
	} catch (err) {
		fs.rmSync(storeDir, { recursive: true, force: true });
		throw err;
	}
	return {
		url: opts.token
			? server.url.replace("nats://", `nats://${encodeURIComponent(opts.token)}@`)
			: server.url,
		monitorUrl: `http://127.0.0.1:${monitorPort}`,
		get pid() {
			return server.pid;
		},
		output: () => server.output(),
		async stop() {
			await server.stop();
			fs.rmSync(storeDir, { recursive: true, force: true });
		},
		async restart() {
			await server.stop();
			server = await start();
		}
	};
}
