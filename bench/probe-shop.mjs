/**
 * What bench/saga-probe.mjs and bench/overload-probe.mjs share: waiting for the shop process to
 * say it is ready, a small REST client, the catalog and customers they order with, and a client on
 * the orders database (the database's clock for 202 → CONFIRMED).
 */
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const crypto = require("node:crypto");
const { performance } = require("node:perf_hooks");
const { Client } = require("pg");

/** Resolves once the shop printed "Ready in"; rejects with its output if it exits first. */
export function waitReady(shop) {
	let out = "";
	return new Promise((res, rej) => {
		const on = d => {
			out = (out + d).slice(-20_000);
			if (/Ready in/.test(out)) res();
		};
		shop.stdout.on("data", on);
		shop.stderr.on("data", on);
		shop.once("exit", () => rej(new Error(out)));
	});
}

/**
 * A REST client of the shop at `base`: `api(method, path, body?, token?)` resolves with
 * `{ status, retryAfter, ms, body }` (`ms`: the answer's time on the client's clock).
 */
export function apiClient(base) {
	return async function api(m, u, b, tok) {
		const t0 = performance.now();
		const r = await fetch(base + u, {
			method: m,
			headers: {
				...(b ? { "Content-Type": "application/json" } : {}),
				...(tok ? { Authorization: `Bearer ${tok}` } : {})
			},
			body: b ? JSON.stringify(b) : undefined
		});
		const t = await r.text();
		return {
			status: r.status,
			retryAfter: r.headers.get("retry-after"),
			ms: performance.now() - t0,
			body: t ? JSON.parse(t) : null
		};
	};
}

/**
 * Creates `products` products (price 1000 cents USD, stock that never runs out) as the admin and
 * registers `customers` customers (enough that the per-customer bound,
 * ORDERS_MAX_IN_FLIGHT_PER_CUSTOMER, never refuses first).
 * @returns `{ pids, toks }`: the product ids and the customers' tokens
 */
export async function seedShop(api, { adminEmail, adminPassword, products, customers, tag }) {
	const admin = await api("POST", "/api/users/login", {
		email: adminEmail,
		password: adminPassword
	});
	const pids = [];
	for (let i = 0; i < products; i++) {
		const p = await api(
			"POST",
			"/api/products",
			{
				sku: `${tag}-${crypto.randomBytes(4).toString("hex")}`.toUpperCase(),
				name: `P ${i}`,
				description: "x",
				price: 1000,
				currency: "USD",
				stock: 100_000_000
			},
			admin.body.token
		);
		pids.push(p.body.id);
	}
	const toks = [];
	for (let i = 0; i < customers; i++) {
		const r = await api("POST", "/api/users/register", {
			email: `${tag.toLowerCase()}${i}-${crypto.randomBytes(3).toString("hex")}@example.com`,
			password: "correct horse battery staple",
			name: "U"
		});
		toks.push(r.body.token);
	}
	return { pids, toks };
}

/** A connected client on the orders database of the shop whose databases are `prefix`-named. */
export async function ordersDatabase(pgUrl, prefix) {
	const u = new URL(pgUrl);
	u.pathname = `/${prefix}orders`;
	const db = new Client({ connectionString: u.toString() });
	await db.connect();
	return db;
}
