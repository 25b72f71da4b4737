/**
 * `node bench/overload-probe.mjs`: the one-process shop (`npm start` form, `NODE_ENV=production`,
 * the default log level) on an embedded Postgres, offered orders OPEN-LOOP: a fixed arrival rate,
 * each `POST /api/orders` sent at its time whatever the earlier ones became (a closed loop, like
 * bench/saga-probe.mjs, slows down with the shop and so never overloads it; users do not). For each
 * run `<rate>x<seconds>` (env `RUNS`, default `140x20`) it prints: orders offered, accepted (202)
 * and refused (503 `ORDERS_OVERLOADED`, with whether each carried `Retry-After`), the POST's own
 * answer time p50/p99 for both (ms, the client's clock: "refused at once"), and for the accepted
 * orders 202 → CONFIRMED p50/p99/max (ms, the database's clock: `updated_at - created_at`, as
 * saga-probe), over the whole run and after the first `WARMUP` seconds (5), and confirmed/s.
 * Needs `npm run build`.
 *
 * Env: `P` products (8), `CUSTOMERS` (64: the per-customer bound never refuses first),
 * `SHOPENV` extra shop env as JSON (e.g. `{"SAGA_TARGET_LATENCY_MS":"0"}`: the fixed
 * `SAGA_MAX_IN_FLIGHT` alone, as before the adaptive limit), `SHOW=1` the shop's logs.
 */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
const require = createRequire(import.meta.url);
const path = require("node:path"),
	fs = require("node:fs"),
	os = require("node:os");
const { startEmbeddedPostgres } = require("../dist/tools/embedded-postgres.js");
const { freePort } = require("../dist/tools/local-servers.js");
const { spawn } = require("node:child_process");
const { apiClient, ordersDatabase, seedShop, waitReady } = await import("./probe-shop.mjs");
const { performance } = require("node:perf_hooks");
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PRODUCTS = Number(process.env.P ?? 8);
const CUSTOMERS = Number(process.env.CUSTOMERS ?? 64);
const WARMUP_S = Number(process.env.WARMUP ?? 5);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "overload-probe-"));
fs.chmodSync(tmp, 0o755);
const pgPort = await freePort();
const pg = await startEmbeddedPostgres({ dataDir: path.join(tmp, "pg"), port: pgPort });
const port = await freePort();
const prefix = "o_";
const env = {
	PATH: `${ROOT}/node_modules/.bin:${process.env.PATH}`,
	HOME: process.env.HOME,
	NODE_ENV: "production",
	DATABASE_URL: pg.url,
	DATABASE_PREFIX: prefix,
	DATA_DIR: path.join(tmp, "d"),
	PORT: String(port),
	METRICS_PORT: "0",
	HEALTH_PORT: "0",
	RATE_LIMIT_MAX: "0",
	JWT_SECRET: "bench-secret-bench-secret-bench-secret-0123456789",
	ADMIN_EMAIL: "admin@example.com",
	ADMIN_PASSWORD: "bench-admin-password-1",
	...JSON.parse(process.env.SHOPENV ?? "{}")
};
const shop = spawn(process.execPath, [path.join(ROOT, "dist/bin/start.js")], {
	env,
	stdio: ["ignore", "pipe", "pipe"],
	cwd: ROOT
});
try {
	await waitReady(shop);
	// Always drained: a full pipe would block the shop's logging.
	shop.stdout.on("data", d => process.env.SHOW && process.stdout.write(d));
	shop.stderr.on("data", d => process.env.SHOW && process.stderr.write(d));
	await main();
} finally {
	shop.kill("SIGTERM");
	await Promise.race([
		new Promise(r => shop.once("exit", r)),
		new Promise(r => setTimeout(r, 20_000))
	]);
	if (shop.exitCode === null && shop.signalCode === null) shop.kill("SIGKILL");
	await pg.stop();
	fs.rmSync(tmp, { recursive: true, force: true });
}

async function main() {
	const api = apiClient(`http://127.0.0.1:${port}`);
	const { pids, toks } = await seedShop(api, {
		adminEmail: env.ADMIN_EMAIL,
		adminPassword: env.ADMIN_PASSWORD,
		products: PRODUCTS,
		customers: CUSTOMERS,
		tag: "OV"
	});
	const db = await ordersDatabase(pg.url, prefix);
	try {
		for (const spec of (process.env.RUNS ?? "140x20").split(",")) {
			const [rate, secs] = spec.split("x").map(Number);
			console.log(JSON.stringify(await run(api, db, pids, toks, rate, secs)));
		}
	} finally {
		await db.end();
	}
}

/** The `p` quantile (nearest rank) of `xs`, rounded; null when empty. */
function pct(xs, p) {
	if (xs.length === 0) return null;
	const s = [...xs].sort((a, b) => a - b);
	return Math.round(s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]);
}

/** Offers `rate` orders/s for `secs` s, open-loop; waits until every accepted saga ended. */
async function run(api, db, pids, toks, rate, secs) {
	const t0db = (await db.query("select now() t")).rows[0].t;
	const n = Math.round(rate * secs);
	const answers = [];
	const sent = [];
	const start = performance.now();
	let lateMax = 0;
	for (let i = 0; i < n; i++) {
		const due = start + (i * 1000) / rate;
		const wait = due - performance.now();
		if (wait > 1) await new Promise(r => setTimeout(r, wait));
		lateMax = Math.max(lateMax, performance.now() - due);
		sent.push(
			api(
				"POST",
				"/api/orders",
				{
					items: [{ productId: pids[i % pids.length], quantity: 1 }],
					paymentMethod: "tok_visa"
				},
				toks[i % toks.length]
			).then(
				r => answers.push(r),
				err => answers.push({ status: 0, ms: 0, body: { type: String(err) } })
			)
		);
	}
	const offeredS = (performance.now() - start) / 1000;
	await Promise.all(sent);
	const accepted = answers.filter(a => a.status === 202);
	const refused = answers.filter(a => a.status === 503);
	const other = {};
	for (const a of answers)
		if (a.status !== 202 && a.status !== 503) {
			const k = `${a.status} ${a.body?.type ?? ""}`;
			other[k] = (other[k] ?? 0) + 1;
		}
	for (;;) {
		const r = await db.query(
			"select count(*)::int n from orders where created_at >= $1 and status not in ('CONFIRMED','CANCELLED')",
			[t0db]
		);
		if (r.rows[0].n === 0) break;
		await new Promise(r => setTimeout(r, 200));
	}
	const stats = async from => {
		const r = await db.query(
			`select extract(epoch from updated_at - created_at) * 1000 ms, status
			 from orders where created_at >= $1`,
			[from]
		);
		const confirmed = r.rows.filter(x => x.status === "CONFIRMED").map(x => Number(x.ms));
		return {
			confirmed: confirmed.length,
			cancelled: r.rows.length - confirmed.length,
			p50: pct(confirmed, 0.5),
			p99: pct(confirmed, 0.99),
			max: pct(confirmed, 1)
		};
	};
	const span = await db.query(
		`select extract(epoch from max(updated_at) - min(created_at)) s from orders
		 where created_at >= $1 and status = 'CONFIRMED'`,
		[t0db]
	);
	const all = await stats(t0db);
	return {
		rate,
		secs,
		offered: n,
		offeredPerSec: +(n / offeredS).toFixed(1),
		senderLateMaxMs: Math.round(lateMax),
		accepted: accepted.length,
		refused: refused.length,
		refusedShare: +(refused.length / n).toFixed(3),
		refusedWithRetryAfter: refused.filter(a => a.retryAfter !== null).length,
		refusedTypes: [...new Set(refused.map(a => a.body?.type))],
		other,
		answerMs: {
			accepted: {
				p50: pct(
					accepted.map(a => a.ms),
					0.5
				),
				p99: pct(
					accepted.map(a => a.ms),
					0.99
				)
			},
			refused: {
				p50: pct(
					refused.map(a => a.ms),
					0.5
				),
				p99: pct(
					refused.map(a => a.ms),
					0.99
				)
			}
		},
		toConfirmedMs: all,
		afterWarmup: await stats(new Date(t0db.getTime() + WARMUP_S * 1000)),
		confirmedPerSec: +(all.confirmed / Number(span.rows[0].s)).toFixed(1)
	};
}
