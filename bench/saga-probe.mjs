/**
 * `npm run bench:saga`: where an order's time and CPU go, in the one-process shop (`npm start`
 * form) on an embedded Postgres, in the production configuration by default: `NODE_ENV=production`,
 * the default log level (info: a JSON line per request and per saga), the shop's stdout and stderr
 * a pipe read by a log collector process of its own (`cat` appending to a file, as bench/run.ts
 * does; in production a container runtime reads the pipe). `QUIET=1` runs the old setting instead
 * (`LOGLEVEL=warn`, no `NODE_ENV`, the output piped into this process).
 *
 * For each run `<orders>x<concurrency>` (env `RUNS`, default `50x1,200x8,1000x32`) it places the
 * orders (each with its own `Idempotency-Key`), waits until every saga ended and every outbox
 * drained, and prints: orders accepted and confirmed per second, 202 → CONFIRMED p50/p99 (ms, the
 * database's clock), the saga steps' durations (from the step log), and CPU ms per order of the
 * shop process and of all Postgres processes (from /proc). An order refused with 503
 * `ORDERS_OVERLOADED` (the adaptive saga limit) or 429 with `Retry-After` is placed again after
 * `Retry-After` seconds with the same `Idempotency-Key`; `refusals` counts those answers and
 * `ordersRefused` the orders that met at least one; another 5xx (a 504: the outcome unknown) is
 * sent again with the same key after 500 ms, up to 5 times (`retriedErrors`, by status), then
 * given up (`givenUp`: not counted as accepted). `COUNT=1` also counts the SQL statements per
 * order by text and the round trips per order by database (bench/query-counter.cjs preloaded
 * into the shop); `PGBREAK=1` splits Postgres CPU
 * by backend; `HOT=1` lists each table's updates and how many were HOT; `PROF=1` writes a CPU
 * profile of the shop to bench/results/saga-profile/. Needs `npm run build` (`tsc -p .`).
 * Env: `P` products (8), `W` at most that many orders in flight (default: no bound), `SHOPENV`
 * extra shop env as JSON, `SHOW=1` keeps the shop's log file and prints its path.
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
	// The production configuration (the default log level); QUIET=1: the old bench setting.
	...(process.env.QUIET ? { LOGLEVEL: "warn" } : { NODE_ENV: "production" }),
	JWT_SECRET: "bench-secret-bench-secret-bench-secret-0123456789",
	ADMIN_EMAIL: "admin@example.com",
	ADMIN_PASSWORD: "bench-admin-password-1",
	...JSON.parse(process.env.SHOPENV ?? "{}")
};
if (process.env.COUNT)
	env.NODE_OPTIONS = `--require ${path.join(ROOT, "bench", "query-counter.cjs")}`;
env.QUERY_COUNTS_FILE = path.join(tmp, "counts.json");
const nodeArgs = [
	...(process.env.PROF
		? ["--cpu-prof", `--cpu-prof-dir=${path.join(ROOT, "bench", "results", "saga-profile")}`]
		: []),
	path.join(ROOT, "dist/bin/start.js")
];
// The log collector: `cat` appending the shop's stdout and stderr to a file (QUIET=1: none, the
// output is piped into this process as before).
const logFile = path.join(tmp, "shop.log");
let collector = null;
let shop;
let quietTail = "";
if (process.env.QUIET) {
	shop = spawn(process.execPath, nodeArgs, { env, stdio: ["ignore", "pipe", "pipe"], cwd: ROOT });
	await waitReady(shop);
	// Always drained: a full pipe would block the shop's logging.
	const tail = d => (quietTail = (quietTail + d).slice(-3000));
	shop.stdout.on("data", tail);
	shop.stderr.on("data", tail);
	shop.stdout.on("data", d => process.env.SHOW && process.stdout.write(d));
	shop.stderr.on("data", d => process.stderr.write(d));
} else {
	const fd = fs.openSync(logFile, "a");
	collector = spawn("cat", [], { stdio: ["pipe", fd, "ignore"] });
	fs.closeSync(fd);
	shop = spawn(process.execPath, nodeArgs, {
		env,
		stdio: ["ignore", collector.stdin, collector.stdin],
		cwd: ROOT
	});
	// The shop holds the pipe's writing end now; the collector ends when the shop does.
	collector.stdin.destroy();
	for (;;) {
		const out = fs.readFileSync(logFile, "utf8");
		if (shop.exitCode !== null || shop.signalCode !== null)
			throw new Error(
				`the shop exited ${shop.exitCode ?? shop.signalCode}:\n${out.slice(-20_000)}`
			);
		if (/Ready in/.test(out)) break;
		await new Promise(r => setTimeout(r, 100));
	}
	if (process.env.SHOW)
		console.log("shop log:", logFile, "(kept in bench/results/saga-shop.log)");
}
/** The last of the shop's output, printed if it does not stop in time. */
function shopTail() {
	try {
		const st = fs.statSync(logFile);
		const fd = fs.openSync(logFile, "r");
		const buf = require("node:buffer").Buffer.alloc(Math.min(3000, st.size));
		fs.readSync(fd, buf, 0, buf.length, st.size - buf.length);
		fs.closeSync(fd);
		return buf.toString("utf8");
	} catch {
		return "";
	}
}
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
/**
 * This run's Postgres processes: the postmaster whose command line names our data directory, and
 * its children (backends, background workers). Other Postgres servers on the machine (a shared
 * machine runs several) are not counted. @returns their pids, the postmaster's first
 */
function ourPostgres() {
	const procs = fs.readdirSync("/proc").filter(x => /^\d+$/.test(x));
	const dataDir = path.join(tmp, "pg");
	const ppid = new Map();
	for (const p of procs) {
		try {
			ppid.set(p, fs.readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1].split(" ")[1]);
		} catch {
			// The process ended meanwhile.
		}
	}
	// The postmaster: named after our data directory, and not the child of such a process (a
	// backend just forked still shows its parent's command line).
	const named = new Set();
	for (const p of procs) {
		try {
			if (fs.readFileSync(`/proc/${p}/comm`, "utf8").trim() !== "postgres") continue;
			if (fs.readFileSync(`/proc/${p}/cmdline`, "utf8").includes(dataDir)) named.add(p);
		} catch {
			// The process ended meanwhile.
		}
	}
	const master = [...named].find(p => !named.has(ppid.get(p)));
	if (master === undefined) return [];
	return [master, ...procs.filter(p => ppid.get(p) === master)];
}
/** CPU ms of this run's Postgres by process title (database for backends). */
function pgBreak() {
	const m = {};
	for (const p of ourPostgres()) {
		try {
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
		} catch {
			// The process ended meanwhile.
		}
	}
	return m;
}
/**
 * CPU ms of this run's Postgres: its processes alive now, plus the postmaster's reaped children
 * (backends whose connection closed meanwhile).
 */
function pgCpu() {
	let t = 0;
	const [master, ...children] = ourPostgres();
	if (master === undefined) return 0;
	try {
		const f = fs.readFileSync(`/proc/${master}/stat`, "utf8").split(") ")[1].split(" ");
		t += (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 10;
	} catch {
		// Stopped meanwhile.
	}
	for (const p of children) {
		try {
			t += cpu(p);
		} catch {
			// The process ended meanwhile.
		}
	}
	return t;
}
/**
 * `POST /api/orders` with an `Idempotency-Key`.
 * @returns `{ status, retryAfter }` (`retryAfter`: the header's text, null when absent)
 */
async function placeOrder(body, token, key) {
	const r = await fetch(`http://127.0.0.1:${port}/api/orders`, {
		method: "POST",
		headers: {
			"Content-Type": "application/json",
			Authorization: `Bearer ${token}`,
			"Idempotency-Key": key
		},
		body: JSON.stringify(body)
	});
	await r.arrayBuffer();
	return { status: r.status, retryAfter: r.headers.get("retry-after") };
}
let runNo = 0;
async function run(n, c) {
	const runTag = `${process.pid}-${++runNo}`;
	if (process.env.COUNT) shop.kill("SIGUSR2");
	const c0 = cpu(shop.pid),
		p0 = pgCpu();
	const b0 = pgBreak();
	const t0 = (await db.query("select now()")).rows[0].now;
	let k = 0;
	// Orders accepted (202), refusals (503/429 answers, each retried with the same key), orders
	// that met at least one refusal, and orders given up (another answer: counted, not retried).
	let accepted = 0;
	let refusals = 0;
	let ordersRefused = 0;
	let givenUp = 0;
	const givenUpStatuses = {};
	const retriedErrors = {};
	const retryAfterS = [];
	// `W`: at most W orders in flight (accepted, not yet ended), so the shop runs at its capacity
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
				while (window > 0 && accepted - ended >= window)
					await new Promise(r => setTimeout(r, 2));
				if (k >= n) break;
				const i = k++;
				const key = `saga-probe-${runTag}-${i}`;
				for (let tries = 0; ; tries++) {
					const r = await placeOrder(
						{
							items: [{ productId: pids[i % pids.length], quantity: 1 }],
							paymentMethod: "tok_visa"
						},
						toks[i % toks.length],
						key
					);
					if (r.status >= 200 && r.status < 300) {
						accepted++;
						break;
					}
					if ((r.status === 503 || r.status === 429) && r.retryAfter !== null) {
						// Refused at once (the saga limit, a per-customer bound): the same order
						// again after Retry-After, with the same Idempotency-Key.
						refusals++;
						if (tries === 0) ordersRefused++;
						const s = Number(r.retryAfter);
						retryAfterS.push(s);
						await new Promise(res => setTimeout(res, Math.max(0, s) * 1000));
						continue;
					}
					if (r.status >= 500 && tries < 5) {
						// Outcome unknown (e.g. 504: the gateway's timeout while the order may
						// have been taken): the same key again after 500 ms answers the order.
						retriedErrors[r.status] = (retriedErrors[r.status] ?? 0) + 1;
						await new Promise(res => setTimeout(res, 500));
						continue;
					}
					givenUp++;
					givenUpStatuses[r.status] = (givenUpStatuses[r.status] ?? 0) + 1;
					break;
				}
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
	// Per order accepted (202): a refusal (503) costs little but is not an order.
	const placed = Math.max(1, accepted);
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
		// Statements sent as `EXECUTE <name>(<literals>)` (platform/db/group-commit.ts: a
		// transaction's first statement with its START TRANSACTION, a group of saga-log
		// statements) are counted by name, not by their literals.
		const byKey = new Map();
		for (const [k, v] of JSON.parse(fs.readFileSync(path.join(tmp, "counts.json"), "utf8"))) {
			const key = k.replace(/(EXECUTE shop_\w+)\(.*$/, "$1(…)");
			byKey.set(key, (byKey.get(key) ?? 0) + v);
		}
		const flights = [...byKey].filter(([k]) => k.startsWith("(flights)"));
		for (const [k] of flights) byKey.delete(k);
		const all = [...byKey].sort((a, b) => b[1] - a[1]);
		const tot = all.reduce((s, x) => s + x[1], 0);
		console.log("queries/order", (tot / placed).toFixed(1));
		console.log(
			"round trips/order",
			(flights.reduce((s, x) => s + x[1], 0) / placed).toFixed(1),
			flights.map(([k, v]) => `${k.slice(10)} ${(v / placed).toFixed(2)}`).join(", ")
		);
		for (const [k, v] of all.slice(0, 45)) console.log((v / placed).toFixed(2), k);
	}
	console.log(
		JSON.stringify({
			cpuShopMsPerOrder: +(cpuShop / placed).toFixed(1),
			cpuPgMsPerOrder: +(cpuPg / placed).toFixed(1),
			n,
			c,
			refusals,
			ordersRefused,
			retryAfterS: retryAfterS.length
				? [Math.min(...retryAfterS), Math.max(...retryAfterS)]
				: null,
			retriedErrors,
			givenUp,
			givenUpStatuses,
			loadavg: os.loadavg().map(x => +x.toFixed(2)),
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
	console.log(process.env.QUIET ? quietTail : shopTail());
	shop.kill("SIGKILL");
}
await pg.stop();
if (process.env.SHOW && !process.env.QUIET) {
	fs.mkdirSync(path.join(ROOT, "bench", "results"), { recursive: true });
	fs.copyFileSync(logFile, path.join(ROOT, "bench", "results", "saga-shop.log"));
}
fs.rmSync(tmp, { recursive: true, force: true });
