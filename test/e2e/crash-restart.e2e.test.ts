/**
 * Crash-only start-up of the one-process shop (`npm start` form, production config): the shop's
 * Node process is SIGKILLed under an order load (what the OOM killer or a power-cycled container
 * does), its embedded Postgres left running as an orphan; `npm start` again on the same DATA_DIR
 * must come up (tools/postmaster.ts stops the orphan, then starts Postgres), and a client retrying
 * each order with its Idempotency-Key through the restart learns every order it placed. Every
 * accepted order ends CONFIRMED or CANCELLED and the stock is exact.
 *
 * Also: the watchdog (tools/watchdog.ts) stops the postmaster within seconds when the shop dies and
 * the watchdog lives; a second shop on a DATA_DIR whose shop runs refuses to start and leaves the
 * running one alone.
 */
import fs from "node:fs";
import pg from "pg";
import { childProcesses, processInfo, waitForPidExit } from "../../tools/process-info";
import { isOverloaded, retryAfterSeconds } from "../support/overload-retry";
import { api, startShopProcess, type ShopProcess } from "../support/shop-process";

const ADMIN = { email: "admin@example.com", password: "crash-e2e-admin-pw-0192" };
const ENV = {
	NODE_ENV: "production",
	JWT_SECRET: "crash-e2e-secret-crash-e2e-secret-0123456",
	ADMIN_PASSWORD: ADMIN.password
};
/** Orders the client places (one unit each), how many at once, and the stock they compete for. */
const ORDERS = 40;
const CONCURRENCY = 4;
const INITIAL_STOCK = 30;
/** Orders accepted (202) before the crash. */
const CRASH_AFTER = 10;

const delay = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

/** The postmaster's pid, from its lock file. */
function postmasterPid(dataDir: string): number {
	return Number(fs.readFileSync(`${dataDir}/postgres/postmaster.pid`, "utf8").split("\n")[0]);
}

/** The shop's watchdog, its `sh` child (tools/watchdog.ts), if it has one. */
function watchdogOf(shopPid: number): number | null {
	const dog = childProcesses(shopPid).find(
		p => p.argv[0] === "/bin/sh" && p.argv.includes("watchdog")
	);
	return dog?.pid ?? null;
}

/** SIGKILL, resolves when the process has gone. */
async function sigkill(pid: number): Promise<void> {
	process.kill(pid, "SIGKILL");
	expect(await waitForPidExit(pid, 5_000)).toBe(true);
}

describe("crash-only start-up (npm start form)", () => {
	const shops: ShopProcess[] = [];
	/** Postmasters seen, so that afterAll can stop one a failed test orphaned. */
	const postmasters = new Set<number>();
	let dataDir: string;
	/** Ends the client's retry loops (a failed test must not leave them running). */
	let clientStopped = false;

	afterAll(async () => {
		clientStopped = true;
		for (const s of shops)
			if (s.child.exitCode === null && s.child.signalCode === null) await s.stop();
		for (const pid of postmasters)
			if (processInfo(pid)) {
				process.kill(pid, "SIGINT");
				await waitForPidExit(pid, 15_000);
			}
		if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
	}, 60_000);

	it("comes back after a SIGKILL under load; the client learns every order; stock exact", async () => {
		const first = await startShopProcess({ env: ENV });
		shops.push(first);
		dataDir = first.dataDir;
		const base = first.url;
		postmasters.add(postmasterPid(dataDir));

		const admin = (await api(base, "POST", "/api/users/login", { body: ADMIN })).body.token;
		const reg = await api(base, "POST", "/api/users/register", {
			body: { email: "crash@example.com", password: "crash test customer", name: "crash" }
		});
		expect(reg.status).toBe(201);
		const token: string = reg.body.token;
		const product = (await api(base, "GET", "/api/products?search=mug")).body.rows[0];
		const set = await api(base, "PUT", `/api/inventory/${product.id}`, {
			token: admin,
			body: { onHand: INITIAL_STOCK }
		});
		expect(set.body).toMatchObject({ onHand: INITIAL_STOCK, reserved: 0 });

		// The client: each order has its key and is retried until an answer names an order.
		const answers = {
			accepted: 0,
			retriedConnection: 0,
			retried503: 0,
			retriedOverloaded: 0,
			retried429: 0,
			fiveHundreds: [] as string[]
		};
		const orderOf = new Map<string, string>();
		const keys = Array.from({ length: ORDERS }, (_, i) => `crash-order-${i}`);
		const place = async (key: string, i: number): Promise<void> => {
			const end = Date.now() + 150_000;
			while (Date.now() < end && !clientStopped) {
				try {
					const r = await api(base, "POST", "/api/orders", {
						token,
						headers: { "Idempotency-Key": key },
						body: {
							items: [{ productId: product.id, quantity: 1 }],
							paymentMethod: i % 5 === 4 ? "tok_chargeDeclined" : "tok_visa"
						}
					});
					if (r.status === 202) {
						answers.accepted++;
						orderOf.set(key, r.body.id);
						return;
					}
					if (isOverloaded(r)) {
						// The node's adaptive limit on sagas in flight (backpressure, not the
						// restart): a client waits Retry-After and tries the same key again.
						answers.retriedOverloaded++;
						await delay(1_000 * (retryAfterSeconds(r) ?? 1));
						continue;
					} else if (r.status === 503) answers.retried503++;
					else if (r.status === 429 && r.body?.type === "ORDERS_CUSTOMER_LIMIT") {
						// The customer's other orders are still in flight (their sagas resume after
						// the restart): a client waits Retry-After and tries the same key again.
						answers.retried429++;
						await delay(1_000 * Number(r.headers.get("retry-after") ?? 1));
						continue;
					} else answers.fiveHundreds.push(`${r.status} ${JSON.stringify(r.body)}`);
				} catch {
					answers.retriedConnection++;
				}
				await delay(200);
			}
		};
		let next = 0;
		const client = Promise.all(
			Array.from({ length: CONCURRENCY }, async () => {
				while (next < keys.length && !clientStopped) {
					const i = next++;
					await place(keys[i]!, i);
				}
			})
		);

		// Mid-load: the shop's Node process and its watchdog die (SIGKILL); Postgres lives on.
		while (answers.accepted < CRASH_AFTER) await delay(20);
		const pm = postmasterPid(dataDir);
		const dog = watchdogOf(first.child.pid!);
		if (dog !== null) await sigkill(dog);
		await sigkill(first.child.pid!);
		const acceptedBeforeCrash = answers.accepted;
		await delay(300);
		expect(processInfo(pm)).not.toBeNull();

		const t0 = Date.now();
		const second = await startShopProcess({ dataDir, env: first.env });
		shops.push(second);
		const restartMs = Date.now() - t0;
		postmasters.add(postmasterPid(dataDir));
		expect(second.output()).toContain(`Postgres pid ${pm} was left running`);
		expect(processInfo(pm)).toBeNull();

		await client;
		expect(orderOf.size).toBe(ORDERS);
		expect(new Set(orderOf.values()).size).toBe(ORDERS);
		// The customer has exactly these orders: no key made a second one.
		const mine = await api(base, "GET", "/api/orders?pageSize=100", { token });
		expect(mine.status).toBe(200);
		expect(new Set(mine.body.rows.map((o: { id: string }) => o.id))).toEqual(
			new Set(orderOf.values())
		);

		// Every order ends CONFIRMED or CANCELLED; stock = initial - confirmed units.
		const final = new Map<string, { status: string; cancellationReason?: string }>();
		const end = Date.now() + 90_000;
		while (final.size < ORDERS && Date.now() < end) {
			for (const id of orderOf.values()) {
				if (final.has(id)) continue;
				const r = await api(base, "GET", `/api/orders/${id}`, { token });
				if (r.body?.status === "CONFIRMED" || r.body?.status === "CANCELLED")
					final.set(id, r.body);
			}
			if (final.size < ORDERS) await delay(250);
		}
		const statuses = [...final.values()];
		const confirmed = statuses.filter(o => o.status === "CONFIRMED").length;
		const cancelled = statuses.filter(o => o.status === "CANCELLED").length;
		const stock = (await api(base, "GET", `/api/inventory/${product.id}`)).body;
		console.log(
			`crash-restart: ${ORDERS} orders, ${acceptedBeforeCrash} accepted before the SIGKILL; restart ${restartMs} ms (Ready in ${second.startupMs} ms); ` +
				`${confirmed} CONFIRMED, ${cancelled} CANCELLED (${JSON.stringify(
					statuses
						.filter(o => o.cancellationReason)
						.reduce<Record<string, number>>((a, o) => {
							a[o.cancellationReason!] = (a[o.cancellationReason!] ?? 0) + 1;
							return a;
						}, {})
				)}); stock ${JSON.stringify(stock)}; client retries: ${answers.retriedConnection} connection errors, ${answers.retried503} 503, ${answers.retriedOverloaded} 503 ORDERS_OVERLOADED, ${answers.retried429} 429 ORDERS_CUSTOMER_LIMIT, ${answers.fiveHundreds.length} other`
		);
		if (final.size < ORDERS) {
			// What a failure needs to be diagnosed: the unfinished orders, their sagas and steps.
			for (const id of orderOf.values()) {
				if (final.has(id)) continue;
				const order = (await api(base, "GET", `/api/admin/orders/${id}`, { token: admin }))
					.body;
				console.log(`unfinished order ${id}: ${JSON.stringify(order)}`);
				for (const saga of order?.sagas ?? []) {
					const detail = await api(base, "GET", `/api/admin/sagas/${saga.id}`, {
						token: admin
					});
					console.log(`its saga ${saga.id}: ${JSON.stringify(detail.body)}`);
				}
			}
			// Every order's reservation and payment, against the stock row.
			for (const id of orderOf.values()) {
				const o = (await api(base, "GET", `/api/admin/orders/${id}`, { token: admin }))
					.body;
				console.log(
					`order ${id}: ${o?.status} reservation ${o?.reservation?.status ?? "none"} captured ${o?.captured} refunded ${o?.refunded} saga ${(o?.sagas ?? []).map((g: { status: string; currentStep: number }) => `${g.status}@${g.currentStep}`).join(",")}`
				);
			}
			// The inventory's own record: every stock change (its outbox) and reservation.
			const pid = fs.readFileSync(`${dataDir}/postgres/postmaster.pid`, "utf8").split("\n");
			const db = new pg.Client({
				host: `${dataDir}/postgres`,
				port: Number(pid[3]),
				user: "postgres",
				password: fs.readFileSync(`${dataDir}/postgres-password`, "utf8").trim(),
				database: "inventory"
			});
			await db.connect();
			try {
				const changes = await db.query(
					`SELECT seq, data->>'onHand' AS on_hand, data->>'reserved' AS reserved, request_id, created_at FROM outbox WHERE name = 'stock.changed' ORDER BY seq`
				);
				for (const r of changes.rows)
					console.log(
						`stock.changed #${r.seq} onHand ${r.on_hand} reserved ${r.reserved} request ${r.request_id} at ${r.created_at.toISOString()}`
					);
				const res = await db.query(
					`SELECT order_id, status, created_at, updated_at FROM reservations ORDER BY created_at`
				);
				for (const r of res.rows)
					console.log(
						`reservation ${r.order_id} ${r.status} created ${r.created_at.toISOString()} updated ${r.updated_at.toISOString()}`
					);
				const keys = await db.query(
					`SELECT key, action, outcome, created_at FROM idempotency_keys ORDER BY created_at`
				);
				for (const r of keys.rows)
					console.log(
						`key ${r.key} ${r.action} ${r.outcome} at ${r.created_at.toISOString()}`
					);
			} finally {
				await db.end();
			}
			// The shops' whole logs, minus the test's polling.
			const logs = `${dataDir}-logs`;
			fs.mkdirSync(logs, { recursive: true });
			const quiet = (out: string): string =>
				out
					.split("\n")
					.filter(l => !l.includes("GET /api/orders/"))
					.join("\n");
			fs.writeFileSync(`${logs}/first.log`, quiet(first.output()));
			fs.writeFileSync(`${logs}/second.log`, quiet(second.output()));
			console.log(`the shops' logs: ${logs}`);
		}
		expect(final.size).toBe(ORDERS);
		expect(stock).toMatchObject({
			onHand: INITIAL_STOCK - confirmed,
			reserved: 0,
			available: INITIAL_STOCK - confirmed
		});
		expect(confirmed).toBeGreaterThan(0);
		// 503 and refused connections are what a client retries; anything else is a failure.
		expect(answers.fiveHundreds).toEqual([]);
	}, 300_000);

	it("refuses a second shop on the DATA_DIR of a running one, which keeps working", async () => {
		const running = shops[shops.length - 1]!;
		const pm = postmasterPid(dataDir);
		await expect(
			startShopProcess({
				dataDir,
				env: { ...ENV, LOGLEVEL: "warn" },
				timeoutMs: 30_000
			})
		).rejects.toThrow(/belongs to a running shop/);
		expect(postmasterPid(dataDir)).toBe(pm);
		expect((await api(running.url, "GET", "/ready")).status).toBe(200);
	}, 60_000);

	it("the watchdog stops the orphaned Postgres within seconds of the shop's SIGKILL", async () => {
		const running = shops[shops.length - 1]!;
		const pm = postmasterPid(dataDir);
		const t0 = Date.now();
		process.kill(running.child.pid!, "SIGKILL");
		expect(await waitForPidExit(pm, 5_000)).toBe(true);
		const exitMs = Date.now() - t0;
		console.log(`watchdog: postmaster exited ${exitMs} ms after the shop's SIGKILL`);
		expect(fs.existsSync(`${dataDir}/postgres/postmaster.pid`)).toBe(false);

		// And the next start has nothing to recover.
		const next = await startShopProcess({ dataDir, env: running.env });
		shops.push(next);
		postmasters.add(postmasterPid(dataDir));
		expect(next.output()).not.toContain("was left running");
		expect((await api(next.url, "GET", "/ready")).status).toBe(200);
		expect(await next.stop()).toBe(0);
	}, 120_000);
});
