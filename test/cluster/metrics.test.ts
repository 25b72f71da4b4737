/**
 * Business metrics on every node's Prometheus endpoint (`METRICS_PORT`, one per node), scraped
 * over HTTP after one paid and one declined order: the orders node counts both orders created,
 * one confirmed and one cancelled for `PAYMENT_DECLINED`, the compensation, and the saga steps'
 * durations by step, phase and outcome (the parked-sagas gauge reads 0); inventory counts two
 * reservations, one committed and one released; payments one capture and one decline; the
 * products node's cacher counts the repeated product read as a hit; the outbox lag is exported.
 */
import crypto from "node:crypto";
import { SHOP_SERVICES } from "../../tools/cluster";
import {
	CLUSTER_ADMIN,
	startCluster,
	until,
	withOutputOnFailure,
	type TestCluster
} from "../support/cluster";
import { freePort } from "../support/ports";
import { api } from "../support/shop-process";

const NODE_IDS = SHOP_SERVICES.map(s => `${s}-1`);

interface Sample {
	name: string;
	labels: Record<string, string>;
	value: number;
}

/** The samples of a Prometheus text exposition. */
function parseMetrics(text: string): Sample[] {
	const out: Sample[] = [];
	for (const line of text.split("\n")) {
		const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
		if (!m) continue;
		const labels: Record<string, string> = {};
		for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
			labels[l[1]!] = l[2]!;
		out.push({ name: m[1]!, labels, value: Number(m[3]) });
	}
	return out;
}

/** The value of the one sample `name` whose labels include `labels` (undefined: none). */
function valueOf(
	samples: Sample[],
	name: string,
	labels: Record<string, string> = {}
): number | undefined {
	const found = samples.filter(
		s => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
	);
	if (found.length > 1)
		throw new Error(`${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
	return found[0]?.value;
}

describe("business metrics per node", () => {
	let cluster: TestCluster;
	let base: string;
	const ports: Record<string, number> = {};

	beforeAll(async () => {
		const used = new Set<number>();
		for (const id of NODE_IDS) {
			let p = await freePort();
			while (used.has(p)) p = await freePort();
			used.add(p);
			ports[id] = p;
		}
		cluster = await startCluster({
			nodeEnv: Object.fromEntries(
				NODE_IDS.map(id => [id, { METRICS_PORT: String(ports[id]) }])
			)
		});
		base = cluster.url!;
	}, 120_000);
	afterAll(async () => {
		await cluster?.stop();
	}, 60_000);

	const scrape = async (nodeID: string): Promise<Sample[]> => {
		const res = await fetch(`http://127.0.0.1:${ports[nodeID]}/metrics`);
		expect(res.status).toBe(200);
		const samples = parseMetrics(await res.text());
		for (const s of samples.filter(x => x.name.startsWith("shop_")))
			expect(s.labels.nodeID).toBe(nodeID);
		return samples;
	};

	it(
		"count orders, saga steps, compensations, reservations, payments, cache hits and outbox lag",
		() =>
			withOutputOnFailure(cluster, async () => {
				// Before any order: the counters exist at 0 and nothing is parked.
				const before = await scrape("orders-1");
				expect(valueOf(before, "shop_orders_created_total")).toBe(0);
				expect(
					valueOf(before, "shop_orders_cancelled_total", { reason: "PAYMENT_DECLINED" })
				).toBe(0);
				const inventoryBefore = await scrape("inventory-1");
				expect(
					valueOf(inventoryBefore, "shop_inventory_reservations_total", {
						outcome: "reserved"
					})
				).toBe(0);

				const admin = await api(base, "POST", "/api/users/login", { body: CLUSTER_ADMIN });
				const reg = await api(base, "POST", "/api/users/register", {
					body: {
						email: `metrics-${crypto.randomBytes(4).toString("hex")}@example.com`,
						password: `Pw-${crypto.randomBytes(12).toString("base64url")}-9z`,
						name: "Metrics"
					}
				});
				expect(reg.status).toBe(201);
				const product = await api(base, "POST", "/api/products", {
					token: admin.body.token,
					body: {
						sku: `METRICS-${crypto.randomBytes(4).toString("hex")}`,
						name: "Counted widget",
						price: 700,
						currency: "EUR",
						stock: 10
					}
				});
				expect(product.status).toBe(201);
				const order = (paymentMethod: string) =>
					api(base, "POST", "/api/orders", {
						token: reg.body.token,
						body: {
							items: [{ productId: product.body.id, quantity: 1 }],
							paymentMethod
						}
					});
				const paid = await order("tok_visa");
				const declined = await order("tok_chargeDeclined");
				expect([paid.status, declined.status]).toEqual([202, 202]);
				for (const o of [paid, declined])
					await until(
						() =>
							api(base, "GET", `/api/orders/${o.body.id}`, { token: reg.body.token }),
						r => ["CONFIRMED", "CANCELLED"].includes(r.body?.status)
					);
				// Twice the same search: the second read is a cache hit on the products node.
				const cacheBefore = await scrape("products-1");
				const search = `/api/products?search=${crypto.randomBytes(6).toString("hex")}`;
				for (let i = 0; i < 2; i++)
					expect((await api(base, "GET", search)).status).toBe(200);

				const orders = await until(
					() => scrape("orders-1"),
					s => valueOf(s, "shop_orders_confirmed_total") === 1,
					10_000
				);
				expect(valueOf(orders, "shop_orders_created_total")).toBe(2);
				expect(valueOf(orders, "shop_orders_confirmed_total")).toBe(1);
				expect(
					valueOf(orders, "shop_orders_cancelled_total", { reason: "PAYMENT_DECLINED" })
				).toBe(1);
				expect(
					valueOf(orders, "shop_orders_cancelled_total", { reason: "OUT_OF_STOCK" })
				).toBe(0);
				expect(
					valueOf(orders, "shop_saga_compensations_total", {
						saga: "order",
						reason: "PAYMENT_DECLINED"
					})
				).toBe(1);
				const steps = (step: string, phase: string, outcome: string): number | undefined =>
					valueOf(orders, "shop_saga_step_duration_bucket", {
						saga: "order",
						step,
						phase,
						outcome,
						le: "+Inf"
					});
				expect(steps("reserveStock", "forward", "succeeded")).toBe(2);
				expect(steps("chargePayment", "forward", "succeeded")).toBe(1);
				expect(steps("chargePayment", "forward", "failed")).toBe(1);
				expect(steps("commitStock", "forward", "succeeded")).toBe(1);
				expect(steps("reserveStock", "compensate", "succeeded")).toBe(1);
				// The histogram has buckets in ms: a finite bucket holds the fast steps.
				expect(
					orders.some(
						s =>
							s.name === "shop_saga_step_duration_bucket" &&
							s.labels.le === "10000" &&
							s.value > 0
					)
				).toBe(true);
				const parked = await until(
					() => scrape("orders-1"),
					s => valueOf(s, "shop_sagas_parked", { saga: "order" }) !== undefined,
					15_000
				);
				expect(valueOf(parked, "shop_sagas_parked", { saga: "order" })).toBe(0);
				expect(valueOf(orders, "shop_outbox_lag_ms", { service: "orders" })).toBeDefined();

				const inventory = await until(
					() => scrape("inventory-1"),
					s =>
						valueOf(s, "shop_inventory_reservations_total", { outcome: "released" }) ===
						1,
					10_000
				);
				const reservations = (outcome: string): number | undefined =>
					valueOf(inventory, "shop_inventory_reservations_total", { outcome });
				expect(reservations("reserved")).toBe(2);
				expect(reservations("committed")).toBe(1);
				expect(reservations("released")).toBe(1);
				expect(reservations("out_of_stock")).toBe(0);

				const payments = await scrape("payments-1");
				expect(valueOf(payments, "shop_payments_total", { outcome: "captured" })).toBe(1);
				expect(valueOf(payments, "shop_payments_total", { outcome: "declined" })).toBe(1);
				expect(valueOf(payments, "shop_payments_total", { outcome: "refunded" })).toBe(0);

				// Cache hits and misses: Moleculer's cacher metrics (misses = gets - found).
				const cache = await scrape("products-1");
				const gets = (s: Sample[]): number => valueOf(s, "moleculer_cacher_get_total") ?? 0;
				const hits = (s: Sample[]): number =>
					valueOf(s, "moleculer_cacher_found_total") ?? 0;
				expect(gets(cache) - gets(cacheBefore)).toBe(2);
				expect(hits(cache) - hits(cacheBefore)).toBe(1);
				if (process.env.SHOW_CLUSTER_OUTPUT) console.log(cluster.outputs());
			}),
		90_000
	);
});
