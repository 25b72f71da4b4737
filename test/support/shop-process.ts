/**
 * Runs the shop the way `npm start` does: `node dist/bin/start.js` as a child process (Node 24,
 * the pinned runtime), with its own embedded Postgres in a fresh DATA_DIR, on free ports.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort } from "./ports";

const ROOT = path.resolve(__dirname, "..", "..");

export interface ShopProcess {
	url: string;
	dataDir: string;
	env: Record<string, string>;
	/** Everything the process printed so far. */
	output(): string;
	/** Milliseconds from spawn to "Ready". */
	startupMs: number;
	/** SIGTERM, then wait for exit; resolves with the exit code. */
	stop(): Promise<number | null>;
	child: ChildProcess;
}

/** Starts the shop; resolves when it prints "Ready". */
export async function startShopProcess(
	opts: { dataDir?: string; env?: Record<string, string>; timeoutMs?: number } = {}
): Promise<ShopProcess> {
	const entry = path.join(ROOT, "dist", "bin", "start.js");
	if (!fs.existsSync(entry))
		throw new Error(`${entry} is missing: run "npm run build" first (npm test does)`);
	const dataDir = opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), "shop-e2e-"));
	fs.chmodSync(dataDir, 0o755);
	const port = await freePort();
	const env: Record<string, string> = {
		PATH: `${path.join(ROOT, "node_modules", ".bin")}:${process.env.PATH ?? ""}`,
		HOME: process.env.HOME ?? "/tmp",
		PORT: String(port),
		EMBEDDED_POSTGRES_PORT: String(await freePort()),
		METRICS_PORT: "0",
		HEALTH_PORT: "0",
		DATA_DIR: dataDir,
		LOGLEVEL: "info",
		...opts.env
	};
	const child = spawn(process.execPath, [entry], {
		cwd: ROOT,
		env,
		stdio: ["ignore", "pipe", "pipe"]
	});
	let out = "";
	child.stdout!.on("data", d => (out += d.toString()));
	child.stderr!.on("data", d => (out += d.toString()));
	const t0 = Date.now();
	await new Promise<void>((resolve, reject) => {
		const timer = setTimeout(
			() => reject(new Error(`shop did not start in time:\n${out}`)),
			opts.timeoutMs ?? 90_000
		);
		const onData = (): void => {
			if (out.includes("[shop] Ready in")) {
				clearTimeout(timer);
				resolve();
			}
		};
		child.stdout!.on("data", onData);
		child.once("exit", code => {
			clearTimeout(timer);
			reject(new Error(`shop exited with ${code}:\n${out}`));
		});
	});
	const startupMs = Date.now() - t0;
	return {
		// `opts.env` may name the port (a restart on the same address).
		url: `http://127.0.0.1:${env.PORT}`,
		dataDir,
		env,
		output: () => out,
		startupMs,
		child,
		stop: () =>
			new Promise(resolve => {
				if (child.exitCode !== null) return resolve(child.exitCode);
				child.once("exit", code => resolve(code));
				child.kill("SIGTERM");
			})
	};
}

/** JSON over HTTP against the gateway. */
export async function api(
	base: string,
	method: string,
	url: string,
	opts: { token?: string; body?: unknown; headers?: Record<string, string>; raw?: string } = {}
): Promise<{ status: number; body: any; headers: Headers }> {
	const headers: Record<string, string> = { ...opts.headers };
	if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
	let body: string | undefined;
	if (opts.raw !== undefined) body = opts.raw;
	else if (opts.body !== undefined) {
		body = JSON.stringify(opts.body);
		headers["Content-Type"] = headers["Content-Type"] ?? "application/json";
	}
	const res = await fetch(base + url, { method, headers, body });
	const text = await res.text();
	let parsed: unknown = text;
	try {
		parsed = text ? JSON.parse(text) : null;
	} catch {
		/* not JSON */
	}
	return { status: res.status, body: parsed, headers: res.headers };
}
