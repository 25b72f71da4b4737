/**
 * Secrets in production (issue 16, item 10), with the real processes:
 *
 * - `npm start` (`node dist/bin/start.js`) with `NODE_ENV=production` and a secret that still
 *   holds a placeholder (deploy/k8s/secret.yaml's `CHANGE-ME`, a documented example value) exits
 *   non-zero, its output naming the variable and never its value;
 * - one node per process (`moleculer-runner`) likewise, for a placeholder in `DATABASE_URL`;
 * - only the nodes that sign or verify tokens need `JWT_SECRET`: a production payments node
 *   without it starts (and stops) normally.
 *
 * Needs `npm run build` (the processes run dist/).
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startShopProcess } from "../support/shop-process";

const ROOT = path.resolve(__dirname, "..", "..");
const RUNNER = path.join(ROOT, "node_modules", "moleculer", "bin", "moleculer-runner.js");
const JWT_SECRET = "secrets-e2e-secret-secrets-e2e-secret-0123";
const ADMIN_PASSWORD = "secrets-e2e-admin-pw-7d41";

/** What a start that must fail did: its exit message, or the shop it started (then stopped). */
async function failedStart(env: Record<string, string>): Promise<string> {
	const started = await startShopProcess({
		env: { NODE_ENV: "production", LOGLEVEL: "warn", ...env },
		timeoutMs: 60_000
	}).then(
		shop => shop,
		(err: Error) => err.message
	);
	if (typeof started === "string") return started;
	await started.stop();
	fs.rmSync(started.dataDir, { recursive: true, force: true });
	throw new Error(`the shop started with ${JSON.stringify(env)}:\n${started.output()}`);
}

/**
 * Runs one `moleculer-runner` node of `service` until it prints `until` (then SIGTERM) or exits;
 * resolves with its exit code and output. Killed after `timeoutMs` whatever happens.
 */
function runNode(
	service: string,
	env: Record<string, string>,
	until: RegExp,
	timeoutMs = 60_000
): Promise<{ code: number | null; output: string; sawUntil: boolean }> {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-secrets-"));
	const child = spawn(
		process.execPath,
		[
			RUNNER,
			"--config",
			path.join(ROOT, "dist", "moleculer.config.js"),
			path.join(ROOT, "dist", "services", service, `${service}.service.js`)
		],
		{
			cwd: ROOT,
			env: {
				PATH: `${path.join(ROOT, "node_modules", ".bin")}:${process.env.PATH ?? ""}`,
				HOME: process.env.HOME ?? "/tmp",
				DATA_DIR: dataDir,
				METRICS_PORT: "0",
				HEALTH_PORT: "0",
				LOGLEVEL: "info",
				...env
			},
			stdio: ["ignore", "pipe", "pipe"]
		}
	);
	let output = "";
	let sawUntil = false;
	const onData = (d: Buffer): void => {
		output += d.toString();
		if (!sawUntil && until.test(output)) {
			sawUntil = true;
			child.kill("SIGTERM");
		}
	};
	child.stdout!.on("data", onData);
	child.stderr!.on("data", onData);
	const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
	return new Promise(resolve => {
		child.once("exit", code => {
			clearTimeout(timer);
			fs.rmSync(dataDir, { recursive: true, force: true });
			resolve({ code, output, sawUntil });
		});
	});
}

describe("secrets in production", () => {
	it.each<[string, Record<string, string>, string]>([
		[
			"JWT_SECRET holding CHANGE-ME",
			{ JWT_SECRET: "CHANGE-ME-CHANGE-ME-CHANGE-ME-CHANGE-ME", ADMIN_PASSWORD },
			"JWT_SECRET"
		],
		[
			"ADMIN_PASSWORD as deploy/k8s/secret.yaml shipped it",
			{ JWT_SECRET, ADMIN_PASSWORD: "CHANGE-ME-admin-password" },
			"ADMIN_PASSWORD"
		],
		[
			"ADMIN_PASSWORD the sample output of docs/operations.md shows",
			{ JWT_SECRET, ADMIN_PASSWORD: "YSIRbbRIESlGR8xo" },
			"ADMIN_PASSWORD"
		]
	])(
		"npm start with %s exits non-zero naming it",
		async (_label, env, name) => {
			const message = await failedStart(env);
			expect(message).toMatch(/shop exited with [1-9]/);
			expect(message).toContain(`${name} still holds a placeholder`);
			// The value itself is not repeated.
			expect(message).not.toContain(env[name]);
		},
		90_000
	);

	it("a moleculer-runner node with a placeholder in DATABASE_URL exits non-zero naming it", async () => {
		const r = await runNode(
			"payments",
			{
				NODE_ENV: "production",
				DATABASE_URL: "postgres://shop:CHANGE-ME@127.0.0.1:1"
			},
			/started successfully/
		);
		expect(r.sawUntil).toBe(false);
		expect(r.code).not.toBe(0);
		expect(r.code).not.toBeNull();
		expect(r.output).toContain("DATABASE_URL still holds a placeholder");
	}, 90_000);

	it("a production payments node starts without JWT_SECRET (it neither signs nor verifies tokens)", async () => {
		const databaseUrl = process.env.DATABASE_URL;
		if (!databaseUrl) throw new Error("DATABASE_URL is unset: jest's global-setup starts it");
		const r = await runNode(
			"payments",
			{
				NODE_ENV: "production",
				DATABASE_URL: databaseUrl,
				DATABASE_PREFIX: `s${process.pid}_`
			},
			/started successfully/
		);
		if (!r.sawUntil) console.log(r.output);
		expect(r.sawUntil).toBe(true);
		expect(r.output).not.toMatch(/JWT_SECRET/);
	}, 90_000);
});
