/**
 * `npm run repl`: the one-process shop with Moleculer's REPL on stdin. Commands from
 * docs/operations.md ("The REPL") are typed in; `quit` stops the shop and its embedded Postgres.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort } from "../support/ports";

const ROOT = path.resolve(__dirname, "..", "..");
const MUG = "32817336-f6bd-5b24-a760-00bfcbbb7e8a";

it("answers REPL calls and stops on quit", async () => {
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-repl-"));
	fs.chmodSync(dataDir, 0o755);
	const child = spawn(process.execPath, [path.join(ROOT, "dist", "bin", "repl.js")], {
		cwd: ROOT,
		env: {
			...process.env,
			PORT: String(await freePort()),
			EMBEDDED_POSTGRES_PORT: String(await freePort()),
			METRICS_PORT: "0",
			DATA_DIR: dataDir,
			LOGLEVEL: "warn",
			FORCE_COLOR: "0",
			NO_COLOR: "1"
		},
		stdio: ["pipe", "pipe", "pipe"]
	});
	let out = "";
	// eslint-disable-next-line no-control-regex
	const plain = (d: Buffer): string => d.toString().replace(/\x1b\[[0-9;]*m/g, "");
	child.stdout.on("data", d => (out += plain(d)));
	child.stderr.on("data", d => (out += plain(d)));
	const waitFor = async (re: RegExp, from: number, ms = 60_000): Promise<void> => {
		const end = Date.now() + ms;
		while (!re.test(out.slice(from))) {
			if (Date.now() > end) throw new Error(`timed out waiting for ${re}:\n${out}`);
			if (child.exitCode !== null) throw new Error(`repl exited ${child.exitCode}:\n${out}`);
			await new Promise(r => setTimeout(r, 50));
		}
	};
	const send = async (line: string, expect: RegExp): Promise<string> => {
		const from = out.length;
		child.stdin.write(line + "\n");
		await waitFor(expect, from);
		return out.slice(from);
	};
	try {
		await waitFor(/type "help" for REPL commands/, 0);
		const list = await send("call products.list --pageSize 2 --search usb", /totalPages/);
		expect(list).toMatch(/USB/);
		expect(list).toMatch(/pageSize: 2/);
		const stock = await send(`call inventory.get --productId ${MUG}`, /available/);
		expect(stock).toMatch(new RegExp(`productId: '${MUG}'`));
		const order = await send(
			`call orders.create '{"items":[{"productId":"${MUG}","quantity":1}],"paymentMethod":"tok_visa"}' '{"user":{"id":"00000000-0000-4000-8000-000000000001","email":"ops@example.com","name":"Ops","role":"admin"}}'`,
			/status: '(PENDING|CONFIRMED)'/
		);
		const id = /Response:\s*{\s*id: '([0-9a-f-]{36})'/.exec(order)?.[1];
		expect(id).toBeDefined();
		let confirmed = "";
		for (let i = 0; i < 50 && !confirmed.includes("CONFIRMED"); i++) {
			confirmed = await send(`call orders.get --id ${id}`, /status: '/);
			await new Promise(r => setTimeout(r, 100));
		}
		expect(confirmed).toMatch(/status: 'CONFIRMED'/);
		// Operator commands.
		const sagas = await send("saga list --status COMPLETED", /saga\(s\) with status COMPLETED/);
		const sagaLine = sagas.split("\n").find(l => l.includes(`order ${id}`));
		expect(sagaLine).toMatch(/COMPLETED/);
		const sagaId = /^([0-9a-f-]{36})/.exec(sagaLine!.trim())?.[1];
		const shown = await send(`saga show ${sagaId}`, /"steps"[\s\S]*commitStock[\s\S]*\n\}/);
		expect(shown).toMatch(/"status": "COMPLETED"/);
		expect(shown).toMatch(/"stepName": "reserveStock"/);
		const redrive = await send(`saga redrive ${sagaId}`, />> /);
		expect(redrive).toMatch(/SAGAS_NOT_PARKED/);
		const level = await send(`stock ${MUG}`, /"available"/);
		expect(level).toMatch(new RegExp(`"productId": "${MUG}"`));
		const recent = await send("orders recent --limit 1", /item\(s\)/);
		expect(recent).toContain(id!);
		expect(recent).toMatch(/CONFIRMED/);
		const exited = new Promise<number | null>(r => child.once("exit", code => r(code)));
		child.stdin.write("quit\n");
		expect(await exited).toBe(0);
		// The embedded Postgres went down with the broker: its pid file is gone.
		expect(fs.existsSync(path.join(dataDir, "postgres", "postmaster.pid"))).toBe(false);
	} finally {
		if (child.exitCode === null) child.kill("SIGKILL");
		fs.rmSync(dataDir, { recursive: true, force: true });
	}
}, 120_000);
