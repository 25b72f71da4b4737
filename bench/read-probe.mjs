/**
 * `node bench/read-probe.mjs`: the cached `GET /api/products/:id` of the one-process shop against
 * the moleculer-web empty-action floor (`dist/bench/floors.js gateway-local`), interleaved round
 * by round on a shared, noisy machine: the floor and every shop variant stay up for the whole
 * run; each round measures the floor, then each variant (in reverse order every other round),
 * for `DURATION` s with `CONNECTIONS` connections, and prints every figure with its ratio to the
 * floor of the same round, and the server process's CPU ms per answer (from /proc: less
 * sensitive to the other work on the machine than req/s); the summary gives each variant's
 * median ratios. Needs `npm run build` and `tsc -p bench`.
 *
 * Variants (`VARIANTS`, JSON, default one: the production configuration): a list of
 * `{ "label": "...", "env": { ... }, "dist": "/path/to/dist" }`; `env` is added to the production
 * shop's environment (`NODE_ENV=production`, default log level: info, JSON lines), `dist` is
 * another build of the shop (the before of a before/after, measured in the same rounds),
 * `"stdout"`: where the shop's output goes: `"collector"` (default) a pipe read by `cat` into a
 * file, as a container runtime reads a container's stdout; `"pipe"` a pipe this process drains
 * (the load generator's CPU then reads the logs too); `"file"` a file. Each variant is its own shop
 * process on the same embedded Postgres (its own database prefix), up for the whole run.
 *
 * Env: `ROUNDS` (3), `DURATION` (5 s), `CONNECTIONS` (32), `PROF=1` (a CPU profile of each
 * variant's shop, in bench/results/read-profile/<label>/, and of the floor, in .../floor/), `OUT`
 * (a JSON file of every figure).
 */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
const require = createRequire(import.meta.url);
const path = require("node:path"),
	fs = require("node:fs"),
	os = require("node:os");
const { spawn } = require("node:child_process");
const { clearTimeout } = require("node:timers");
const autocannon = require("autocannon");
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { startEmbeddedPostgres } = require(path.join(ROOT, "dist/tools/embedded-postgres.js"));
const { freePort } = require(path.join(ROOT, "dist/tools/local-servers.js"));
const { apiClient, seedShop } = await import("./probe-shop.mjs");

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const DURATION = Number(process.env.DURATION ?? 5);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 32);
const VARIANTS = JSON.parse(process.env.VARIANTS ?? '[{"label":"production"}]');
const log = m => console.log(`[read-probe] ${m}`);

/** Cumulative CPU time of `pid` in ms (utime + stime, /proc), or null when it is gone. */
function cpuMs(pid) {
	try {
		const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
		const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
		return (Number(f[11]) + Number(f[12])) * 10;
	} catch {
		return null;
	}
}

/** One autocannon run over `paths` (round robin); req/s of 2xx answers, p50/p99, CPU % of `pid`. */
async function measure(base, paths, pid) {
	let i = 0;
	const c0 = cpuMs(pid);
	const t0 = Date.now();
	const r = await autocannon({
		url: base,
		connections: CONNECTIONS,
		duration: DURATION,
		timeout: 30,
		requests: [
			{ method: "GET", setupRequest: req => ({ ...req, path: paths[i++ % paths.length] }) }
		]
	});
	const used = cpuMs(pid) - c0;
	const cpu = (used / (Date.now() - t0)) * 100;
	return {
		/** CPU ms of the server process per 2xx answer. */
		cpuPerReq: r["2xx"] ? Math.round((used / r["2xx"]) * 1000) / 1000 : null,
		rps: Math.round(r["2xx"] / r.duration),
		p50: r.latency.p50,
		p99: r.latency.p99,
		non2xx: r.non2xx,
		errors: r.errors + r.timeouts,
		cpu: Math.round(cpu)
	};
}

/**
 * A child process, resolved once its output matches `ready`. With `logFile`, its stdout and
 * stderr are a pipe that a log collector, `cat`, appends to that file (or, `file`, the file
 * itself), read until ready; without, pipes this process drains, unread, after ready.
 */
async function startChild(args, env, ready, logFile, file = false) {
	if (logFile) {
		const fd = fs.openSync(logFile, "a");
		const collector = spawn("cat", [], { stdio: ["pipe", fd, "ignore"] });
		fs.closeSync(fd);
		const out = file ? fs.openSync(logFile, "a") : collector.stdin;
		const child = spawn(process.execPath, args, {
			env,
			stdio: ["ignore", out, out],
			cwd: ROOT
		});
		if (file) fs.closeSync(out);
		collector.stdin.destroy();
		for (;;) {
			if (child.exitCode !== null || child.signalCode !== null)
				throw new Error(`${args.join(" ")} exited:\n${fs.readFileSync(logFile, "utf8")}`);
			if (ready.test(fs.readFileSync(logFile, "utf8"))) return child;
			await new Promise(r => setTimeout(r, 100));
		}
	}
	const child = spawn(process.execPath, args, {
		env,
		stdio: ["ignore", "pipe", "pipe"],
		cwd: ROOT
	});
	let out = "";
	await new Promise((resolve, reject) => {
		const on = d => {
			out = (out + d).slice(-20_000);
			if (ready.test(out)) resolve();
		};
		child.stdout.on("data", on);
		child.stderr.on("data", on);
		child.once("exit", code => reject(new Error(`${args.join(" ")} exited ${code}:\n${out}`)));
		child._readyListener = on;
	});
	// From here the output is only drained (a log collector reading the pipe), not parsed.
	child.stdout.off("data", child._readyListener);
	child.stderr.off("data", child._readyListener);
	child.stdout.resume();
	child.stderr.resume();
	child.removeAllListeners("exit");
	return child;
}

async function stop(child) {
	if (!child || child.exitCode !== null || child.signalCode !== null) return;
	const exited = new Promise(r => child.once("exit", r));
	child.kill("SIGTERM");
	const t = setTimeout(() => child.kill("SIGKILL"), 15_000);
	await exited;
	clearTimeout(t);
}

const median = xs => {
	const s = [...xs].sort((a, b) => a - b);
	return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "read-probe-"));
fs.chmodSync(tmp, 0o755);
const pg = await startEmbeddedPostgres({ dataDir: path.join(tmp, "pg"), port: await freePort() });
const shops = [];
const rows = [];
let floor = null;
try {
	for (const [k, v] of VARIANTS.entries()) {
		const port = await freePort();
		const dist = v.dist ?? path.join(ROOT, "dist");
		const env = {
			PATH: `${ROOT}/node_modules/.bin:${process.env.PATH}`,
			HOME: process.env.HOME,
			NODE_ENV: "production",
			DATABASE_URL: pg.url,
			DATABASE_PREFIX: `r${k}_`,
			DATA_DIR: path.join(tmp, `d${k}`),
			PORT: String(port),
			METRICS_PORT: "0",
			HEALTH_PORT: "0",
			RATE_LIMIT_MAX: "0",
			JWT_SECRET: "bench-secret-bench-secret-bench-secret-0123456789",
			ADMIN_EMAIL: "admin@example.com",
			ADMIN_PASSWORD: "bench-admin-password-1",
			...(v.env ?? {})
		};
		const prof = process.env.PROF
			? [
					"--cpu-prof",
					`--cpu-prof-dir=${path.join(ROOT, "bench", "results", "read-profile", v.label)}`
				]
			: [];
		const shop = await startChild(
			[...prof, path.join(dist, "bin/start.js")],
			env,
			/Ready in/,
			v.stdout === "pipe" ? null : path.join(tmp, `shop-${k}.log`),
			v.stdout === "file"
		);
		const base = `http://127.0.0.1:${port}`;
		const { pids } = await seedShop(apiClient(base), {
			adminEmail: env.ADMIN_EMAIL,
			adminPassword: env.ADMIN_PASSWORD,
			products: 8,
			customers: 0,
			tag: "RP"
		});
		const paths = pids.map(id => `/api/products/${id}`);
		// Warm-up: JIT, the cache.
		await measure(base, paths, shop.pid);
		shops.push({ label: v.label, shop, base, paths });
		log(`${v.label}: up on ${base} (${dist})`);
	}
	const floorPort = await freePort();
	const floorProf = process.env.PROF
		? [
				"--cpu-prof",
				`--cpu-prof-dir=${path.join(ROOT, "bench", "results", "read-profile", "floor")}`
			]
		: [];
	floor = await startChild(
		[...floorProf, path.join(ROOT, "dist/bench/floors.js"), "gateway-local", String(floorPort)],
		{ ...process.env },
		/READY/
	);
	const floorBase = `http://127.0.0.1:${floorPort}`;
	await measure(floorBase, ["/api/empty"], floor.pid); // warm-up
	for (let round = 1; round <= ROUNDS; round++) {
		const f = await measure(floorBase, ["/api/empty"], floor.pid);
		rows.push({ round, label: "floor", ...f, ratio: 1, cpuRatio: 1 });
		log(
			`round ${round} floor: ${f.rps} req/s p50 ${f.p50} p99 ${f.p99} cpu ${f.cpu}% (${f.cpuPerReq} ms/req)`
		);
		for (const s of round % 2 ? shops : [...shops].reverse()) {
			const r = await measure(s.base, s.paths, s.shop.pid);
			const ratio = Math.round((r.rps / f.rps) * 100) / 100;
			const cpuRatio = Math.round((f.cpuPerReq / r.cpuPerReq) * 100) / 100;
			rows.push({ round, label: s.label, ...r, ratio, cpuRatio });
			log(
				`round ${round} ${s.label}: ${r.rps} req/s p50 ${r.p50} p99 ${r.p99} cpu ${r.cpu}% (${r.cpuPerReq} ms/req, ${cpuRatio} × floor's CPU efficiency) ` +
					`non2xx ${r.non2xx} errors ${r.errors} → ${ratio} × floor (load ${os.loadavg()[0].toFixed(1)})`
			);
		}
	}
} finally {
	await stop(floor);
	for (const s of shops) await stop(s.shop);
	await pg.stop();
	fs.rmSync(tmp, { recursive: true, force: true });
}
console.log(
	"\nvariant        median ratio   ratios by round (req/s ÷ floor's)    median req/s   median CPU ms/req   median floor CPU/req ÷ this"
);
for (const label of ["floor", ...VARIANTS.map(v => v.label)]) {
	const mine = rows.filter(r => r.label === label);
	console.log(
		`${label.padEnd(14)} ${String(median(mine.map(r => r.ratio))).padEnd(14)} ${mine
			.map(r => r.ratio)
			.join(" / ")
			.padEnd(36)} ${String(median(mine.map(r => r.rps))).padEnd(14)} ${String(
			median(mine.map(r => r.cpuPerReq))
		).padEnd(19)} ${median(mine.map(r => r.cpuRatio))}`
	);
}
if (process.env.OUT) fs.writeFileSync(process.env.OUT, JSON.stringify(rows, null, 2));
