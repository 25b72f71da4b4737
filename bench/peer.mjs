#!/usr/bin/env node
/**
 * The shop against its peer, DBOS Transact doing the same order saga (issue 18), on ONE Postgres,
 * in interleaved rounds: each round runs the peer's HTTP benchmark (`bench-http.js`: 32
 * connections, workflows completed/s from the first accept to the last completion) and then
 * `npm run bench` with `BENCH_WORKLOADS=orders` (the shop in the production configuration,
 * orders confirmed/s from the first order's creation to the last confirmation), so both meet the
 * same machine load; the ratio of each round is the figure, not the absolute numbers.
 *
 * Needs: a Postgres both can use (Debian's postgresql-15:
 * `pg_createcluster 15 bench -p 5433 -- --auth=trust && pg_ctlcluster 15 bench start`), the
 * peer copied out of `../shared/peers/dbos-saga` with its dependencies installed
 * (`cp -r ../shared/peers/dbos-saga /tmp/dbos && cd /tmp/dbos && npm ci`) and its three
 * databases (`createdb -h /var/run/postgresql -p 5433 -U postgres shop_inventory` … `shop_payments`,
 * `shop_orders`: its README), and `npm run build` done here.
 *
 * ```sh
 * PEER_DIR=/tmp/dbos ROUNDS=3 node bench/peer.mjs
 * ```
 * Settings: `PEER_DIR` (/tmp/dbos), `PGSOCK` (/var/run/postgresql), `PGPORT` (5433), `ROUNDS` (2),
 * `SECONDS` (15 per run), `CONNECTIONS` (32), `FORMS` (`single,cluster`: the shop's forms, as
 * `BENCH_FORMS`), `BENCH_SHOP_ENV` passed on. Prints one line per round and the medians; writes
 * `bench/results/peer.json`.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PEER_DIR = process.env.PEER_DIR ?? "/tmp/dbos";
const PGSOCK = process.env.PGSOCK ?? "/var/run/postgresql";
const PGPORT = process.env.PGPORT ?? "5433";
const ROUNDS = Number(process.env.ROUNDS ?? 2);
const SECONDS = process.env.SECONDS ?? "15";
const CONNECTIONS = process.env.CONNECTIONS ?? "32";
const FORMS = process.env.FORMS ?? "single,cluster";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "shop-peer-"));
const require = createRequire(import.meta.url);
const { childrenCpuMs, postgresCpuMeter } = require(path.join(ROOT, "dist", "bench", "lib.js"));
const { Client } = require("pg");

/** The shared Postgres's CPU meter (bench/lib.ts `postgresCpuMeter`), or null. */
async function postgresMeter() {
	const c = new Client({
		host: PGSOCK,
		port: Number(PGPORT),
		user: "postgres",
		database: "postgres"
	});
	await c.connect();
	try {
		const { rows } = await c.query(
			"SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
		);
		return postgresCpuMeter(rows[0].pid);
	} finally {
		await c.end();
	}
}
const pgMeter = await postgresMeter();

const load = () => os.loadavg()[0].toFixed(1);

/** One run of the peer; its workflows completed per second. */
function peerRun(round) {
	const out = path.join(tmp, `peer-${round}.json`);
	const cpu0 = { node: childrenCpuMs(), postgres: pgMeter?.() ?? 0 };
	const r = spawnSync(process.execPath, ["bench-http.js", out], {
		cwd: PEER_DIR,
		env: {
			...process.env,
			PGSOCK,
			PGPORT,
			HTTP_SECONDS: SECONDS,
			HTTP_CONNECTIONS: CONNECTIONS
		},
		stdio: ["ignore", "ignore", "inherit"]
	});
	if (r.status !== 0) throw new Error(`the peer's bench-http.js exited with ${r.status}`);
	const d = JSON.parse(fs.readFileSync(out, "utf8"));
	if (!d.invariants?.ok)
		throw new Error(`the peer's invariants failed: ${d.invariants?.problems}`);
	// Whole run: its database reset, DBOS's launch, the warm-up, the load generator (autocannon)
	// and the invariant checks included, per workflow of the warm-up and the timed phase.
	const workflows = (d.warmup?.accepted ?? 0) + d.workflows.completed;
	const perWorkflow = ms => Math.round((ms / Math.max(1, workflows)) * 10) / 10;
	return {
		cpuMsPerWorkflow: {
			node: perWorkflow(childrenCpuMs() - cpu0.node),
			postgres: pgMeter ? perWorkflow(pgMeter() - cpu0.postgres) : null
		},
		completedPerS: d.workflows.completed_per_s,
		p50Ms: Math.round(d.workflows.start_to_completion_ms.p50),
		p99Ms: Math.round(d.workflows.start_to_completion_ms.p99)
	};
}

/** One `npm run bench` of the shop's order workload; confirmed/s per form. */
function shopRun(round) {
	const out = path.join(tmp, `shop-${round}.json`);
	const r = spawnSync(process.execPath, [path.join(ROOT, "dist", "bench", "run.js")], {
		cwd: ROOT,
		env: {
			...process.env,
			DATABASE_URL: `postgres://postgres@localhost:${PGPORT}/postgres?host=${PGSOCK}`,
			BENCH_FORMS: FORMS,
			BENCH_WORKLOADS: "orders",
			BENCH_DURATION_S: SECONDS,
			BENCH_CONNECTIONS: CONNECTIONS,
			BENCH_OUT: out
		},
		stdio: ["ignore", "ignore", "inherit"]
	});
	if (r.status !== 0) throw new Error(`npm run bench exited with ${r.status}`);
	const d = JSON.parse(fs.readFileSync(out, "utf8"));
	const res = {};
	for (const f of d.figures ?? []) {
		if (f.name === "(c) orders confirmed")
			res[f.form] = {
				confirmedPerS: f.value,
				p50Ms: f.p50,
				p99Ms: f.p99,
				cpuMsPerOrder: f.extra?.cpuMsPerOrder
			};
	}
	return res;
}

const median = xs => {
	const s = [...xs].sort((a, b) => a - b);
	return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const rounds = [];
for (let i = 1; i <= ROUNDS; i++) {
	const before = load();
	const peer = peerRun(i);
	const shop = shopRun(i);
	const ratios = Object.fromEntries(
		Object.entries(shop).map(([form, s]) => [
			form,
			Number((s.confirmedPerS / peer.completedPerS).toFixed(2))
		])
	);
	rounds.push({ round: i, loadAverage: before, peer, shop, ratios });
	console.log(
		`round ${i} (load ${before}): peer ${peer.completedPerS}/s ` +
			`(CPU ms per workflow: node ${peer.cpuMsPerWorkflow.node}, Postgres ${peer.cpuMsPerWorkflow.postgres}); ` +
			Object.entries(shop)
				.map(
					([f, s]) =>
						`shop ${f} ${s.confirmedPerS}/s (${ratios[f]}×; CPU ms per order: ` +
						`shop ${s.cpuMsPerOrder?.shop}, Postgres ${s.cpuMsPerOrder?.postgres})`
				)
				.join(", ")
	);
}
const forms = Object.keys(rounds[0]?.shop ?? {});
const summary = Object.fromEntries(forms.map(f => [f, median(rounds.map(r => r.ratios[f]))]));
console.log(`median ratio shop ÷ peer: ${JSON.stringify(summary)}`);
const file = path.join(ROOT, "bench", "results", "peer.json");
fs.mkdirSync(path.dirname(file), { recursive: true });
fs.writeFileSync(file, JSON.stringify({ rounds, medianRatio: summary }, null, 2));
fs.rmSync(tmp, { recursive: true, force: true });
