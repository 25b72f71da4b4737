/**
 * `OrderStreamsMixin()`: the gateway's view of the order events, mixed into `api`
 * (services/api/api.service.ts). Moved out of mixins/web.mixin.ts (issue 17): a mixin knows no
 * service's events; this one is the gateway's own, in its folder.
 *
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
 *   `order.confirmed` and `order.cancelled` seen by this gateway, per second, for the last minutes. *
 * Moleculer balances an event between the instances of one group (by default the service's name),
 * so with several gateways only one of them would see each order event. The live handlers use a
 * group of their own per node (`api-live-<nodeID>`): every gateway node gets every event.
 */
import type { ServerResponse } from "node:http";
import type { Context, Service, ServiceSchema } from "moleculer";
import jwt from "jsonwebtoken";
import { config } from "../../platform/config";
import type { ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import type { GatewayRequest } from "../../mixins/web.mixin";
import { OrderRateWindow, type RatePoint } from "./order-rate";
import { StreamSlots } from "./stream-slots";

/** Interval of the heartbeat comment (and order re-read) of an order stream, in ms. */
export const ORDER_STREAM_HEARTBEAT_MS = 15_000;

/** `Retry-After` of a 429 `ORDERS_STREAM_LIMIT`, in seconds. */
export const ORDER_STREAM_RETRY_AFTER_S = 5;

/** Longest delay Node's timers take (ms); a later token expiry re-arms its timer. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Why a stream ended other than at a final status (`event: end`). */
export type OrderStreamEndReason = "TOKEN_EXPIRED" | "SAGA_PARKED";

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

/** The request of a stream: its `$ctx.meta.user` is the authenticated caller. */
type StreamReq = GatewayRequest;

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

/** The methods the gateway (its routes, its `stopped`, tests) calls. */
export interface OrderStreamMethods {
	streamOrderEvents(req: StreamReq, res: ServerResponse): Promise<void>;
	closeOrderStreams(): void;
	orderStreamCounts(): OrderStreamCounts;
}

/** The gateway as the order stream handlers see it. */
type OrderStreamsThis = Service &
	OrderStreamMethods & {
		$orderStreams: Map<string, Set<OrderStream>>;
		$streamSlots: StreamSlots;
		$orderRate: OrderRateWindow;
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

/** `GET /api/orders/:id/events`: a stream, not a request to drain on shutdown (see api's rootCallOptions). */
export function isOrderStreamPath(url: string | undefined): boolean {
	return /^\/api\/orders\/[^/?]+\/events\/?(?:\?|$)/.test(url ?? "");
}

/** The order streams, the orders-per-second window and the order events feeding both. */
export function OrderStreamsMixin(): Partial<ServiceSchema> {
	const schema: Partial<ShopServiceSchema<OrderStreamsThis>> = {
		/** Every gateway node gets every order event: a group of its own (see above). */
		merged(this: Service, schema: ServiceSchema): void {
			const group = `api-live-${this.broker.nodeID}`;
			for (const name of ["order.*", "saga.*"]) {
				const def = schema.events?.[name];
				if (def && typeof def === "object") (def as { group?: string }).group = group;
			}
		},

		created(this: OrderStreamsThis): void {
			this.$orderStreams = new Map();
			const c = config();
			this.$streamSlots = new StreamSlots(
				c.orderStreamsMaxPerUser,
				c.orderStreamsMaxPerAddress
			);
			this.$orderRate = new OrderRateWindow();
		},

		events: {
			"order.*": {
				handler(this: OrderStreamsThis, ctx: Context): void {
					this.onOrderEvent(ctx.eventName ?? "", ctx.params);
				}
			},
			"saga.*": {
				handler(this: OrderStreamsThis, ctx: Context): void {
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
					this: OrderStreamsThis,
					ctx: Context<{ seconds: number }>
				): { nodeID: string; intervalMs: number; points: RatePoint[] } {
					return {
						nodeID: this.broker.nodeID,
						intervalMs: 1000,
						points: this.$orderRate.series(ctx.params.seconds)
					};
				}
			}
		},

		methods: {
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
				this: OrderStreamsThis,
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
			armTokenExpiry(this: OrderStreamsThis, stream: OrderStream, expiresAt: number): void {
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
				this: OrderStreamsThis,
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
			orderStreamCounts(this: OrderStreamsThis): OrderStreamCounts {
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
			refreshOrderStream(this: OrderStreamsThis, stream: OrderStream): void {
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

			sendOrder(this: OrderStreamsThis, stream: OrderStream, order: StreamedOrder): void {
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

			endOrderStream(this: OrderStreamsThis, stream: OrderStream): void {
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
			closeOrderStreams(this: OrderStreamsThis): void {
				for (const set of [...this.$orderStreams.values()])
					for (const stream of [...set]) {
						this.endOrderStream(stream);
						stream.res.end();
					}
			},

			onOrderEvent(this: OrderStreamsThis, name: string, payload: unknown): void {
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

		stopped(this: OrderStreamsThis): void {
			this.closeOrderStreams();
		}
	};
	return schema as Partial<ServiceSchema>;
}
