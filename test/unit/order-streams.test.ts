/**
 * Order streams (`GET /api/orders/:id/events`, services/api/order-streams.ts) that one customer cannot use
 * to hurt another (issue 16, item 8), against the real gateway (an HTTP server on a free port)
 * and the real services on Postgres:
 * - a cap per user (and per client address): the N+1th stream of one user is 429
 *   `ORDERS_STREAM_LIMIT` with `Retry-After`, while another user's stream is accepted; a stream
 *   that ends gives its slot back;
 * - a client that disconnects while its order is being looked up (authorisation) leaves nothing
 *   behind: no registered stream (listener, heartbeat, expiry timer), no slot held;
 * - a stream ends (`event: end`, `TOKEN_EXPIRED`) when its token expires;
 * - a stream ends (`event: end`, `SAGA_PARKED`) when its order's saga is parked;
 * - open streams hold no slot of the gateway's request bulkhead (here 3 at once, so that a few
 *   streams would fill it): other requests are answered while they stream.
 *
 * Orders are parked past their pivot (status `CONFIRMING`, never final) by a broken
 * `inventory.commit` (a non-retryable 500), so their streams stay open until the test ends them.
 */
import crypto from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import jwt from "jsonwebtoken";
import { Errors, type Middleware, type ServiceBroker } from "moleculer";
import { config } from "../../platform/config";
import type { OrderStreamCounts } from "../../services/api/order-streams";
import type { Order } from "../../services/orders/orders.model";
import { admin, startTestBroker, waitFor, type TestBroker } from "../support/broker";
import { fastQuery } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";

/**
 * `inventory.commit`, when `broken`: waits for `gate` (if set), then fails with a non-retryable
 * 500, which parks the saga past its pivot at once.
 */
class BrokenCommit {
	broken = true;
	gate: Promise<void> | null = null;
	middleware(): Middleware {
		return {
			name: "BrokenCommit",
			localAction: (next: (ctx: unknown) => Promise<unknown>, action: { name: string }) => {
				if (action.name !== "inventory.commit") return next;
				return async (ctx: unknown): Promise<unknown> => {
					if (!this.broken) return next(ctx);
					if (this.gate) await this.gate;
					throw new Errors.MoleculerError("Injected: broken", 500, "BROKEN");
				};
			}
		} as unknown as Middleware;
	}
}

/** An order stream as a client sees it. */
interface StreamClient {
	status: number;
	headers: http.IncomingHttpHeaders;
	/** Everything received so far. */
	text(): string;
	/** Resolves when the server ends the stream (or the connection closes). */
	ended: Promise<void>;
	close(): void;
}

const PER_USER = 2;
/** The broker's bulkhead (per action) in this suite: fewer than two users' streams. */
const BULKHEAD = 3;

describe("order streams: caps, authorisation, expiry, parking", () => {
	const commit = new BrokenCommit();
	let t: TestBroker;
	let broker: ServiceBroker;
	let base: string;
	let gateway: { orderStreamCounts(): OrderStreamCounts };
	/** Every stream request made, answered or not: closed after each test, also on failure. */
	const open: { close(): void }[] = [];

	beforeAll(async () => {
		t = await startTestBroker(
			["api", "users", "products", "inventory", "payments", "notifications", "orders"],
			{
				env: { ORDER_STREAMS_MAX_PER_USER: String(PER_USER) },
				broker: {
					middlewares: [commit.middleware()],
					bulkhead: { enabled: true, concurrency: BULKHEAD, maxQueueSize: 100 }
				}
			}
		);
		broker = t.broker;
		const svc = broker.getLocalService("api") as unknown as {
			server: http.Server;
			orderStreamCounts(): OrderStreamCounts;
		};
		base = `http://127.0.0.1:${(svc.server.address() as AddressInfo).port}`;
		gateway = svc;
	}, 90_000);
	afterEach(() => {
		for (const s of open.splice(0)) s.close();
	});
	afterAll(async () => t?.stop());

	/** A registered customer: its id and a token the shop issued. */
	const signUp = async (): Promise<{ id: string; token: string }> => {
		const r: { user: { id: string }; token: string } = await broker.call("users.register", {
			email: `s-${crypto.randomBytes(4).toString("hex")}@example.com`,
			password: "a long stream passphrase",
			name: "Streamer"
		});
		return { id: r.user.id, token: r.token };
	};

	const product = async (): Promise<string> => {
		const p: { id: string } = await broker.call(
			"products.create",
			{
				sku: `OS-${crypto.randomBytes(4).toString("hex")}`,
				name: "Streamed",
				price: 1_000,
				stock: 100
			},
			{ meta: { user: admin } }
		);
		return p.id;
	};

	const getOrder = (id: string): Promise<Order> => broker.call("orders.get", { id });

	/** Places an order of `user`'s; it goes past its pivot and parks (or waits at `gate`). */
	const place = async (user: { id: string }, productId: string): Promise<Order> =>
		broker.call(
			"orders.create",
			{ items: [{ productId, quantity: 1 }], paymentMethod: "tok_visa" },
			{ meta: { user: { id: user.id, email: "s@example.com", name: "S", role: "customer" } } }
		);

	/** A parked order (CONFIRMING, saga FAILED): its stream never ends by itself. */
	const parkedOrder = async (user: { id: string }, productId: string): Promise<Order> => {
		const o = await place(user, productId);
		const page = await waitFor(
			() =>
				broker.call<{ rows: { orderId: string }[] }, Record<string, unknown>>(
					"orders.listSagas",
					{ status: "FAILED", pageSize: 100 },
					{ meta: { user: admin } }
				),
			p => p.rows.some(s => s.orderId === o.id),
			10_000
		);
		expect(page.rows.some(s => s.orderId === o.id)).toBe(true);
		return o;
	};

	/**
	 * Opens `GET /api/orders/:id/events` with `token`; resolves once the answer's head is in, or
	 * after 5 s without one with status 0 (a request left waiting, e.g. in a full bulkhead).
	 */
	const stream = (token: string, orderId: string): Promise<StreamClient> =>
		new Promise((resolve, reject) => {
			let body = "";
			let endedResolve!: () => void;
			const ended = new Promise<void>(r => (endedResolve = r));
			const req = http.get(
				`${base}/api/orders/${orderId}/events`,
				{ headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" } },
				res => {
					clearTimeout(noHead);
					res.setEncoding("utf8");
					res.on("data", (d: string) => (body += d));
					res.once("end", endedResolve);
					res.once("close", endedResolve);
					resolve({
						status: res.statusCode ?? 0,
						headers: res.headers,
						text: () => body,
						ended,
						close: () => req.destroy()
					});
				}
			);
			open.push({ close: () => req.destroy() });
			const noHead = setTimeout(() => {
				resolve({
					status: 0,
					headers: {},
					text: () => body,
					ended,
					close: () => req.destroy()
				});
			}, 5_000);
			req.once("error", err => {
				clearTimeout(noHead);
				endedResolve();
				reject(err);
			});
		});

	/** Waits until the gateway holds no stream and no slot. */
	const drained = (): Promise<OrderStreamCounts> =>
		waitFor(
			async () => gateway.orderStreamCounts(),
			c => c.streams === 0 && c.slots === 0,
			5_000,
			20
		);
	const NOTHING: OrderStreamCounts = { streams: 0, orders: 0, slots: 0, users: 0, addresses: 0 };

	it("caps streams per user: the third of one user is 429 with Retry-After, another user's is accepted", async () => {
		const productId = await product();
		const ann = await signUp();
		const bob = await signUp();
		const annOrder = await parkedOrder(ann, productId);
		const bobOrder = await parkedOrder(bob, productId);

		const first = await stream(ann.token, annOrder.id);
		const second = await stream(ann.token, annOrder.id);
		expect([first.status, second.status]).toEqual([200, 200]);
		const third = await stream(ann.token, annOrder.id);
		await Promise.race([third.ended, new Promise(r => setTimeout(r, 5_000))]);
		expect(third.status).toBe(429);
		expect(third.headers["retry-after"]).toBe("5");
		expect(JSON.parse(third.text())).toMatchObject({
			code: 429,
			type: "ORDERS_STREAM_LIMIT",
			data: { maxPerUser: PER_USER, retryAfter: 5 }
		});
		const other = await stream(bob.token, bobOrder.id);
		expect(other.status).toBe(200);
		expect(gateway.orderStreamCounts()).toMatchObject({ streams: 3, slots: 3, users: 2 });

		// A stream that ends gives its slot back.
		first.close();
		await waitFor(
			async () => gateway.orderStreamCounts(),
			c => c.slots === 2,
			5_000,
			20
		);
		const again = await stream(ann.token, annOrder.id);
		expect(again.status).toBe(200);
		for (const s of [second, other, again]) s.close();
		expect(await drained()).toEqual(NOTHING);
	});

	it("a client that disconnects while its order is looked up leaves nothing behind", async () => {
		const productId = await product();
		const ann = await signUp();
		const o = await parkedOrder(ann, productId);
		expect(gateway.orderStreamCounts()).toEqual(NOTHING);

		// The lookup (orders.get, the authorisation) waits on a lock of the orders table.
		const { db } = broker.getLocalService("orders") as unknown as { db: ShopDatabase };
		// The lock is held until the callback ends (committed, or rolled back when it throws).
		await db.transaction(async lock => {
			await fastQuery(db, "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE", {
				transaction: lock
			});
			const req = http.get(`${base}/api/orders/${o.id}/events`, {
				headers: { Authorization: `Bearer ${ann.token}` }
			});
			req.once("error", () => undefined);
			// Authorising: a slot is held, nothing is registered yet.
			const during = await waitFor(
				async () => gateway.orderStreamCounts(),
				c => c.slots === 1,
				5_000,
				10
			);
			expect(during).toMatchObject({ streams: 0, slots: 1 });
			req.destroy();
			await new Promise(r => setTimeout(r, 300)); // the gateway sees the close
		});
		// The lookup completes for a client that is gone: nothing registered, slot returned.
		expect(await drained()).toEqual(NOTHING);
		await new Promise(r => setTimeout(r, 300));
		expect(gateway.orderStreamCounts()).toEqual(NOTHING);
	});

	it("ends a stream when its token expires", async () => {
		const productId = await product();
		const ann = await signUp();
		const o = await parkedOrder(ann, productId);
		const token = jwt.sign({ role: "customer" }, config().jwtSecret, {
			algorithm: "HS256",
			subject: ann.id,
			issuer: "moleculer-shop",
			expiresIn: 3
		});
		const t0 = Date.now();
		const s = await stream(token, o.id);
		expect(s.status).toBe(200);
		await Promise.race([s.ended, new Promise(r => setTimeout(r, 10_000))]);
		const ms = Date.now() - t0;
		expect(s.text()).toContain(`event: order\ndata: {"id":"${o.id}"`);
		expect(s.text()).toMatch(/event: end\ndata: \{"reason":"TOKEN_EXPIRED"\}\n\n$/);
		expect(ms).toBeGreaterThanOrEqual(1_500);
		expect(ms).toBeLessThan(6_000);
		expect(await drained()).toEqual(NOTHING);
	});

	it("ends a stream when its order's saga is parked", async () => {
		const productId = await product();
		const ann = await signUp();
		let openGate!: () => void;
		commit.gate = new Promise<void>(r => (openGate = r));
		try {
			const o = await place(ann, productId);
			// Past the pivot, its commit held at the gate: the order is not final.
			await waitFor(
				() => getOrder(o.id),
				x => x.status === "CONFIRMING",
				10_000
			);
			const s = await stream(ann.token, o.id);
			expect(s.status).toBe(200);
			await waitFor(
				async () => s.text(),
				x => x.includes("CONFIRMING"),
				5_000,
				20
			);
			openGate(); // the commit fails: the saga parks
			await Promise.race([s.ended, new Promise(r => setTimeout(r, 10_000))]);
			expect(s.text()).toContain('"event":"saga.failed"');
			expect(s.text()).toMatch(/event: end\ndata: \{"reason":"SAGA_PARKED"\}\n\n$/);
			expect((await getOrder(o.id)).status).toBe("CONFIRMING");
			expect(await drained()).toEqual(NOTHING);
		} finally {
			openGate?.();
			commit.gate = null;
		}
	});

	it("open streams hold no slot of the request bulkhead: other requests are answered", async () => {
		const productId = await product();
		const ann = await signUp();
		const bob = await signUp();
		const orders = [await parkedOrder(ann, productId), await parkedOrder(bob, productId)];
		const streams = [
			await stream(ann.token, orders[0]!.id),
			await stream(ann.token, orders[0]!.id),
			await stream(bob.token, orders[1]!.id),
			await stream(bob.token, orders[1]!.id)
		];
		expect(streams.length).toBeGreaterThan(BULKHEAD);
		expect(streams.map(x => x.status)).toEqual([200, 200, 200, 200]);
		const t0 = Date.now();
		const r = await fetch(`${base}/api/products?pageSize=1`, {
			signal: AbortSignal.timeout(5_000)
		}).catch((err: Error) => ({ status: err.name }));
		expect({ status: r.status, fast: Date.now() - t0 < 2_000 }).toEqual({
			status: 200,
			fast: true
		});
		for (const x of streams) x.close();
		expect(await drained()).toEqual(NOTHING);
	});
});
