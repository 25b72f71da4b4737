/**
 * `npm run bench`: throughput and latency of the shop, each figure next to a floor measured in
 * the same run (the machines are shared and noisy).
 *
 * Floors: a bare Node HTTP server; a moleculer-web gateway calling an empty action, in one
 * process and over NATS; Postgres commits per second on the same server.
 * Shop workloads, in one process (`npm start` form) and as separate nodes over NATS
 * (`npm run cluster` form):
 *   (a) `GET /api/products/:id` from the cache;
 *   (b) the product list, uncached (a different search each request);
 *   (c) `POST /api/orders` through the whole saga: orders accepted/s (202), orders confirmed/s,
 *       202 → CONFIRMED p50/p99 (from the orders table, the database's clock), then again at half
 *       the confirmed rate for the latency target; its clients wait `Retry-After` on a 503
 *       `ORDERS_OVERLOADED` (the adaptive limit, on by default) and send the same order again with
 *       the same `Idempotency-Key`, and the refusals are reported (`refused`);
 *   (d) a shop mix: ten cached product reads to one order.
 * CPU (percent of one core) and peak resident memory per process are sampled from /proc; the idle
 * resident memory of each node is read before the load. Output: a table on stdout and
 * `bench/results/latest.json`. `BENCH_PROFILE=1` also records a CPU profile of the one-process
 * shop during (c) and prints its top self-time functions (`bench/results/profile-top.json`).
 *
 * The shop runs in the production configuration: `NODE_ENV=production`, the default log level
 * (info: a JSON line per request on stdout; the one-process shop's output is a pipe read by `cat`
 * into a file in the bench's temporary directory, the cluster nodes' go to tools/cluster.ts's pipes).
 *
 * Settings: `BENCH_DURATION_S` (8), `BENCH_CONNECTIONS` (32), `BENCH_FORMS` (`single,cluster`),
 * `BENCH_WORKLOADS` (`read,list,orders,mix`: which of (a) to (d) to run; the Postgres floor only
 * when one of the last three runs), `BENCH_SHOP_ENV` (a JSON object of environment variables
 * added to or overriding the shop's, e.g. `{"LOGLEVEL":"warn"}`), `BENCH_OUT` (the JSON file,
 * default `bench/results/latest.json`), `DATABASE_URL` (else an embedded Postgres in a temporary
 * directory); the cluster form needs `nats-server` on PATH. `node bench/read-probe.mjs` compares
 * (a) with its floor over interleaved rounds, and shop builds or settings with each other.
 */
import { type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type autocannon from "autocannon";
import { Client } from "pg";
import { startCluster, type Cluster } from "../tools/cluster";
import { startEmbeddedPostgres } from "../tools/embedded-postgres";
import { freePort, startNatsServer, type ServerProcess } from "../tools/local-servers";
import {
	cpuMs,
	load,
	postgresCpuMeter,
	quantile,
	round,
	rssMb,
	sampleUsage,
	spawnReady,
	stopChild,
	table,
	type LoadResult,
	type ProcessUsage,
	type Watched
} from "./lib";
import { summarizeProfile } from "./profile";

/** One request of an autocannon run, as `setupRequest` receives and returns it. */
type RawRequest = autocannon.Request;

const ROOT = path.join(__dirname, "..", "..");
const DIST = path.join(ROOT, "dist");
const DURATION = Number(process.env.BENCH_DURATION_S ?? 8);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const FORMS = (process.env.BENCH_FORMS ?? "single,cluster").split(",");
const PROFILE = process.env.BENCH_PROFILE === "1";
/** Extra or overriding environment of every shop process (`BENCH_SHOP_ENV`, a JSON object). */
const SHOP_ENV = JSON.parse(process.env.BENCH_SHOP_ENV ?? "{}") as Record<string, string>;
/** `BENCH_WORKLOADS`: which of `read,list,orders,mix` to run (all by default). */
const WORKLOADS = new Set((process.env.BENCH_WORKLOADS ?? "read,list,orders,mix").split(","));
/** Customers the load spreads its orders over (round robin). */
const BENCH_CUSTOMERS = 64;
const ADMIN = { email: "admin@example.com", password: "bench-admin-password-1" };
const JWT_SECRET = "bench-secret-bench-secret-bench-secret-0123456789";
const log = (m: string): void => console.log(`[bench] ${m}`);

interface Figure {
	form: "single" | "cluster" | "floor";
	name: string;
	value: number;
	unit: string;
	floor?: string;
	ratio?: number;
	p50?: number;
	p99?: number;
	extra?: Record<string, unknown>;
	usage?: ProcessUsage;
}

const figures: Figure[] = [];
const floors: Record<string, number> = {};

async function api(
	base: string,
	method: string,
	url: string,
	body?: unknown,
	token?: string
): Promise<{ status: number; body: any }> {
	const res = await fetch(base + url, {
		method,
		headers: {
			...(body === undefined ? {} : { "Content-Type": "application/json" }),
			...(token ? { Authorization: `Bearer ${token}` } : {})
		},
		body: body === undefined ? undefined : JSON.stringify(body)
	});
	const text = await res.text();
	return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Products, customers and tokens for a shop at `base`. */
async function seed(base: string): Promise<{ productIds: string[]; tokens: string[] }> {
	const admin = await api(base, "POST", "/api/users/login", ADMIN);
	if (admin.status !== 200) throw new Error(`admin login: ${JSON.stringify(admin.body)}`);
	const productIds: string[] = [];
	for (let i = 0; i < 8; i++) {
		const p = await api(
			base,
			"POST",
			"/api/products",
			{
				sku: `BENCH-${crypto.randomBytes(4).toString("hex")}`.toUpperCase(),
				name: `Bench item ${i}`,
				description: "A benchmark product",
				price: 1000 + i,
				currency: "USD",
				stock: 100_000_000
			},
			admin.body.token
		);
		if (p.status !== 201) throw new Error(`create product: ${JSON.stringify(p.body)}`);
		productIds.push(p.body.id);
	}
	// Enough customers that the per-customer bounds (ORDERS_MAX_IN_FLIGHT_PER_CUSTOMER, 20 by
	// default) never refuse before the node's own backpressure (SAGA_MAX_IN_FLIGHT, 400): the
	// bench measures the shop's capacity in its production configuration, not one customer's.
	const tokens: string[] = [];
	for (let i = 0; i < BENCH_CUSTOMERS; i++) {
		const r = await api(base, "POST", "/api/users/register", {
			email: `bench-${i}-${crypto.randomBytes(3).toString("hex")}@example.com`,
			password: "correct horse battery staple",
			name: `Bench ${i}`
		});
		if (r.status !== 201) throw new Error(`register: ${JSON.stringify(r.body)}`);
		tokens.push(r.body.token);
	}
	return { productIds, tokens };
}

/** Runs `sql` on the bench's `orders` database. */
async function ordersQuery<T>(
	databaseUrl: string,
	prefix: string,
	sql: string,
	values: unknown[]
): Promise<T[]> {
	const u = new URL(databaseUrl);
	u.pathname = `/${prefix}orders`;
	const c = new Client({ connectionString: u.toString() });
	await c.connect();
	try {
		return (await c.query(sql, values)).rows as T[];
	} finally {
		await c.end();
	}
}

const sleep = (ms: number): Promise<void> => new Promise(res => setTimeout(res, ms));

/** The order load's answers: `load`'s figures (2xx, their answer times) and the refusals. */
interface OrderLoadResult extends LoadResult {
	/** 503 `ORDERS_OVERLOADED` answers (the adaptive limit), each retried after `Retry-After`. */
	refused: number;
	/** Of those, the ones without a `Retry-After` header (a defect of the shop). */
	refusedWithoutRetryAfter: number;
	/** Orders still refused when the run ended (not retried further). */
	abandoned: number;
}

/**
 * `POST /api/orders` from `connections` clients, each in a closed loop on its answer, for
 * `DURATION` s (at most `rate` new orders/s in all when given, as autocannon's `overallRate`).
 * A 503 `ORDERS_OVERLOADED` (the orders node's adaptive limit on sagas in flight) is met as a
 * real client meets it: the client waits `Retry-After` (s) and sends the same order with the same
 * `Idempotency-Key`; autocannon cannot wait, and would press on at full speed with refusals.
 * @returns 2xx/s over the run (`rps`), the 202s' answer times p50/p99 (ms, client clock),
 *   `non2xx` other than the refusals, transport `errors`, and the refusals
 */
async function orderLoad(
	base: string,
	seedData: { productIds: string[]; tokens: string[] },
	connections: number,
	procs: Watched[],
	rate?: number
): Promise<OrderLoadResult> {
	const sampler = sampleUsage(procs);
	const t0 = Date.now();
	const end = t0 + DURATION * 1000;
	const times: number[] = [];
	const r = {
		ok: 0,
		non2xx: 0,
		errors: 0,
		refused: 0,
		refusedWithoutRetryAfter: 0,
		abandoned: 0
	};
	let n = 0;
	const client = async (): Promise<void> => {
		while (Date.now() < end) {
			const i = n++;
			if (rate) {
				const at = t0 + (i / rate) * 1000;
				if (at >= end) return;
				if (at > Date.now()) await sleep(at - Date.now());
			}
			const key = crypto.randomUUID();
			const body = JSON.stringify({
				items: [
					{ productId: seedData.productIds[i % seedData.productIds.length], quantity: 1 }
				],
				paymentMethod: "tok_visa"
			});
			for (;;) {
				const sent = performance.now();
				let res: Response;
				try {
					res = await fetch(`${base}/api/orders`, {
						method: "POST",
						headers: {
							"Content-Type": "application/json",
							Authorization: `Bearer ${seedData.tokens[i % seedData.tokens.length]}`,
							"Idempotency-Key": key
						},
						body,
						signal: AbortSignal.timeout(30_000)
					});
				} catch {
					r.errors++;
					break;
				}
				const text = await res.text();
				if (res.status >= 200 && res.status < 300) {
					r.ok++;
					times.push(performance.now() - sent);
					break;
				}
				let type: unknown;
				try {
					type = (JSON.parse(text) as { type?: unknown }).type;
				} catch {
					type = undefined;
				}
				if (res.status !== 503 || type !== "ORDERS_OVERLOADED") {
					r.non2xx++;
					break;
				}
				r.refused++;
				const after = Number(res.headers.get("retry-after"));
				if (res.headers.get("retry-after") === null || !Number.isFinite(after))
					r.refusedWithoutRetryAfter++;
				const wait = (Number.isFinite(after) && after >= 0 ? after : 1) * 1000;
				if (Date.now() + wait >= end) {
					r.abandoned++;
					break;
				}
				await sleep(wait);
			}
		}
	};
	await Promise.all(Array.from({ length: connections }, client));
	const usage = sampler.stop();
	const seconds = (Date.now() - t0) / 1000;
	times.sort((a, b) => a - b);
	return {
		rps: round(r.ok / seconds, 0),
		p50: round(quantile(times, 0.5), 0),
		p99: round(quantile(times, 0.99), 0),
		...r,
		usage
	};
}

interface OrderFigures {
	accepted: OrderLoadResult;
	acceptedPerSec: number;
	confirmedPerSec: number;
	confirmed: number;
	cancelled: number;
	/** Cancelled orders by `cancellation_reason` (none expected: stock and card always suffice). */
	cancelledBy: Record<string, number>;
	settleP50: number;
	settleP99: number;
	drainSeconds: number;
	/**
	 * CPU ms per order ended (confirmed or cancelled), from the first order placed to the last one
	 * ended: of the shop's processes (`procs`) and of the Postgres server (null when its processes
	 * cannot be read here).
	 */
	cpuMsPerOrder: { shop: number; postgres: number | null };
}

/** Places orders for `DURATION` s (at `rate`/s if given), waits for their sagas, reads the times. */
async function orderRun(
	base: string,
	databaseUrl: string,
	prefix: string,
	seedData: { productIds: string[]; tokens: string[] },
	procs: Watched[],
	rate?: number
): Promise<OrderFigures> {
	const { now: t0, pid } = (
		await ordersQuery<{ now: Date; pid: number }>(
			databaseUrl,
			prefix,
			"SELECT now(), (SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer') AS pid",
			[]
		)
	)[0]!;
	const pgCpu = postgresCpuMeter(pid);
	const pids = procs.map(p => p.pid);
	const cpu0 = { shop: cpuMs(pids), postgres: pgCpu?.() ?? 0 };
	const accepted = await orderLoad(
		base,
		seedData,
		rate ? Math.max(4, Math.min(CONNECTIONS, Math.ceil(rate / 10))) : CONNECTIONS,
		procs,
		rate
	);
	// Wait until every order of the run has ended.
	const drainStart = Date.now();
	for (;;) {
		const [row] = await ordersQuery<{ open: number }>(
			databaseUrl,
			prefix,
			"SELECT count(*)::int AS open FROM orders WHERE created_at >= $1 AND status NOT IN ('CONFIRMED','CANCELLED')",
			[t0]
		);
		if (row!.open === 0 || Date.now() - drainStart > 120_000) break;
		await new Promise(r => setTimeout(r, 250));
	}
	const cpu = { shop: cpuMs(pids) - cpu0.shop, postgres: pgCpu ? pgCpu() - cpu0.postgres : null };
	const rows = await ordersQuery<{
		status: string;
		reason: string | null;
		created: string;
		updated: string;
		ms: number;
	}>(
		databaseUrl,
		prefix,
		`SELECT status, cancellation_reason AS reason, EXTRACT(EPOCH FROM created_at) * 1000 AS created, EXTRACT(EPOCH FROM updated_at) * 1000 AS updated,
			EXTRACT(EPOCH FROM updated_at - created_at) * 1000 AS ms
		 FROM orders WHERE created_at >= $1`,
		[t0]
	);
	const confirmed = rows.filter(r => r.status === "CONFIRMED");
	const first = Math.min(...rows.map(r => Number(r.created)));
	const last = Math.max(...confirmed.map(r => Number(r.updated)));
	const ms = confirmed.map(r => Number(r.ms));
	return {
		accepted,
		acceptedPerSec: accepted.rps,
		confirmedPerSec: round(confirmed.length / ((last - first) / 1000), 0),
		confirmed: confirmed.length,
		cancelled: rows.length - confirmed.length,
		cancelledBy: rows
			.filter(r => r.status !== "CONFIRMED")
			.reduce<Record<string, number>>((m, r) => {
				const k = r.reason ?? r.status;
				m[k] = (m[k] ?? 0) + 1;
				return m;
			}, {}),
		settleP50: round(quantile(ms, 0.5), 0),
		settleP99: round(quantile(ms, 0.99), 0),
		drainSeconds: round((Date.now() - drainStart) / 1000, 1),
		cpuMsPerOrder: {
			shop: round(cpu.shop / Math.max(1, rows.length), 1),
			postgres:
				cpu.postgres === null ? null : round(cpu.postgres / Math.max(1, rows.length), 1)
		}
	};
}

/** The four shop workloads against a running shop. */
async function shopWorkloads(
	form: "single" | "cluster",
	base: string,
	databaseUrl: string,
	prefix: string,
	procs: Watched[],
	onOrdersStart?: () => void
): Promise<void> {
	const data = await seed(base);
	const floorGateway = form === "single" ? floors.gatewayLocal! : floors.gatewayNats!;
	const floorName =
		form === "single" ? "gateway→empty action, 1 process" : "gateway→empty action, NATS";

	// Warm-up: JIT, pools, caches.
	await load(
		{ url: `${base}/api/products/${data.productIds[0]}`, connections: 8, duration: 2 },
		procs
	);

	if (WORKLOADS.has("read")) {
		// (a) cached product read.
		let i = 0;
		const cached = await load(
			{
				url: base,
				connections: CONNECTIONS,
				duration: DURATION,
				requests: [
					{
						method: "GET",
						setupRequest: (req: RawRequest) => ({
							...req,
							path: `/api/products/${data.productIds[i++ % data.productIds.length]}`
						})
					}
				]
			},
			procs
		);
		figures.push({
			form,
			name: "(a) GET /api/products/:id, cached",
			value: cached.rps,
			unit: "req/s",
			floor: floorName,
			ratio: round(cached.rps / floorGateway, 2),
			p50: cached.p50,
			p99: cached.p99,
			extra: { non2xx: cached.non2xx, errors: cached.errors },
			usage: cached.usage
		});
		log(`${form} (a) cached read: ${cached.rps} req/s (floor ${floorGateway})`);
	}

	if (WORKLOADS.has("list")) {
		// (b) uncached list: a distinct search string per request.
		let s = 0;
		const listed = await load(
			{
				url: base,
				connections: CONNECTIONS,
				duration: DURATION,
				requests: [
					{
						method: "GET",
						setupRequest: (req: RawRequest) => ({
							...req,
							path: `/api/products?search=bench${s++}&pageSize=20`
						})
					}
				]
			},
			procs
		);
		figures.push({
			form,
			name: "(b) GET /api/products?search=…, uncached",
			value: listed.rps,
			unit: "req/s",
			floor: "Postgres commits/s",
			ratio: round(listed.rps / floors.pgCommits!, 2),
			p50: listed.p50,
			p99: listed.p99,
			extra: { non2xx: listed.non2xx, errors: listed.errors },
			usage: listed.usage
		});
		log(`${form} (b) uncached list: ${listed.rps} req/s`);
	}

	if (WORKLOADS.has("orders")) {
		// (c) orders, full speed, then at half the confirmed rate.
		onOrdersStart?.();
		const full = await orderRun(base, databaseUrl, prefix, data, procs);
		figures.push({
			form,
			name: "(c) POST /api/orders accepted (202)",
			value: full.acceptedPerSec,
			unit: "orders/s",
			floor: "Postgres commits/s",
			ratio: round(full.acceptedPerSec / floors.pgCommits!, 2),
			p50: full.accepted.p50,
			p99: full.accepted.p99,
			extra: {
				non2xx: full.accepted.non2xx,
				errors: full.accepted.errors,
				// 503 ORDERS_OVERLOADED, each retried after Retry-After with the same key
				refused: full.accepted.refused,
				refusedWithoutRetryAfter: full.accepted.refusedWithoutRetryAfter,
				abandoned: full.accepted.abandoned
			},
			usage: full.accepted.usage
		});
		figures.push({
			form,
			name: "(c) orders confirmed",
			value: full.confirmedPerSec,
			unit: "orders/s",
			floor: "Postgres commits/s",
			ratio: round(full.confirmedPerSec / floors.pgCommits!, 2),
			p50: full.settleP50,
			p99: full.settleP99,
			extra: {
				confirmed: full.confirmed,
				cancelled: full.cancelled,
				cancelledBy: full.cancelledBy,
				drainSeconds: full.drainSeconds,
				latency: "202→CONFIRMED",
				cpuMsPerOrder: full.cpuMsPerOrder
			}
		});
		log(
			`${form} (c) orders: ${full.acceptedPerSec}/s accepted, ${full.confirmedPerSec}/s confirmed, ` +
				`${full.accepted.refused} refused (503 ORDERS_OVERLOADED, retried after Retry-After), ` +
				`202→CONFIRMED p50 ${full.settleP50} ms p99 ${full.settleP99} ms (${full.confirmed} confirmed, ${full.cancelled} cancelled), ` +
				`CPU ms per order: shop ${full.cpuMsPerOrder.shop}, Postgres ${full.cpuMsPerOrder.postgres ?? "?"}`
		);
		const halfRate = Math.max(5, Math.floor(full.confirmedPerSec / 2));
		const half = await orderRun(base, databaseUrl, prefix, data, procs, halfRate);
		figures.push({
			form,
			name: `(c) orders at half load (${halfRate}/s offered)`,
			value: half.confirmedPerSec,
			unit: "orders/s",
			p50: half.settleP50,
			p99: half.settleP99,
			extra: {
				confirmed: half.confirmed,
				cancelled: half.cancelled,
				cancelledBy: half.cancelledBy,
				accepted: half.accepted.ok,
				refused: half.accepted.refused,
				non2xx: half.accepted.non2xx,
				errors: half.accepted.errors,
				latency: "202→CONFIRMED"
			},
			usage: half.accepted.usage
		});
		log(
			`${form} (c) half load ${halfRate}/s: 202→CONFIRMED p50 ${half.settleP50} ms p99 ${half.settleP99} ms`
		);
	}

	if (WORKLOADS.has("mix")) {
		// (d) shop mix: 10 cached reads, 1 order.
		let m = 0;
		const reads = Array.from({ length: 10 }, (): RawRequest => ({
			method: "GET",
			setupRequest: (req: RawRequest) => ({
				...req,
				path: `/api/products/${data.productIds[m++ % data.productIds.length]}`
			})
		}));
		let o = 0;
		const mix = await load(
			{
				url: base,
				connections: CONNECTIONS,
				duration: DURATION,
				requests: [
					...reads,
					{
						method: "POST",
						path: "/api/orders",
						setupRequest: (req: RawRequest) => {
							const k = o++;
							return {
								...req,
								headers: {
									"Content-Type": "application/json",
									Authorization: `Bearer ${data.tokens[k % data.tokens.length]}`
								},
								body: JSON.stringify({
									items: [
										{
											productId: data.productIds[k % data.productIds.length],
											quantity: 1
										}
									],
									paymentMethod: "tok_visa"
								})
							};
						}
					}
				]
			},
			procs
		);
		figures.push({
			form,
			name: "(d) shop mix 10 reads : 1 order",
			value: mix.rps,
			unit: "req/s",
			floor: floorName,
			ratio: round(mix.rps / floorGateway, 2),
			p50: mix.p50,
			p99: mix.p99,
			extra: { ordersPerSec: round(mix.rps / 11, 0), non2xx: mix.non2xx, errors: mix.errors },
			usage: mix.usage
		});
		log(`${form} (d) mix: ${mix.rps} req/s`);
	}
}

async function floorRuns(databaseUrl: string, natsUrl: string | null): Promise<void> {
	const floorsJs = path.join(DIST, "bench", "floors.js");
	const run = async (
		label: string,
		key: string,
		children: { mode: string; port?: number }[]
	): Promise<void> => {
		const port = await freePort();
		const procs: ChildProcess[] = [];
		try {
			for (const c of children)
				procs.push(
					await spawnReady([floorsJs, c.mode, String(c.port ?? port), natsUrl ?? ""], {
						...process.env
					})
				);
			const watched = procs.map((p, i) => ({ name: children[i]!.mode, pid: p.pid! }));
			const url = children.some(c => c.mode === "http")
				? `http://127.0.0.1:${port}/`
				: `http://127.0.0.1:${port}/api/empty`;
			await load({ url, connections: 8, duration: 1 }, watched);
			const r = await load({ url, connections: CONNECTIONS, duration: DURATION }, watched);
			floors[key] = r.rps;
			figures.push({
				form: "floor",
				name: label,
				value: r.rps,
				unit: "req/s",
				p50: r.p50,
				p99: r.p99,
				usage: r.usage
			});
			log(`floor ${label}: ${r.rps} req/s`);
		} finally {
			for (const p of procs) await stopChild(p);
		}
	};
	await run("bare Node HTTP server", "http", [{ mode: "http" }]);
	await run("gateway→empty action, 1 process", "gatewayLocal", [{ mode: "gateway-local" }]);
	if (natsUrl) {
		const emptyPort = await freePort();
		// The node with the action first: the gateway waits until it sees it.
		await run("gateway→empty action, NATS", "gatewayNats", [
			{ mode: "empty-nats", port: emptyPort },
			{ mode: "gateway-nats" }
		]);
	}

	// Postgres commits per second: 16 clients, one-row INSERT per transaction (the floor of the
	// list and order figures only).
	if (!WORKLOADS.has("list") && !WORKLOADS.has("orders") && !WORKLOADS.has("mix")) return;
	const u = new URL(databaseUrl);
	u.pathname = "/postgres";
	const clients = await Promise.all(
		Array.from({ length: 16 }, async () => {
			const c = new Client({ connectionString: u.toString() });
			await c.connect();
			return c;
		})
	);
	await clients[0]!.query(
		"CREATE TABLE IF NOT EXISTS bench_commits (id bigserial PRIMARY KEY, v text)"
	);
	let commits = 0;
	const end = Date.now() + DURATION * 1000;
	await Promise.all(
		clients.map(async c => {
			while (Date.now() < end) {
				await c.query("INSERT INTO bench_commits (v) VALUES ($1)", ["x"]);
				commits++;
			}
		})
	);
	await clients[0]!.query("DROP TABLE bench_commits");
	await Promise.all(clients.map(c => c.end()));
	floors.pgCommits = round(commits / DURATION, 0);
	figures.push({
		form: "floor",
		name: "Postgres commits/s (16 clients)",
		value: floors.pgCommits,
		unit: "commits/s"
	});
	log(`floor Postgres: ${floors.pgCommits} commits/s`);
}

function shopEnv(
	databaseUrl: string,
	prefix: string,
	port: number,
	dataDir: string
): Record<string, string> {
	return {
		PATH: `${path.join(ROOT, "node_modules", ".bin")}${path.delimiter}${process.env.PATH}`,
		HOME: process.env.HOME ?? os.tmpdir(),
		DATABASE_URL: databaseUrl,
		DATABASE_PREFIX: prefix,
		DATA_DIR: dataDir,
		PORT: String(port),
		METRICS_PORT: "0",
		RATE_LIMIT_MAX: "0",
		// What users run: NODE_ENV=production, the default log level (info: a JSON line per
		// request). BENCH_SHOP_ENV (JSON) adds or overrides variables, e.g. {"LOGLEVEL":"warn"}.
		NODE_ENV: "production",
		JWT_SECRET,
		ADMIN_EMAIL: ADMIN.email,
		ADMIN_PASSWORD: ADMIN.password,
		...SHOP_ENV
	};
}

async function main(): Promise<void> {
	const t0 = Date.now();
	const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "shop-bench-"));
	fs.chmodSync(tmp, 0o755);
	let pgStop: (() => Promise<void>) | null = null;
	let databaseUrl = process.env.DATABASE_URL ?? "";
	let nats: ServerProcess | null = null;
	try {
		if (!databaseUrl) {
			const pg = await startEmbeddedPostgres({
				dataDir: path.join(tmp, "pg"),
				port: await freePort()
			});
			databaseUrl = pg.url;
			pgStop = () => pg.stop();
		}
		if (FORMS.includes("cluster")) {
			const jsDir = path.join(tmp, "nats");
			nats = await startNatsServer({ port: await freePort(), jetStreamDir: jsDir });
		}
		log(
			`machine: ${os.cpus().length} cores, ${os.cpus()[0]?.model}; node ${process.version}; ${DURATION} s per run, ${CONNECTIONS} connections`
		);
		await floorRuns(databaseUrl, nats?.url ?? null);

		if (FORMS.includes("single")) {
			const port = await freePort();
			const prefix = `b${crypto.randomBytes(3).toString("hex")}_`;
			const profDir = path.join(ROOT, "bench", "results", "profile");
			const args = PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${profDir}`] : [];
			if (PROFILE) fs.rmSync(profDir, { recursive: true, force: true });
			const shop = await spawnShop(
				[...args, path.join(DIST, "bin", "start.js")],
				shopEnv(databaseUrl, prefix, port, path.join(tmp, "single")),
				path.join(tmp, "shop-single.log")
			);
			try {
				const procs = [{ name: "shop", pid: shop.pid! }];
				figures.push({
					form: "single",
					name: "idle resident memory, one process",
					value: round(rssMb(shop.pid!) ?? 0, 1),
					unit: "MB"
				});
				await shopWorkloads(
					"single",
					`http://127.0.0.1:${port}`,
					databaseUrl,
					prefix,
					procs
				);
			} finally {
				await stopChild(shop);
			}
			if (PROFILE) {
				const top = summarizeProfile(profDir, 20);
				fs.writeFileSync(
					path.join(ROOT, "bench", "results", "profile-top.json"),
					JSON.stringify(top, null, 2)
				);
				log("CPU profile of the one-process shop (whole run), top self time:");
				console.log(
					table([
						["self %", "self ms", "function", "where"],
						...top.map(t => [t.selfPercent, t.selfMs, t.functionName, t.where])
					])
				);
			}
		}

		if (FORMS.includes("cluster") && nats) {
			const prefix = `c${crypto.randomBytes(3).toString("hex")}_`;
			const port = await freePort();
			const env = shopEnv(databaseUrl, prefix, port, path.join(tmp, "cluster"));
			let cluster: Cluster | null = null;
			try {
				cluster = await startCluster({
					transporter: nats.url,
					databaseUrl,
					port,
					baseEnv: env,
					env: {}
				});
				await new Promise(r => setTimeout(r, 3_000));
				const idle: Record<string, number> = {};
				for (const n of cluster.nodes) idle[n.nodeID] = round(rssMb(n.pid) ?? 0, 1);
				figures.push({
					form: "cluster",
					name: "idle resident memory per node (max)",
					value: Math.max(...Object.values(idle)),
					unit: "MB",
					extra: idle
				});
				const procs = [
					...cluster.nodes.map(n => ({ name: n.nodeID, pid: n.pid })),
					{ name: "nats-server", pid: nats.pid }
				];
				await shopWorkloads("cluster", cluster.url!, databaseUrl, prefix, procs);
			} finally {
				await cluster?.stop();
			}
		}
	} finally {
		await nats?.stop();
		await pgStop?.();
		fs.rmSync(tmp, { recursive: true, force: true });
	}

	const rows: (string | number)[][] = [
		[
			"form",
			"figure",
			"value",
			"unit",
			"ratio to floor",
			"p50 ms",
			"p99 ms",
			"busiest process CPU %"
		]
	];
	for (const f of figures) {
		const busiest = f.usage
			? Object.entries(f.usage).sort((a, b) => b[1].cpuPercent - a[1].cpuPercent)[0]
			: undefined;
		rows.push([
			f.form,
			f.name,
			f.value,
			f.unit,
			f.ratio === undefined ? "" : `${f.ratio} × ${f.floor}`,
			f.p50 ?? "",
			f.p99 ?? "",
			busiest ? `${busiest[0]} ${busiest[1].cpuPercent}` : ""
		]);
	}
	console.log(`\n${table(rows)}\n`);
	const result = {
		date: new Date().toISOString(),
		machine: {
			cores: os.cpus().length,
			cpu: os.cpus()[0]?.model,
			node: process.version,
			loadavg: os.loadavg()
		},
		settings: { durationS: DURATION, connections: CONNECTIONS, forms: FORMS },
		floors,
		figures,
		wallSeconds: round((Date.now() - t0) / 1000, 0)
	};
	const out = process.env.BENCH_OUT ?? path.join(ROOT, "bench", "results", "latest.json");
	fs.mkdirSync(path.dirname(out), { recursive: true });
	fs.writeFileSync(out, JSON.stringify(result, null, 2));
	log(`wrote ${path.relative(ROOT, out)} (${result.wallSeconds} s)`);
}

/**
 * The one-process shop (`npm start` form), resolved when it prints "Ready". Its stdout and stderr
 * are a pipe read by a log collector of its own, `cat` appending to `logFile` (in production a
 * container runtime reads the pipe): the bench reads the file only until the shop is ready.
 * (Piped into this process, the JSON line of every request took the load generator's CPU, and,
 * when it lagged, filled the pipe.)
 */
async function spawnShop(
	args: string[],
	env: Record<string, string>,
	logFile: string
): Promise<ChildProcess> {
	const { spawn } = await import("node:child_process");
	const fd = fs.openSync(logFile, "a");
	const collector = spawn("cat", [], { stdio: ["pipe", fd, "ignore"] });
	fs.closeSync(fd);
	const child = spawn(process.execPath, args, {
		env,
		stdio: ["ignore", collector.stdin!, collector.stdin!],
		cwd: ROOT
	});
	// The shop holds the pipe's writing end now; the collector ends when the shop does.
	collector.stdin!.destroy();
	for (;;) {
		const out = fs.readFileSync(logFile, "utf8");
		if (child.exitCode !== null || child.signalCode !== null)
			throw new Error(
				`the shop exited ${child.exitCode ?? child.signalCode}:\n${out.slice(-20_000)}`
			);
		if (/\[shop\] Ready in/.test(out)) return child;
		await new Promise(r => setTimeout(r, 100));
	}
}

main().catch(err => {
	console.error("[bench] failed:", err);
	process.exit(1);
});
