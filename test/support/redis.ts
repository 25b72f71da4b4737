/**
 * A real `redis-server` for a suite on a free 127.0.0.1 port, without persistence. Stop it in
 * afterAll. A missing binary throws, so a suite that needs Redis fails rather than skips (CI
 * installs redis-server in .ci/run).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort, startRedisServer, type ServerProcess } from "../../tools/local-servers";

export interface RedisServer {
	/** `redis://127.0.0.1:<port>`: stays the same across `restart()`. */
	readonly url: string;
	readonly port: number;
	readonly pid: number;
	output(): string;
	stop(): Promise<void>;
	/** Stops the server and starts an empty one on the same port (clients reconnect). */
	restart(): Promise<void>;
}

export async function startRedis(): Promise<RedisServer> {
	const port = await freePort();
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-redis-"));
	const start = (): Promise<ServerProcess> => startRedisServer({ port, dir });
	let server: ServerProcess;
	try {
		server = await start();
	} catch (err) {
		fs.rmSync(dir, { recursive: true, force: true });
		throw err;
	}
	return {
		url: server.url,
		port,
		get pid() {
			return server.pid;
		},
		output: () => server.output(),
		async stop() {
			await server.stop();
			fs.rmSync(dir, { recursive: true, force: true });
		},
		async restart() {
			await server.stop();
			server = await start();
		}
	};
}
