/**
 * `WebMixin()`: the gateway's web side, mixed into `api` (services/api/api.service.ts) before
 * moleculer-web (its `send404` and `stopped` must come first).
 *
 * - The web app (web/, built by `npm run build` into dist/web, served by moleculer-web's
 *   `assets`): a GET for a page (`Accept: text/html`, no file extension, outside `/api`, `/health`,
 *   `/ready`) that is not a file answers `index.html`, so deep links (`/admin`, `/orders/<id>`)
 *   load the app; anything else not found stays the JSON 404. `webSecurityHeaders` gives the app's
 *   pages a Content-Security-Policy that lets the bundle run (`'self'` only) while `/api` answers
 *   keep `default-src 'none'`.
 * - Order streams (`GET /api/orders/:id/events`, Server-Sent Events): the order as it is when the
 *   client connects, then again whenever an `order.*` or `saga.*` event about it reaches this
 *   gateway, plus the saga's steps (`event: saga`); a heartbeat comment every
 *   `ORDER_STREAM_HEARTBEAT_MS` (which also re-reads the order, in case an event was lost); the
 *   stream ends after a final status (`CONFIRMED`, `CANCELLED`), and with `event: end`
 *   `{ reason }` when its token expires (`TOKEN_EXPIRED`, at the JWT's `exp`) or its saga is
 *   parked while it streams (`SAGA_PARKED`, on `saga.failed`: an operator must act; a client
 *   may reconnect). Authenticated like every other route, with the `Authorization: Bearer`
 *   header (no token in the URL: it would end up in logs and browser history; the web app reads
 *   the stream with `fetch()`, which can send headers, where `EventSource` cannot). Owner or
 *   admin: another customer's order is 404. The stream is registered (listener, heartbeat,
 *   expiry timer) only once that lookup has succeeded and the client is still there: a client
 *   that disconnects during it leaves nothing behind. Bounded per gateway node: at most
 *   `ORDER_STREAMS_MAX_PER_USER` streams (authorising ones included) per user and
 *   `ORDER_STREAMS_MAX_PER_ADDRESS` per client address (`StreamSlots`); past either 429
 *   `ORDERS_STREAM_LIMIT` with `Retry-After`. `orderStreamCounts()` tells what is held. The
 *   gateway routes streams outside its request bulkhead (services/api/api.service.ts `restStream`).
 * - Orders per second (`api.orderRate`, `GET /api/admin/orders/rate`): counts of `order.created`,
 *   `order.confirmed` and `order.cancelled` seen by this gateway, per second, for the last minutes.
 * - Cluster nodes (`api.nodes`, `GET /api/admin/nodes`): `$node.list`, `$node.services` and every
 *   available node's `$node.health`, reduced to what an operator needs (no argv, no environment,
 *   no addresses). `$node.*` itself is never reachable over REST.
 *
 * Moleculer balances an event between the instances of one group (by default the service's name),
 * so with several gateways only one of them would see each order event. The live handlers use a
 * group of their own per node (`api-live-<nodeID>`): every gateway node gets every event.
 */
import fs from "node:fs";
import path from "node:path";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Context, Service, ServiceSchema } from "moleculer";
import jwt from "jsonwebtoken";
import type { ShopServiceSchema } from "../platform/context";
import { config } from "../platform/config";
import { shopError } from "../platform/errors";
import ApiGateway from "moleculer-web";

/**
 * The built web app: `dist/web` next to the compiled code (`dist/mixins/..`), or under `dist/`
 * when this file runs from source (ts-jest).
 */
export const WEB_DIR = (() => {
	const up = path.resolve(__dirname, "..");
	return path.basename(up) === "dist" ? path.join(up, "web") : path.join(up, "dist", "web");
})();

/** The Content-Security-Policy of the web app's pages and files (no inline script or style). */
export const WEB_CSP = [
	"default-src 'self'",
	"script-src 'self'",
	"style-src 'self'",
	"img-src 'self' data:",
	"font-src 'self'",
	"connect-src 'self'",
	"manifest-src 'self'",
	"object-src 'none'",
	"base-uri 'none'",
	"form-action 'self'",
	"frame-ancestors 'none'"
].join("; ");

/** The request's path as the client sent it (moleculer-web strips a route's prefix from `url`). */
export function requestPath(req: IncomingMessage & { originalUrl?: string }): string {
	return (req.originalUrl ?? req.url ?? "/").split("?")[0]!;
}

/** Paths that belong to the API and the probes (strict CSP, never the web app). */
export function isApiPath(url: string | undefined): boolean {
	const p = (url ?? "/").split("?")[0]!;
	return /^\/(?:api|health|ready)(?:\/|$)/.test(p);
}

/**
 * Connect middleware after helmet: the web app's answers get `WEB_CSP` instead of the API's
 * `default-src 'none'`.
 */
export function webSecurityHeaders(
	req: IncomingMessage,
	res: ServerResponse,
	next: () => void
): void {
	if (!isApiPath(requestPath(req))) res.setHeader("Content-Security-Policy", WEB_CSP);
	next();
}

/** `serve-static` options of the web app: hashed files cached for a year, pages revalidated. */
export const WEB_ASSETS_OPTIONS = {
	index: ["index.html"],
	fallthrough: true,
	setHeaders(res: ServerResponse, file: string): void {
		if (/[\\/]assets[\\/]/.test(file))
			res.setHeader("Cache-Control", "public, max-age=31536000, immutable");
		else res.setHeader("Cache-Control", "no-cache");
	}
};

/** Whether a request not routed and not a file should load the app (a deep link). */
export function isPageRequest(req: IncomingMessage): boolean {
	if (req.method !== "GET" && req.method !== "HEAD") return false;
	const p = requestPath(req);
	if (isApiPath(p)) return false;
	if (/\.[A-Za-z0-9]+$/.test(p)) return false;
	return String(req.headers.accept ?? "").includes("text/html");
}

/** Interval of the heartbeat comment (and order re-read) of an order stream, in ms. */
export const ORDER_STREAM_HEARTBEAT_MS = 15_000;

/** `Retry-After` of a 429 `ORDERS_STREAM_LIMIT`, in seconds. */
export const ORDER_STREAM_RETRY_AFTER_S = 5;

/** Longest delay Node's timers take (ms); a later token expiry re-arms its timer. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Why a stream ended other than at a final status (`event: end`). */
export type OrderStreamEndReason = "TOKEN_EXPIRED" | "SAGA_PARKED";

/**
 * Order streams held per user and per client address on this gateway node, authorising ones
 * included: a slot is taken before the order lookup and given back when the lookup fails, the
 * client leaves during it, or the stream ends. A count that reaches 0 is deleted (no growth).
 * A limit of 0 turns that bound off.
 */
export class StreamSlots {
	private readonly users = new Map<string, number>();
	private readonly addresses = new Map<string, number>();

	constructor(
		private readonly maxPerUser: number,
		private readonly maxPerAddress: number
	) {}

	/**
	 * Takes a slot for `user` and `address`, or none when either is at its limit.
	 * @returns an idempotent release, or null (nothing taken) at a limit
	 */
	acquire(user: string, address: string): (() => void) | null {
		const u = this.users.get(user) ?? 0;
		const a = this.addresses.get(address) ?? 0;
		if (this.maxPerUser > 0 && u >= this.maxPerUser) return null;
		if (this.maxPerAddress > 0 && a >= this.maxPerAddress) return null;
		this.users.set(user, u + 1);
		this.addresses.set(address, a + 1);
		let released = false;
		return () => {
			if (released) return;
			released = true;
			StreamSlots.decrement(this.users, user);
			StreamSlots.decrement(this.addresses, address);
		};
	}

	/** Slots held: in total, and how many users and addresses hold any. */
	counts(): { held: number; users: number; addresses: number } {
		let held = 0;
		for (const n of this.users.values()) held += n;
		return { held, users: this.users.size, addresses: this.addresses.size };
	}

	private static decrement(map: Map<string, number>, key: string): void {
		const n = (map.get(key) ?? 0) - 1;
		if (n > 0) map.set(key, n);
		else map.delete(key);
	}
}

/** The `exp` of a JWT (epoch ms), or null when it has none or cannot be read. */
export function tokenExpiresAt(authorization: string | undefined): number | null {
	const token = /^Bearer (\S+)$/.exec(authorization ?? "")?.[1];
	if (!token) return null;
	const payload = jwt.decode(token, { json: true });
	const exp = payload?.exp;
	return typeof exp === "number" && Number.isFinite(exp) ? exp * 1000 : null;
}

/** Statuses after which an order never changes: its stream ends. */
export const FINAL_ORDER_STATUSES: ReadonlySet<string> = new Set(["CONFIRMED", "CANCELLED"]);

/** The order as the stream sends it (orders.get's answer). */
export interface StreamedOrder {
	id: string;
	status: string;
	[key: string]: unknown;
}

/** A saga step as the stream sends it (`event: saga`). */
export interface StreamedSagaEvent {
	/** e.g. `saga.stepCompleted`, `saga.compensating`, `saga.failed`. */
	event: string;
	status: string;
	step: string | null;
	failureReason: string | null;
	at: string;
}

/** One Server-Sent Events message (`event:` and one `data:` line of JSON). */
export function sseMessage(event: string, data: unknown): string {
	return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

type OrderEventKind = "created" | "confirmed" | "cancelled";
interface RatePoint {
	/** Start of the second, epoch ms. */
	at: number;
	created: number;
	confirmed: number;
	cancelled: number;
}

/** Per-second counters of order events over a sliding window. */
export class OrderRateWindow {
	private readonly buckets = new Map<number, RatePoint>();

	constructor(private readonly keepSeconds = 300) {}

	add(kind: OrderEventKind, now = Date.now()): void {
		const second = Math.floor(now / 1000);
		let b = this.buckets.get(second);
		if (!b) {
			b = { at: second * 1000, created: 0, confirmed: 0, cancelled: 0 };
			this.buckets.set(second, b);
			for (const k of this.buckets.keys())
				if (k <= second - this.keepSeconds) this.buckets.delete(k);
		}
		b[kind]++;
	}

	/** The last `seconds` seconds, oldest first, the current (partial) second last. */
	series(seconds: number, now = Date.now()): RatePoint[] {
		const last = Math.floor(now / 1000);
		const out: RatePoint[] = [];
		for (let s = last - seconds + 1; s <= last; s++)
			out.push(
				this.buckets.get(s) ?? { at: s * 1000, created: 0, confirmed: 0, cancelled: 0 }
			);
		return out.map(p => ({ ...p }));
	}
}

interface OrderStream {
	orderId: string;
	res: ServerResponse;
	/** JSON of the order last sent, to send only changes. */
	last: string | null;
	/** Sends happen one after the other, in event order. */
	chain: Promise<void>;
	timer: NodeJS.Timeout | null;
	/** Ends the stream when its token expires. */
	expiry: NodeJS.Timeout | null;
	/** Gives back its user's and address's slot (`StreamSlots`). */
	release: () => void;
	closed: boolean;
}

type StreamReq = IncomingMessage & {
	/** The request's context: its `meta.user` is the authenticated caller. */
	$ctx: Context<unknown, any>;
	$params: Record<string, unknown>;
};

/** What the order streams of a gateway node hold (tests, operators). */
export interface OrderStreamCounts {
	/** Registered streams (each one event listener, heartbeat and expiry timer). */
	streams: number;
	/** Orders with at least one registered stream. */
	orders: number;
	/** Slots held (`StreamSlots`): registered streams plus those still authorising. */
	slots: number;
	/** Users and client addresses holding slots. */
	users: number;
	addresses: number;
}

export interface WebMethods {
	streamOrderEvents(req: StreamReq, res: ServerResponse): Promise<void>;
	closeOrderStreams(): void;
	orderStreamCounts(): OrderStreamCounts;
}

type WebThis = Service &
	WebMethods & {
		$orderStreams: Map<string, Set<OrderStream>>;
		$streamSlots: StreamSlots;
		$orderRate: OrderRateWindow;
		/** moleculer-web's static file server (`assets`). */
		serve?: (
			req: IncomingMessage & { originalUrl?: string },
			res: ServerResponse,
			next: (err?: unknown) => void
		) => void;
		refreshOrderStream(stream: OrderStream): void;
		sendOrder(stream: OrderStream, order: StreamedOrder): void;
		endOrderStream(stream: OrderStream): void;
		finishOrderStream(stream: OrderStream, reason: OrderStreamEndReason): void;
		armTokenExpiry(stream: OrderStream, expiresAt: number): void;
		onOrderEvent(name: string, payload: unknown): void;
	};

/** The order id an `order.*` (`{ order }`) or order `saga.*` (`{ name, data }`) event is about. */
export function orderIdOf(eventName: string, payload: unknown): string | null {
	const p = (payload ?? {}) as {
		order?: { id?: unknown };
		name?: unknown;
		data?: { orderId?: unknown };
	};
	if (eventName.startsWith("order.")) return typeof p.order?.id === "string" ? p.order.id : null;
	if (eventName.startsWith("saga.") && p.name === "order")
		return typeof p.data?.orderId === "string" ? p.data.orderId : null;
	return null;
}

/** moleculer-web's own 404, kept by `send404` below for what is not a page. */
const gatewaySend404 = (
	ApiGateway as unknown as {
		methods: { send404(this: unknown, req: IncomingMessage, res: ServerResponse): void };
	}
).methods.send404;

export function WebMixin(): Partial<ServiceSchema> {
	const schema: Partial<ShopServiceSchema<WebThis>> = {
		/** Every gateway node gets every order event: a group of its own (see above). */
		merged(this: Service, schema: ServiceSchema): void {
			const group = `api-live-${this.broker.nodeID}`;
			for (const name of ["order.*", "saga.*"]) {
				const def = schema.events?.[name];
				if (def && typeof def === "object") (def as { group?: string }).group = group;
			}
		},

		created(this: WebThis): void {
			this.$orderStreams = new Map();
			const c = config();
			this.$streamSlots = new StreamSlots(
				c.orderStreamsMaxPerUser,
				c.orderStreamsMaxPerAddress
			);
			this.$orderRate = new OrderRateWindow();
			// moleculer-web's static server (its created() ran first) sees the path without the
			// matched route's prefix: /api/index.html would serve index.html. Files are served for
			// paths outside /api, /health and /ready only, by their full path.
			const serve = this.serve;
			if (serve)
				this.serve = (req, res, next) => {
					const p = requestPath(req);
					if (isApiPath(p)) return next();
					req.url = req.originalUrl ?? req.url;
					serve(req, res, next);
				};
		},

		events: {
			"order.*": {
				handler(this: WebThis, ctx: Context): void {
					this.onOrderEvent(ctx.eventName ?? "", ctx.params);
				}
			},
			"saga.*": {
				handler(this: WebThis, ctx: Context): void {
					this.onOrderEvent(ctx.eventName ?? "", ctx.params);
				}
			}
		},

		actions: {
			/**
			 * Order events seen by this gateway per second (admin, `GET /api/admin/orders/rate`).
			 * @param seconds - how far back, 10 to 300 (default 60)
			 * @returns `{ nodeID, intervalMs: 1000, points: [{ at (epoch ms), created, confirmed, cancelled }] }`
			 */
			orderRate: {
				visibility: "published",
				params: {
					$$strict: true,
					seconds: {
						type: "number",
						integer: true,
						min: 10,
						max: 300,
						convert: true,
						default: 60
					}
				},
				handler(
					this: WebThis,
					ctx: Context<{ seconds: number }>
				): { nodeID: string; intervalMs: number; points: RatePoint[] } {
					return {
						nodeID: this.broker.nodeID,
						intervalMs: 1000,
						points: this.$orderRate.series(ctx.params.seconds)
					};
				}
			},

			/**
			 * The nodes of the cluster with their services and health (admin, `GET /api/admin/nodes`).
			 * @returns `{ nodes: [{ id, available, local, hostname, client, cpu, lastHeartbeatTime,
			 *   services: string[], health: { cpuLoad1, cpuUtilization, memFree, memTotal,
			 *   processUptime, processRss, heapUsed } | { error } | null }] }`
			 */
			nodes: {
				visibility: "published",
				params: {},
				async handler(this: WebThis, ctx: Context): Promise<{ nodes: unknown[] }> {
					const nodes = (await ctx.call("$node.list", {
						onlyAvailable: false,
						withServices: false
					})) as {
						id: string;
						available: boolean;
						local: boolean;
						hostname: string | null;
						client: { type?: string; version?: string; langVersion?: string };
						cpu: number | null;
						lastHeartbeatTime: number;
					}[];
					const services = (await ctx.call("$node.services", {
						onlyLocal: false,
						skipInternal: true,
						withActions: false,
						withEvents: false,
						onlyAvailable: false,
						grouping: true
					})) as { fullName: string; nodes: string[] }[];
					const out = await Promise.all(
						nodes.map(async n => {
							let health: Record<string, unknown> | null = null;
							if (n.available) {
								try {
									const h = (await ctx.call(
										"$node.health",
										{},
										{ nodeID: n.id, timeout: 3_000, retries: 0 }
									)) as {
										cpu: { load1: number; utilization: number | null };
										mem: { free: number; total: number };
										process: {
											uptime: number;
											memory: { rss: number; heapUsed: number };
										};
									};
									health = {
										cpuLoad1: h.cpu.load1,
										cpuUtilization: h.cpu.utilization,
										memFree: h.mem.free,
										memTotal: h.mem.total,
										processUptime: Math.round(h.process.uptime),
										processRss: h.process.memory.rss,
										heapUsed: h.process.memory.heapUsed
									};
								} catch (err) {
									health = {
										error: (err as { type?: string }).type ?? "UNAVAILABLE"
									};
								}
							}
							return {
								id: n.id,
								available: n.available,
								local: n.local,
								hostname: n.hostname,
								client: {
									type: n.client?.type,
									version: n.client?.version,
									langVersion: n.client?.langVersion
								},
								cpu: n.cpu,
								lastHeartbeatTime: n.lastHeartbeatTime,
								services: services
									.filter(s => s.nodes.includes(n.id))
									.map(s => s.fullName)
									.sort(),
								health
							};
						})
					);
					out.sort((a, b) => a.id.localeCompare(b.id));
					return { nodes: out };
				}
			}
		},

		methods: {
			/** Not routed and not a file: a page loads the app (`index.html`), else the JSON 404. */
			send404(this: WebThis, req: IncomingMessage, res: ServerResponse): void {
				if (!isPageRequest(req)) return gatewaySend404.call(this, req, res);
				fs.readFile(path.join(WEB_DIR, "index.html"), (err, html) => {
					if (err) return gatewaySend404.call(this, req, res);
					res.statusCode = 200;
					res.setHeader("Content-Type", "text/html; charset=utf-8");
					res.setHeader("Cache-Control", "no-cache");
					res.setHeader("Content-Length", html.length);
					res.end(req.method === "HEAD" ? undefined : html);
				});
			},

			/**
			 * The handler of `GET /api/orders/:id/events`. Errors before the stream starts (not
			 * found, invalid id, a limit reached) reject, so the gateway answers them as JSON like
			 * any route. In order: a slot for the caller and its address (else 429
			 * `ORDERS_STREAM_LIMIT`, `data.retryAfter` in s); the order with the caller's context
			 * (authorisation: owner or admin, else 404); if the client left meanwhile, the slot is
			 * given back and nothing is registered; else the stream is registered, sends the
			 * order, and re-reads it once (an event between the lookup and the registration was
			 * not seen).
			 */
			async streamOrderEvents(
				this: WebThis,
				req: StreamReq,
				res: ServerResponse
			): Promise<void> {
				const orderId = String(req.$params.id ?? "");
				const meta = req.$ctx.meta as { user?: { id?: string } | null; clientIp?: string };
				const address = String(meta.clientIp ?? req.socket?.remoteAddress ?? "");
				const release = this.$streamSlots.acquire(String(meta.user?.id ?? ""), address);
				if (!release) {
					const c = config();
					throw shopError("ORDERS_STREAM_LIMIT", undefined, {
						maxPerUser: c.orderStreamsMaxPerUser,
						maxPerAddress: c.orderStreamsMaxPerAddress,
						retryAfter: ORDER_STREAM_RETRY_AFTER_S
					});
				}
				let gone = false;
				const onGone = (): void => {
					gone = true;
				};
				res.once("close", onGone);
				let order: StreamedOrder;
				try {
					// With the caller's context: owner or admin, else 404 (and 422 for a bad id).
					order = (await req.$ctx.call("orders.get", { id: orderId })) as StreamedOrder;
				} catch (err) {
					res.off("close", onGone);
					release();
					if (gone) return; // nobody left to answer
					throw err;
				}
				res.off("close", onGone);
				if (gone || res.destroyed || req.socket?.destroyed) {
					release();
					return;
				}
				const stream: OrderStream = {
					orderId,
					res,
					last: null,
					chain: Promise.resolve(),
					timer: null,
					expiry: null,
					release,
					closed: false
				};
				let set = this.$orderStreams.get(orderId);
				if (!set) this.$orderStreams.set(orderId, (set = new Set()));
				set.add(stream);
				res.writeHead(200, {
					"Content-Type": "text/event-stream; charset=utf-8",
					"Cache-Control": "no-cache, no-transform",
					"X-Accel-Buffering": "no"
				});
				res.write(`retry: 3000\n\n`);
				res.once("close", () => this.endOrderStream(stream));
				stream.timer = setInterval(() => {
					if (stream.closed) return;
					res.write(": heartbeat\n\n");
					this.refreshOrderStream(stream);
				}, ORDER_STREAM_HEARTBEAT_MS);
				stream.timer.unref();
				const expiresAt = tokenExpiresAt(req.headers.authorization);
				if (expiresAt !== null) this.armTokenExpiry(stream, expiresAt);
				this.sendOrder(stream, order);
				this.refreshOrderStream(stream);
			},

			/** Ends `stream` with `event: end` `{ reason }` at `expiresAt` (epoch ms). */
			armTokenExpiry(this: WebThis, stream: OrderStream, expiresAt: number): void {
				if (stream.closed) return;
				const wait = expiresAt - Date.now();
				if (wait <= 0) {
					this.finishOrderStream(stream, "TOKEN_EXPIRED");
					return;
				}
				stream.expiry = setTimeout(
					() => this.armTokenExpiry(stream, expiresAt),
					Math.min(wait, MAX_TIMER_MS)
				);
				stream.expiry.unref();
			},

			/** Sends `event: end` with `{ reason }` after what is queued, then ends the stream. */
			finishOrderStream(
				this: WebThis,
				stream: OrderStream,
				reason: OrderStreamEndReason
			): void {
				stream.chain = stream.chain.then(() => {
					if (stream.closed) return;
					stream.res.write(sseMessage("end", { reason }));
					this.endOrderStream(stream);
					stream.res.end();
				});
			},

			/** What the order streams of this node hold (see `OrderStreamCounts`). */
			orderStreamCounts(this: WebThis): OrderStreamCounts {
				let streams = 0;
				for (const set of this.$orderStreams.values()) streams += set.size;
				const slots = this.$streamSlots.counts();
				return {
					streams,
					orders: this.$orderStreams.size,
					slots: slots.held,
					users: slots.users,
					addresses: slots.addresses
				};
			},

			/** Re-reads the order (after an event, or on the heartbeat) and sends it if it changed. */
			refreshOrderStream(this: WebThis, stream: OrderStream): void {
				stream.chain = stream.chain.then(async () => {
					if (stream.closed) return;
					try {
						// Internal call (no user): the stream's caller was authorised on connect.
						const order = (await this.broker.call("orders.get", {
							id: stream.orderId
						})) as StreamedOrder;
						this.sendOrder(stream, order);
					} catch (err) {
						this.logger.debug(`Order stream ${stream.orderId}: could not re-read`, err);
					}
				});
			},

			sendOrder(this: WebThis, stream: OrderStream, order: StreamedOrder): void {
				if (stream.closed) return;
				const json = JSON.stringify(order);
				if (json === stream.last) return;
				stream.last = json;
				stream.res.write(`event: order\ndata: ${json}\n\n`);
				if (FINAL_ORDER_STATUSES.has(order.status)) {
					this.endOrderStream(stream);
					stream.res.end();
				}
			},

			endOrderStream(this: WebThis, stream: OrderStream): void {
				if (stream.closed) return;
				stream.closed = true;
				if (stream.timer) clearInterval(stream.timer);
				if (stream.expiry) clearTimeout(stream.expiry);
				stream.release();
				const set = this.$orderStreams.get(stream.orderId);
				set?.delete(stream);
				if (set && set.size === 0) this.$orderStreams.delete(stream.orderId);
			},

			/** Ends every open stream (the gateway is stopping: its server waits for them). */
			closeOrderStreams(this: WebThis): void {
				for (const set of [...this.$orderStreams.values()])
					for (const stream of [...set]) {
						this.endOrderStream(stream);
						stream.res.end();
					}
			},

			onOrderEvent(this: WebThis, name: string, payload: unknown): void {
				if (name === "order.created") this.$orderRate.add("created");
				else if (name === "order.confirmed") this.$orderRate.add("confirmed");
				else if (name === "order.cancelled") this.$orderRate.add("cancelled");
				const orderId = orderIdOf(name, payload);
				const set = orderId ? this.$orderStreams.get(orderId) : undefined;
				if (!set) return;
				for (const stream of set) {
					if (name.startsWith("saga.")) {
						const p = payload as {
							status?: string;
							step?: string;
							failureReason?: string | null;
						};
						const step: StreamedSagaEvent = {
							event: name,
							status: String(p.status ?? ""),
							step: typeof p.step === "string" ? p.step : null,
							failureReason: p.failureReason ?? null,
							at: new Date().toISOString()
						};
						stream.chain = stream.chain.then(() => {
							if (!stream.closed) stream.res.write(sseMessage("saga", step));
						});
					}
					this.refreshOrderStream(stream);
					// Parked: nothing moves until an operator acts; the order as it is, then end.
					if (name === "saga.failed") this.finishOrderStream(stream, "SAGA_PARKED");
				}
			}
		},

		stopped(this: WebThis): void {
			this.closeOrderStreams();
		}
	};
	return schema as Partial<ServiceSchema>;
}

/** `GET /api/orders/:id/events`: a stream, not a request to drain on shutdown (see api's rootCallOptions). */
export function isOrderStreamPath(url: string | undefined): boolean {
	return /^\/api\/orders\/[^/?]+\/events\/?(?:\?|$)/.test(url ?? "");
}
