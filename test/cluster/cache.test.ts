/**
 * Product reads cached across nodes, for real: every service in its own `moleculer-runner` process
 * over NATS, products on two nodes (`products-1`, `products-2`).
 *
 * - With `CACHER` (Redis) both replicas share one cache: a read through either fills it (the keys
 *   are in Redis), a change through one empties it for both.
 * - Without it each replica has its own memory cache: a change on one replica must also empty the
 *   other's (moleculer-db's `cache.clean.products` broadcast, handled by every products node).
 *
 * That a read really came from the cache is shown honestly: the product's row is changed in
 * Postgres directly, behind the service's back, and the replicas keep answering the old value
 * until the product is changed through the service; after that, both answer the row as it is.
 */
import crypto from "node:crypto";
import { Redis } from "ioredis";
import { Client } from "pg";
import type { Product } from "../../services/products/products.model";
import { startRedis, type RedisServer } from "../support/redis";
import { api } from "../support/shop-process";
import {
	CLUSTER_ADMIN,
	startCluster,
	withOutputOnFailure,
	type TestCluster
} from "../support/cluster";

const REPLICAS = ["products-1", "products-2"] as const;

/** Sets a product's description in its database directly, bypassing the service and its cache. */
async function updateBehindTheCache(
	cluster: TestCluster,
	id: string,
	description: string
): Promise<void> {
	const url = new URL(process.env.DATABASE_URL!);
	url.pathname = `/${cluster.prefix}products`;
	const client = new Client({ connectionString: url.toString() });
	await client.connect();
	try {
		const r = await client.query("UPDATE products SET description = $1 WHERE id = $2", [
			description,
			id
		]);
		expect(r.rowCount).toBe(1);
	} finally {
		await client.end();
	}
}

/** `products.get` answered by one given replica. */
const getOn = (cluster: TestCluster, nodeID: string, id: string): Promise<Product> =>
	cluster.broker.call("products.get", { id }, { nodeID });

/** The `products.list` row of `sku` as one given replica answers it. */
async function listedOn(cluster: TestCluster, nodeID: string, sku: string): Promise<Product> {
	const page = await cluster.broker.call<{ rows: Product[] }, { search: string }>(
		"products.list",
		{ search: sku },
		{ nodeID }
	);
	expect(page.rows).toHaveLength(1);
	return page.rows[0]!;
}

/** Logs in as the administrator and creates a fresh product; returns its id and SKU. */
async function newProduct(
	base: string
): Promise<{ token: string; id: string; sku: string; product: Product }> {
	const login = await api(base, "POST", "/api/users/login", { body: CLUSTER_ADMIN });
	expect(login.status).toBe(200);
	const token: string = login.body.token;
	const sku = `CACHE-${crypto.randomBytes(4).toString("hex")}`;
	const created = await api(base, "POST", "/api/products", {
		token,
		body: { sku, name: "Cached kettle", description: "original", price: 2500 }
	});
	expect(created.status).toBe(201);
	return { token, id: created.body.id, sku, product: created.body };
}

/**
 * Reads the product on both replicas (filling their caches), changes its row behind the cache and
 * checks that both replicas still answer the cached value.
 */
async function primeAndProveCached(
	cluster: TestCluster,
	id: string,
	sku: string,
	expected: Partial<Product>
): Promise<void> {
	for (const nodeID of REPLICAS) {
		expect(await getOn(cluster, nodeID, id)).toMatchObject(expected);
		expect(await listedOn(cluster, nodeID, sku)).toMatchObject(expected);
	}
	const marker = `changed behind the cache ${crypto.randomBytes(3).toString("hex")}`;
	await updateBehindTheCache(cluster, id, marker);
	for (const nodeID of REPLICAS) {
		expect(await getOn(cluster, nodeID, id)).toMatchObject(expected);
		expect(await listedOn(cluster, nodeID, sku)).toMatchObject(expected);
	}
}

/** Both replicas answer `expected` (get and list), e.g. right after a change. */
async function bothAnswer(
	cluster: TestCluster,
	id: string,
	sku: string,
	expected: Partial<Product>
): Promise<void> {
	for (const nodeID of REPLICAS) {
		expect(await getOn(cluster, nodeID, id)).toMatchObject(expected);
		expect(await listedOn(cluster, nodeID, sku)).toMatchObject(expected);
	}
}

describe("product cache with Redis (CACHER), two products replicas", () => {
	let redis: RedisServer;
	let cluster: TestCluster;
	let client: Redis;

	beforeAll(async () => {
		redis = await startRedis();
		client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
		cluster = await startCluster({ replicas: { products: 2 }, env: { CACHER: redis.url } });
	}, 120_000);
	afterAll(async () => {
		await cluster?.stop();
		client?.disconnect();
		await redis?.stop();
	}, 60_000);

	it("shares one cache in Redis and empties it for both replicas on a change", () =>
		withOutputOnFailure(cluster, async () => {
			const base = cluster.url!;
			const { token, id, sku } = await newProduct(base);
			// Moleculer 0.15 keys: action name, then the `keys` params JSON-encoded.
			const key = `shop-cache-products.get:"${id}"`;
			expect(await client.exists(key)).toBe(0);

			// Through the gateway (round robin over both replicas): the first read fills Redis.
			for (let i = 0; i < 4; i++) {
				const r = await api(base, "GET", `/api/products/${id}`);
				expect(r.status).toBe(200);
				expect(r.body).toMatchObject({ id, name: "Cached kettle" });
			}
			expect(await client.keys("shop-cache*")).toContain(key);
			expect(JSON.parse((await client.get(key))!)).toMatchObject({
				id,
				name: "Cached kettle"
			});

			await primeAndProveCached(cluster, id, sku, { description: "original" });
			// The gateway's reads hit the shared cache too.
			expect((await api(base, "GET", `/api/products/${id}`)).body.description).toBe(
				"original"
			);

			const changed = await api(base, "PATCH", `/api/products/${id}`, {
				token,
				body: { name: "Renamed kettle", price: 2700 }
			});
			expect(changed.status).toBe(200);
			// Every cached products entry (get and list) is gone.
			expect(await client.keys("shop-cache-products.*")).toEqual([]);

			// The row as it is now: the service's change and the one made behind the cache.
			const fresh = { name: "Renamed kettle", price: 2700 };
			await bothAnswer(cluster, id, sku, fresh);
			const viaGateway = await api(base, "GET", `/api/products/${id}`);
			expect(viaGateway.body).toMatchObject(fresh);
			expect(viaGateway.body.description).toMatch(/^changed behind the cache/);
			expect(await client.exists(key)).toBe(1);
		}));
});

describe("product cache in memory (no CACHER), two products replicas", () => {
	let cluster: TestCluster;

	beforeAll(async () => {
		cluster = await startCluster({ replicas: { products: 2 } });
	}, 120_000);
	afterAll(async () => cluster?.stop(), 60_000);

	it("a change through the gateway empties both replicas' own caches", () =>
		withOutputOnFailure(cluster, async () => {
			const base = cluster.url!;
			const { token, id, sku } = await newProduct(base);
			await primeAndProveCached(cluster, id, sku, {
				name: "Cached kettle",
				description: "original"
			});

			const changed = await api(base, "PATCH", `/api/products/${id}`, {
				token,
				body: { name: "Renamed kettle" }
			});
			expect(changed.status).toBe(200);
			await bothAnswer(cluster, id, sku, { name: "Renamed kettle" });
			for (const nodeID of REPLICAS)
				expect((await getOn(cluster, nodeID, id)).description).toMatch(
					/^changed behind the cache/
				);
		}));

	it.each(REPLICAS)("a change handled by %s empties the other replica's cache as well", writer =>
		withOutputOnFailure(cluster, async () => {
			const { id, sku } = await newProduct(cluster.url!);
			await primeAndProveCached(cluster, id, sku, { price: 2500 });

			const price = writer === "products-1" ? 1111 : 2222;
			const updated = await cluster.broker.call<Product, { id: string; price: number }>(
				"products.update",
				{ id, price },
				{ nodeID: writer }
			);
			expect(updated.price).toBe(price);
			const other = REPLICAS.find(n => n !== writer)!;
			for (const nodeID of [other, writer]) {
				const p = await getOn(cluster, nodeID, id);
				expect(p.price).toBe(price);
				expect(p.description).toMatch(/^changed behind the cache/);
				expect((await listedOn(cluster, nodeID, sku)).price).toBe(price);
			}
		})
	);
});
