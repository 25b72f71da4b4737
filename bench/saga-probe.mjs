/**
 * `npm run bench:saga`: where an order's time and CPU go, in the one-process shop (`npm start`
 * form) on an embedded Postgres. For each run `<orders>x<concurrency>` (env `RUNS`, default
 * `50x1,200x8,1000x32`) it places the orders, waits until every saga ended, and prints: orders
 * accepted and confirmed per second, 202 → CONFIRMED p50/p99 (ms, the database's clock), the
 * saga steps' durations (from the step log), and CPU ms per order of the shop process and of all
 * Postgres processes (from /proc). `COUNT=1` also counts the SQL statements per order by text
 * (bench/query-counter.cjs preloaded into the shop); `PGBREAK=1` splits Postgres CPU by backend;
 * `HOT=1` lists each table's updates and how many were HOT; `PROF=1` writes a CPU profile of the shop to bench/results/saga-profile/. Needs `npm run build`.
 * Env: `P` products (8), `W` at most that many orders in flight (default: no bound), `SHOPENV`
 * extra shop env as JSON.
 */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
const require = createRequire(import.meta.url);
const path = require("node:path"),
	fs = require("node:fs"),
	os = require("node:os");
const { startEmbeddedPostgres } = require("../dist/tools/embedded-postgres.js");
const { freePort } = require("../dist/tools/local-servers.js");
const { Client } = require("pg");
const { spawn } = require("node:child_process");
const { apiClient, ordersDatabase, seedShop, waitReady } = await import("./probe-shop.mjs");
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PRODUCTS = Number(process.env.P ?? 8);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "saga-probe-"));
fs.chmodSync(tmp, 0o755);
const pgPort = await freePort();
const pg = await startEmbeddedPostgres({ dataDir: path.join(tmp, "pg"), port: pgPort });
const port = await freePort();
const prefix = "p_";
const env = {
	PATH: `${ROOT}/node_modules/.bin:${process.env.PATH}`,
	HOME: process.env.HOME,
	DATABASE_URL: pg.url,
	DATABASE_PREFIX: prefix,
	DATA_DIR: path.join(tmp, "d"),
	PORT: String(port),
	METRICS_PORT: "0",
	HEALTH_PORT: "0",
	RATE_LIMIT_MAX: "0",
	LOGLEVEL: "warn",
	JWT_SECRET: "bench-secret-bench-secret-bench-secret-0123456789",
	ADMIN_EMAIL: "admin@example.com",
	ADMIN_PASSWORD: "bench-admin-password-1",
	...JSON.parse(process.env.SHOPENV ?? "{}")
};
if (process.env.COUNT)
	env.NODE_OPTIONS = `--require ${path.join(ROOT, "bench", "query-counter.cjs")}`;
env.QUERY_COUNTS_FILE = path.join(tmp, "counts.json");
const shop = spawn(
	process.execPath,
	[
		...(process.env.PROF
			? [
					"--cpu-prof",
					`--cpu-prof-dir=${path.join(ROOT, "bench", "results", "saga-profile")}`
				]
			: []),
		path.join(ROOT, "dist/bin/start.js")
	],
	{ env, stdio: ["ignore", "pipe", "pipe"], cwd: ROOT }
);
await waitReady(shop);
// The last of the shop's output, printed if it does not stop in time.
let out = "";
const tail = d => (out = (out + d).slice(-3000));
shop.stdout.on("data", tail);
shop.stderr.on("data", tail);
shop.stdout.on("data", d => process.env.SHOW && process.stdout.write(d));
shop.stderr.on("data", d => process.stderr.write(d));
const api = apiClient(`http://127.0.0.1:${port}`);
// 64 customers: the per-customer bound (ORDERS_MAX_IN_FLIGHT_PER_CUSTOMER, 20) never refuses first.
const { pids, toks } = await seedShop(api, {
	adminEmail: env.ADMIN_EMAIL,
	adminPassword: env.ADMIN_PASSWORD,
	products: PRODUCTS,
	customers: 64,
	tag: "PR"
});
const db = await ordersDatabase(pg.url, prefix);
function cpu(pid) {
	const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
	return (Number(f[11]) + Number(f[12])) * 10;
}
function pgBreak() {
	const m = {};
	for (const p of fs.readdirSync("/proc").filter(x => /^\d+$/.test(x))) {
		try {
			const c = fs.readFileSync(`/proc/${p}/comm`, "utf8").trim();
			if (c.startsWith("postgres")) {
				const t = fs
					.readFileSync(`/proc/${p}/cmdline`, "utf8")
					.replace(/\0/g, " ")
					.replace(/\(\d+\)/, "")
					.replace(/ (idle|SELECT|UPDATE|INSERT|COMMIT|BEGIN).*$/, "")
					.trim();
				const f = fs.readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1].split(" ");
				m[t] = m[t] ?? { u: 0, s: 0 };
				m[t].u += Number(f[11]) * 10;
				m[t].s += Number(f[12]) * 10;
			}
		} catch {
			// The process ended meanwhile.
		}
	}
	return m;
}
function pgCpu() {
	let t = 0;
	for (const p of fs.readdirSync("/proc").filter(x => /^\d+$/.test(x))) {
		try {
			const c = fs.readFileSync(`/proc/${p}/comm`, "utf8").trim();
			if (c === "postgres" || c.startsWith("postgres")) {
				t += cpu(p);
			}
		} catch {
			// The process ended meanwhile.
		}
	}
	return t;
}
async function run(n, c) {
	if (process.env.COUNT) shop.kill("SIGUSR2");
	const c0 = cpu(shop.pid),
		p0 = pgCpu();
	const b0 = pgBreak();
	const t0 = (await db.query("select now()")).rows[0].now;
	let k = 0;
	let refused = 0;
	// `W`: at most W orders in flight (placed, not yet ended), so the shop runs at its capacity
	// without an ever-growing queue of sagas (whose steps then time out and retry).
	const window = Number(process.env.W ?? 0);
	let ended = 0;
	let polling = window > 0;
	const poller = (async () => {
		while (polling) {
			const r = await db.query(
				"select count(*)::int n from orders where created_at >= $1 and status in ('CONFIRMED','CANCELLED')",
				[t0]
			);
			ended = r.rows[0].n;
			await new Promise(r => setTimeout(r, 10));
		}
	})();
	const st = Date.now();
	await Promise.all(
		Array.from({ length: c }, async () => {
			while (k < n) {
				while (window > 0 && k - refused - ended >= window)
					await new Promise(r => setTimeout(r, 2));
				if (k >= n) break;
				const i = k++;
				const r = await api(
					"POST",
					"/api/orders",
					{
						items: [{ productId: pids[i % pids.length], quantity: 1 }],
						paymentMethod: "tok_visa"
					},
					toks[i % toks.length]
				);
				if (r.status !== 202) refused++;
			}
		})
	);
	const acc = (Date.now() - st) / 1000;
	polling = false;
	await poller;
	for (;;) {
		const r = await db.query(
			"select count(*)::int n from orders where created_at >= $1 and status not in ('CONFIRMED','CANCELLED')",
			[t0]
		);
		if (r.rows[0].n === 0) break;
		await new Promise(r => setTimeout(r, 100));
	}
	// The events too: every outbox drained (so the CPU below includes publishing them and the
	// consumers' work, e.g. the notification of each confirmed order).
	const drainStart = Date.now();
	const outboxes = [];
	for (const svc of ["orders", "inventory", "payments"]) {
		const u = new URL(pg.url);
		u.pathname = `/${prefix}${svc}`;
		const c2 = new Client({ connectionString: u.toString() });
		await c2.connect();
		outboxes.push(c2);
	}
	for (;;) {
		let pending = 0;
		for (const c2 of outboxes)
			pending += (
				await c2.query("select count(*)::int n from outbox where published_at is null")
			).rows[0].n;
		if (pending === 0 || Date.now() - drainStart > 120_000) break;
		await new Promise(r => setTimeout(r, 100));
	}
	for (const c2 of outboxes) await c2.end();
	const eventsDrainedMs = Date.now() - drainStart;
	const o = await db.query(
		`select percentile_cont(array[0.5,0.99]) within group (order by extract(epoch from updated_at-created_at)*1000) p, count(*) n, extract(epoch from max(updated_at)-min(created_at)) span from orders where created_at >= $1 and status='CONFIRMED'`,
		[t0]
	);
	const s = await db.query(
		`select step_name, round(avg(extract(epoch from finished_at-started_at)*1000)::numeric,1) avg_ms, round((percentile_cont(0.99) within group (order by extract(epoch from finished_at-started_at)*1000))::numeric,1) p99 from saga_steps where started_at >= $1 group by step_name order by 2 desc`,
		[t0]
	);
	// gaps: from order created to first step start, between steps
	const g = await db.query(
		`with x as (select ss.saga_id, ss.step_index, ss.started_at, ss.finished_at, lag(ss.finished_at) over (partition by ss.saga_id order by ss.id) prev from saga_steps ss where started_at >= $1)
     select step_index, round(avg(extract(epoch from started_at - prev)*1000)::numeric,1) gap_ms from x where prev is not null group by 1 order by 1`,
		[t0]
	);
	const first = await db.query(
		`select round(avg(extract(epoch from ss.started_at - o.created_at)*1000)::numeric,1) ms from orders o join saga_steps ss on ss.saga_id=o.saga_id and ss.step_index=0 where o.created_at >= $1`,
		[t0]
	);
	const last = await db.query(
		`select round(avg(extract(epoch from o.updated_at - ss.finished_at)*1000)::numeric,1) ms from orders o join saga_steps ss on ss.saga_id=o.saga_id and ss.step_index=3 where o.created_at >= $1`,
		[t0]
	);
	// Step attempts that failed (and were retried or compensated), by error type.
	const failed = await db.query(
		`select step_name, phase, error->>'type' as type, count(*)::int n from saga_steps
		 where started_at >= $1 and status = 'FAILED' group by 1, 2, 3 order by 4 desc`,
		[t0]
	);
	const cpuShop = cpu(shop.pid) - c0,
		cpuPg = pgCpu() - p0;
	// Per order placed (202): a refused order (503) costs little but is not an order.
	const placed = Math.max(1, n - refused);
	if (process.env.PGBREAK) {
		const b1 = pgBreak();
		for (const k of Object.keys(b1)) {
			const u = b1[k].u - (b0[k]?.u ?? 0),
				s2 = b1[k].s - (b0[k]?.s ?? 0);
			if (u + s2 > 20)
				console.log(
					"pg",
					k,
					"user",
					(u / placed).toFixed(2),
					"sys",
					(s2 / placed).toFixed(2),
					"ms/order"
				);
		}
	}
	if (process.env.HOT) {
		// Updates per table and how many were HOT (no index touched: Postgres' heap-only tuples).
		for (const svc of ["orders", "inventory", "payments"]) {
			const u = new URL(pg.url);
			u.pathname = `/${prefix}${svc}`;
			const c2 = new Client({ connectionString: u.toString() });
			await c2.connect();
			const r = await c2.query(
				"select relname, n_tup_ins, n_tup_upd, n_tup_hot_upd from pg_stat_user_tables where n_tup_upd > 0 order by n_tup_upd desc"
			);
			for (const x of r.rows)
				console.log(
					"hot",
					svc,
					x.relname,
					"ins",
					x.n_tup_ins,
					"upd",
					x.n_tup_upd,
					"hot",
					x.n_tup_hot_upd
				);
			await c2.end();
		}
	}
	if (process.env.COUNT) {
		shop.kill("SIGUSR2");
		await new Promise(r => setTimeout(r, 300));
		const all = JSON.parse(fs.readFileSync(path.join(tmp, "counts.json"), "utf8"));
		const tot = all.reduce((s, x) => s + x[1], 0);
		console.log("queries/order", (tot / placed).toFixed(1));
		for (const [k, v] of all.slice(0, 45)) console.log((v / placed).toFixed(2), k);
	}
	console.log(
		JSON.stringify({
			cpuShopMsPerOrder: +(cpuShop / placed).toFixed(1),
			cpuPgMsPerOrder: +(cpuPg / placed).toFixed(1),
			n,
			c,
			refused,
			acceptRate: +(n / acc).toFixed(1),
			confirmed: +o.rows[0].n,
			confirmedPerSec: +(o.rows[0].n / o.rows[0].span).toFixed(1),
			failedAttempts: failed.rows,
			eventsDrainedMs,
			p50: Math.round(o.rows[0].p[0]),
			p99: Math.round(o.rows[0].p[1]),
			steps: s.rows,
			gaps: g.rows,
			createToFirstStep: first.rows[0].ms,
			lastStepToDone: last.rows[0].ms
		})
	);
}
for (const spec of (process.env.RUNS ?? "50x1,200x8,1000x32").split(",")) {
	const [n, c] = spec.split("x").map(Number);
	await run(n, c);
}
await db.end();
shop.kill("SIGTERM");
const ts = Date.now();
const ex = await Promise.race([
	new Promise(r => shop.once("exit", (c, s) => r(`exit ${c} ${s}`))),
	new Promise(r => setTimeout(() => r("TIMEOUT"), 20000))
]);
console.log("shop stop:", ex, Date.now() - ts, "ms");
if (ex === "TIMEOUT") {
	console.log(out.slice(-3000));
	shop.kill("SIGKILL");
}
await pg.stop();
fs.rmSync(tmp, { recursive: true, force: true });
