/**
 * `api`: the moleculer-web gateway on `PORT`. Only the CONTRACT's routes are reachable
 * (`mappingPolicy: "restrict"`): internal actions (`inventory.reserve`, `payments.charge`,
 * `users.resolveToken`, `$node.*`) have no alias and are never callable over REST.
 *
 * - Authentication: `Authorization: Bearer <JWT>` resolved by `users.resolveToken`; a malformed,
 *   expired or forged token is 401 `AUTH_TOKEN_INVALID` even on public routes.
 * - Authorization per alias (`auth`): `customer` needs a user (401 `AUTH_TOKEN_MISSING`),
 *   `admin` needs the admin role (403 `AUTH_FORBIDDEN`).
 * - JSON bodies only (415 otherwise; `application/*+json` too), objects only (400), at most
 *   `BODY_LIMIT` (413). A `__proto__` key anywhere in the body, or a string (body, query or
 *   path) with a control character other than tab, LF and CR or with a lone UTF-16 surrogate,
 *   is refused as 422 `VALIDATION_ERROR` before any action sees it (`findHostileValue`), as
 *   are values nested deeper than 32 levels and a field given twice (path, query, body) with
 *   different values (`findConflictingField`).
 * - A non-preflight `OPTIONS` is 404 `REQUEST_NOT_FOUND` (moleculer-web would answer it as a
 *   GET). Requests Node's HTTP parser refuses get the error form too: 400 `REQUEST_MALFORMED`
 *   (also for a path with bad percent-encoding), 431 `REQUEST_HEADERS_TOO_LARGE`, 408
 *   `REQUEST_CLIENT_TIMEOUT`. A compressed body that does not decompress is 400
 *   `REQUEST_INVALID_JSON`.
 * - `X-Request-ID` (or `X-Correlation-ID`) accepted when well-formed, else generated; returned on
 *   every answer and used as the context's `requestID` through every service.
 * - `Idempotency-Key` on `POST /api/orders` becomes `ctx.meta.idempotencyKey`.
 * - Security headers by helmet; CORS from `CORS_ORIGINS`.
 * - Errors: `{ name, message, code, type, data }` with `code` the HTTP status; in production a
 *   5xx carries no internals. Never a stack trace.
 * - `GET /health` (liveness) and `GET /ready` (readiness: transporter and every service's
 *   database), outside `/api`, answered before the request bulkhead (`httpHandler`); readiness
 *   is computed at most once a second and shared by every probe meanwhile.
 * - Rate limit on `/api` (moleculer-web's `rateLimit`): `RATE_LIMIT_MAX` requests per client
 *   address (the TCP peer; `X-Forwarded-For` is not trusted) per `RATE_LIMIT_WINDOW_MS` fixed
 *   window, counted in Redis (platform/web/rate-limit-store.ts, shared by every gateway) when `CACHER` is
 *   set, else in this gateway's memory. `X-Rate-Limit-Limit/-Remaining/-Reset` (epoch ms) on every
 *   `/api` answer; over the limit 429 `REQUEST_RATE_LIMITED` with `Retry-After` (seconds to the
 *   window's end). The probes `/health` and `/ready` are never limited.
 * - The client's address (`clientAddress`: the TCP peer, or `X-Forwarded-For` only through the
 *   `TRUSTED_PROXIES`) goes to every call as `ctx.meta.clientIp`; users.login throttles failed
 *   logins per address with it. A 429 `AUTH_LOGIN_THROTTLED` carries `Retry-After` from its
 *   `data.retryAfter`.
 * - The web side (mixins/web.mixin.ts): the web app built into dist/web at `/` (deep links load
 *   it; its pages get a CSP of `'self'`, `/api` keeps `default-src 'none'`), order event streams
 *   (`GET /api/orders/:id/events`, Server-Sent Events) and the dashboard's admin routes.
 */
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import helmet from "helmet";
import { Errors, type Context, type Service, type ServiceSchema } from "moleculer";
import ApiGateway, { type RateLimitSettings, type RateLimitStore } from "moleculer-web";
import { config, DATABASE_SERVICES } from "../../platform/config";
import type { AuthUser, ShopServiceSchema } from "../../platform/context";
import { ERRORS, shopError, type ErrorType } from "../../platform/errors";
import { toErrorBody, type ErrorBody } from "../../platform/web/gateway-errors";
import {
	RedisRateLimitStore,
	type RedisRateLimitSettings
} from "../../platform/web/rate-limit-store";
import {
	isOrderStreamPath,
	WEB_ASSETS_OPTIONS,
	WEB_DIR,
	WebMixin,
	webSecurityHeaders,
	type WebMethods
} from "../../mixins/web.mixin";
import { withRequestId } from "../../platform/request-context";
import { ApiDocsMixin } from "../../mixins/api-docs.mixin";
import {
	cachedFor,
	clusterReadiness,
	READINESS_CACHE_MS,
	waitForLocalServices,
	type NodeReadiness
} from "../../platform/node-health";

type Req = IncomingMessage & {
	$ctx: Context<unknown, Record<string, unknown>>;
	$params: Record<string, unknown>;
	$alias?: { auth?: "customer" | "admin" };
	body?: unknown;
};
type Res = ServerResponse;

/** Who may call an alias: anyone (absent), any signed-in user, or admins. */
type AliasAuth = "customer" | "admin";
const alias = (action: string, auth?: AliasAuth): { action: string; auth?: AliasAuth } =>
	auth ? { action, auth } : { action };

/** The REST table of CONTRACT.md (prefix `/api`). */
export const API_ALIASES: Record<string, { action: string; auth?: AliasAuth }> = {
	"POST users/register": alias("users.register"),
	"POST users/login": alias("users.login"),
	"GET users/me": alias("users.me", "customer"),
	"GET products": alias("products.list"),
	"GET products/:id": alias("products.get"),
	"POST products": alias("products.create", "admin"),
	"PATCH products/:id": alias("products.update", "admin"),
	"GET inventory/:productId": alias("inventory.get"),
	"PUT inventory/:productId": alias("inventory.setStock", "admin"),
	"POST orders": alias("orders.create", "customer"),
	"GET orders": alias("orders.list", "customer"),
	"GET orders/:id": alias("orders.get", "customer"),
	"POST orders/:id/cancel": alias("orders.cancel", "customer"),
	"GET notifications": alias("notifications.list", "customer"),
	"GET admin/sagas": alias("orders.listSagas", "admin"),
	"GET admin/sagas/:id": alias("orders.getSaga", "admin"),
	"GET admin/nodes": alias("api.nodes", "admin"),
	"GET admin/orders/rate": alias("api.orderRate", "admin"),
	"GET admin/orders/stuck": alias("orders.stuck", "admin"),
	"GET admin/orders/:id": alias("orders.adminGet", "admin"),
	"POST admin/orders/:id/refund": alias("orders.refund", "admin"),
	"POST admin/sagas/:id/redrive": alias("orders.redriveSaga", "admin"),
	"POST admin/sagas/:id/refund-and-cancel": alias("orders.refundAndCancelSaga", "admin"),
	"GET admin/dead-letters": alias("notifications.listDeadLetters", "admin"),
	"POST admin/dead-letters/:id/replay": alias("notifications.replayDeadLetter", "admin"),
	"GET admin/outbox": alias("api.outbox", "admin"),
	// The API's documentation (mixins/api-docs.mixin.ts): OpenAPI 3.1 and Swagger UI.
	"GET openapi.json": alias("api.openapi"),
	"GET docs": alias("api.docs"),
	"GET docs/:file": alias("api.docsAsset")
};

/**
 * Server-Sent Events routes of `/api` (handlers in mixins/web.mixin.ts), under the same
 * authentication, authorization (`auth`) and rate limit as every alias.
 */
export const STREAM_ALIASES = {
	"GET orders/:id/events": {
		auth: "customer" as AliasAuth,
		handler(this: ApiThis, req: Req, res: Res, next: (err?: unknown) => void): void {
			this.streamOrderEvents(req, res).catch(next);
		}
	}
};

/** The services with a transactional outbox (mixins/events.mixin.ts). */
export const OUTBOX_SERVICES = ["orders", "inventory", "payments", "products"] as const;

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
const IDEMPOTENCY_KEY_RE = /^[A-Za-z0-9._:-]{1,255}$/;
const BEARER_RE = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)$/;

// eslint-disable-next-line no-control-regex
const CONTROL_CHAR_RE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;
const LONE_SURROGATE_RE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** One entry of a VALIDATION_ERROR's `data`, in fastest-validator's form. */
export interface ValidationEntry {
	type: string;
	field: string;
	message: string;
}

/** Deepest nesting of a request's values; the shop's own bodies nest 3 levels. */
export const MAX_PARAM_DEPTH = 32;

/**
 * The first value of a request that no action's schema catches, or null. Walks every value of
 * the JSON body and of the merged params (query, path and body), iteratively:
 * - nesting deeper than `MAX_PARAM_DEPTH`: a 60 KB body of 10 000 nested arrays overflowed the
 *   stack wherever a value was handled recursively (a validation error echoing it, a cache key),
 *   a 500 or worse;
 * - a `__proto__` key: JSON.parse keeps it as an own key, and moleculer-web's merge
 *   (`Object.assign`) makes a top-level one the prototype of the params, where `$$strict` does
 *   not look but every read does: a second channel for any param;
 * - a string with NUL or another control character (tab, LF and CR are fine): Postgres text and
 *   jsonb cannot hold NUL (the statement fails), and none belongs in the shop's fields;
 * - a string with a lone UTF-16 surrogate, which jsonb (the outbox's events) refuses.
 */
export function findHostileValue(...roots: unknown[]): ValidationEntry | null {
	const stack: [string, unknown, number][] = roots.map(root => ["", root, 0]);
	while (stack.length > 0) {
		const [field, value, depth] = stack.pop()!;
		if (typeof value === "string") {
			if (CONTROL_CHAR_RE.test(value))
				return {
					type: "stringControlCharacter",
					field,
					message: `The '${field}' field must not contain control characters.`
				};
			if (LONE_SURROGATE_RE.test(value))
				return {
					type: "stringLoneSurrogate",
					field,
					message: `The '${field}' field must be well-formed Unicode.`
				};
		} else if (value !== null && typeof value === "object") {
			if (depth >= MAX_PARAM_DEPTH)
				return {
					type: "objectMaxDepth",
					field,
					message: `The '${field}' field nests deeper than ${MAX_PARAM_DEPTH} levels.`
				};
			const array = Array.isArray(value);
			for (const key of Object.keys(value)) {
				if (key === "__proto__")
					return {
						type: "objectStrict",
						field,
						message: `The object '${field}' contains forbidden keys: '__proto__'.`
					};
				const path = array ? `${field}[${key}]` : field ? `${field}.${key}` : key;
				stack.push([path, (value as Record<string, unknown>)[key], depth + 1]);
			}
		}
	}
	return null;
}

/**
 * A field given twice with different values, or null: moleculer-web merges the body, then the
 * query string over it, then the path params over both, silently (`PUT /api/inventory/<a>` with
 * `{ "productId": "<b>" }` would quietly mean `<a>`).
 */
export function findConflictingField(
	body: unknown,
	query: unknown,
	path: Record<string, unknown>
): ValidationEntry | null {
	const obj = (v: unknown): Record<string, unknown> =>
		v !== null && typeof v === "object" && !Array.isArray(v)
			? (v as Record<string, unknown>)
			: {};
	const b = obj(body);
	const q = obj(query);
	const same = (x: unknown, y: unknown): boolean => JSON.stringify(x) === JSON.stringify(y);
	const conflict = (field: string): ValidationEntry => ({
		type: "conflict",
		field,
		message: `The '${field}' field is given twice (path, query or body) with different values.`
	});
	for (const [field, value] of Object.entries(path))
		if ((field in b && !same(b[field], value)) || (field in q && !same(q[field], value)))
			return conflict(field);
	for (const field of Object.keys(q))
		if (Object.prototype.hasOwnProperty.call(b, field) && !same(b[field], q[field]))
			return conflict(field);
	return null;
}

/** The type of a request refused by Node's HTTP parser (`clientError`), by the error's code. */
export function clientErrorType(code: string | undefined): ErrorType {
	switch (code) {
		case "HPE_HEADER_OVERFLOW":
			return "REQUEST_HEADERS_TOO_LARGE";
		case "HPE_CHUNK_EXTENSIONS_OVERFLOW":
			return "REQUEST_BODY_TOO_LARGE";
		case "ERR_HTTP_REQUEST_TIMEOUT":
			return "REQUEST_CLIENT_TIMEOUT";
		default:
			return "REQUEST_MALFORMED";
	}
}

/** The raw HTTP answer to a request refused by Node's HTTP parser, in the CONTRACT's form. */
export function clientErrorResponse(code: string | undefined): string {
	const type = clientErrorType(code);
	const status = ERRORS[type].code;
	const body = JSON.stringify({
		name: "ShopClientError",
		message: ERRORS[type].description,
		code: status,
		type
	});
	return (
		`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n` +
		"Content-Type: application/json; charset=utf-8\r\n" +
		"X-Content-Type-Options: nosniff\r\n" +
		`Content-Length: ${Buffer.byteLength(body)}\r\n` +
		"Connection: close\r\n\r\n" +
		body
	);
}

/**
 * HTTP/1.1 requires a Host header. Node refuses a request without one with a bare 400, so the
 * gateway turns Node's check off (`created`) and makes it here, answering in the error form.
 */
export function requireHost(
	req: IncomingMessage,
	_res: ServerResponse,
	next: (err?: unknown) => void
): void {
	if (req.httpVersion === "1.1" && req.headers.host === undefined)
		next(shopError("REQUEST_MALFORMED", "HTTP/1.1 requires a Host header."));
	else next();
}

/**
 * moleculer-web's `rateLimit` of the `/api` route from the config; `undefined` (no limit) when
 * `RATE_LIMIT_MAX` is 0. The key is the client's address as `clientAddress` finds it (the TCP
 * peer; `X-Forwarded-For` only from `TRUSTED_PROXIES`): moleculer-web's default key prefers
 * `X-Forwarded-For`, which any client can set to escape its limit.
 */
export function apiRateLimit(): RateLimitSettings | RedisRateLimitSettings | undefined {
	const c = config();
	if (c.rateLimitMax === 0) return undefined;
	const settings: RateLimitSettings = {
		window: c.rateLimitWindowMs,
		limit: c.rateLimitMax,
		headers: true,
		key: (req: IncomingMessage) => clientAddress(req)
	};
	if (!c.cacher) return settings;
	return {
		...settings,
		StoreFactory: RedisRateLimitStore as unknown as typeof RateLimitStore,
		redisUrl: c.cacher
	};
}

/** `::ffff:1.2.3.4` (an IPv4 client of a dual-stack socket) as `1.2.3.4`. */
function normalizeIp(ip: string): string {
	return ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip;
}

/**
 * The client's address: the TCP peer, unless the peer is one of `trustedProxies`; then the
 * right-most `X-Forwarded-For` entry that is not a trusted proxy (entries further left were
 * written by the client and prove nothing). Without trusted proxies the header is ignored.
 */
export function clientAddress(
	req: Pick<IncomingMessage, "socket" | "headers">,
	trustedProxies: readonly string[] = config().trustedProxies
): string {
	const peer = normalizeIp(req.socket.remoteAddress ?? "");
	if (trustedProxies.length === 0 || !trustedProxies.includes(peer)) return peer;
	const header = req.headers["x-forwarded-for"];
	const hops = (Array.isArray(header) ? header.join(",") : (header ?? ""))
		.split(",")
		.map(s => normalizeIp(s.trim()))
		.filter(Boolean);
	for (let i = hops.length - 1; i >= 0; i--)
		if (!trustedProxies.includes(hops[i]!)) return hops[i]!;
	return hops[0] ?? peer;
}

/**
 * Seconds until the rate limit window of an answer ends (`X-Rate-Limit-Reset`, epoch ms, set by
 * moleculer-web), at least 1; 1 when the header is missing.
 */
export function retryAfterSeconds(
	res: Pick<ServerResponse, "getHeader">,
	now = Date.now()
): number {
	const reset = Number(res.getHeader("X-Rate-Limit-Reset"));
	if (!Number.isFinite(reset) || reset <= 0) return 1;
	return Math.max(1, Math.ceil((reset - now) / 1000));
}

/** Re-exported: the gateway's error mapping lives in platform/web/gateway-errors.ts. */
export { toErrorBody, type ErrorBody };

type ApiThis = Service &
	WebMethods & {
		sendErrorBody(req: Req, res: Res, err: unknown): void;
		sendHealth(res: Res): void;
		sendReadiness(res: Res): Promise<void>;
		/** The gateway's readiness, computed at most once per `READINESS_CACHE_MS` (`created`). */
		$readiness: () => Promise<NodeReadiness>;
	};

/** Security headers of every answer (helmet's defaults, CSP locked down for a JSON API). */
const securityHeaders = helmet({
	contentSecurityPolicy: {
		useDefaults: false,
		directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] }
	},
	frameguard: { action: "deny" },
	strictTransportSecurity: config().production
});

/** moleculer-web's HTTP handler: every request through the `api.rest` action (and its bulkhead). */
const gatewayHttpHandler = (
	ApiGateway as unknown as {
		methods: {
			httpHandler(
				this: unknown,
				req: IncomingMessage,
				res: ServerResponse,
				next?: (err?: unknown) => void
			): Promise<void>;
		};
	}
).methods.httpHandler;

/** moleculer-web's `rest` action handler (routes a request: see `restStream`). */
const gatewayRestHandler = (
	ApiGateway as unknown as {
		actions: { rest: { handler(this: unknown, ctx: Context): unknown } };
	}
).actions.rest.handler;

/** `health` or `ready` for a `GET`/`HEAD` of the probes' paths (query and a trailing `/` allowed). */
export function probeOf(req: Pick<IncomingMessage, "method" | "url">): "health" | "ready" | null {
	if (req.method !== "GET" && req.method !== "HEAD") return null;
	const m = /^\/(health|ready)\/?(?:\?|$)/.exec(req.url ?? "");
	return m ? (m[1] as "health" | "ready") : null;
}

/**
 * Ready before reachable: the HTTP port opens (moleculer-web's `started`) only once every other
 * local service has started (platform/node-health.ts `waitForLocalServices`), so in one process
 * (`npm start`) no client meets a route whose service is still migrating or seeding. Mixed in
 * LAST: Moleculer runs the mixins' lifecycle handlers from the last mixin to the first, then the
 * service's own, so this `started` runs before moleculer-web's. Alone on its node (the cluster
 * form) it waits for nothing; routes whose service is not registered then answer 503
 * `SERVICE_NOT_AVAILABLE` with `Retry-After` (platform/web/gateway-errors.ts). If another local service
 * fails to start, `broker.start()` fails, the wait ends when the broker stops, and the port never
 * opens.
 */
type StartupThis = Service & { $startup: AbortController };
const ListenWhenLocalServicesStarted: Partial<ShopServiceSchema<StartupThis>> = {
	created(this: StartupThis): void {
		this.$startup = new AbortController();
	},
	started(this: StartupThis): Promise<void> {
		return waitForLocalServices(this.broker, this.fullName, this.$startup.signal);
	},
	stopped(this: StartupThis): void {
		this.$startup.abort(new Error("The broker stopped while the gateway was starting."));
	}
};

const ApiService: ShopServiceSchema<ApiThis> = {
	name: "api",
	// WebMixin first: its send404 (deep links load the web app) and stopped (ends the order
	// streams before the server waits for its connections) take precedence over moleculer-web's.
	// ListenWhenLocalServicesStarted last: its `started` runs first (see there).
	mixins: [
		WebMixin(),
		ApiGateway as unknown as Partial<ServiceSchema>,
		ApiDocsMixin,
		ListenWhenLocalServicesStarted as Partial<ServiceSchema>
	],

	settings: {
		port: config().port,
		ip: "0.0.0.0",
		// Security headers on every answer (helmet's defaults, CSP locked down for a JSON API).
		use: [
			requireHost,
			securityHeaders,
			// The web app's pages and files: a CSP that lets the bundle run ('self' only).
			webSecurityHeaders
		],
		// The web app (web/, built by `npm run build` into dist/web); deep links: WebMixin.send404.
		assets: { folder: WEB_DIR, options: WEB_ASSETS_OPTIONS },
		cors: {
			origin: config().corsOrigins,
			methods: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
			allowedHeaders: ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
			exposedHeaders: [
				"X-Request-ID",
				"Retry-After",
				"X-Rate-Limit-Limit",
				"X-Rate-Limit-Remaining",
				"X-Rate-Limit-Reset"
			],
			credentials: false,
			maxAge: 600
		},
		/** Accepts a well-formed client request id; otherwise Moleculer generates one. */
		rootCallOptions(options: { requestID?: string }, req: IncomingMessage): void {
			const id = options.requestID;
			if (id !== undefined && (typeof id !== "string" || !REQUEST_ID_RE.test(id)))
				delete options.requestID;
			// An order stream lasts until its order is final: not an in-flight request for the
			// shutdown to wait for (the gateway ends the streams when it stops).
			if (isOrderStreamPath(req.url)) (options as { tracking?: boolean }).tracking = false;
		},
		logRequest: "debug",
		// One access line per answered request (`<= 202 POST /api/orders [+12 ms]`), with its
		// requestId (platform/logger.ts); errors are logged by sendErrorBody (5xx only).
		logResponse: "info",
		log4XXResponses: false,
		logRequestParams: null,
		logResponseData: null,
		routes: [
			{
				path: "/api",
				mappingPolicy: "restrict",
				autoAliases: false,
				aliases: { ...API_ALIASES, ...STREAM_ALIASES },
				authentication: true,
				authorization: true,
				bodyParsers: {
					// Any JSON value parses, so a non-object is refused as such (onBeforeCall),
					// not as invalid JSON; `+json` media types are JSON too.
					json: {
						strict: false,
						limit: config().bodyLimit,
						type: ["application/json", "application/*+json"]
					},
					urlencoded: false
				},
				mergeParams: true,
				callOptions: { timeout: 10_000 },
				rateLimit: apiRateLimit(),
				/** Client address, content type, body shape and Idempotency-Key, before the call. */
				onBeforeCall(
					this: ApiThis,
					ctx: Context<unknown, Record<string, unknown>>,
					_route: unknown,
					req: Req
				): void {
					ctx.meta.clientIp = clientAddress(req);
					// A preflight (with Access-Control-Request-Method) was answered by CORS; moleculer-web
					// would run any other OPTIONS as a GET.
					if (req.method === "OPTIONS") throw shopError("REQUEST_NOT_FOUND");
					const hasBody =
						Number(req.headers["content-length"] ?? 0) > 0 ||
						req.headers["transfer-encoding"] !== undefined;
					if (hasBody) {
						const ct = String(req.headers["content-type"] ?? "").toLowerCase();
						if (!/^application\/(?:[a-z0-9.+-]*\+)?json\s*(?:;|$)/.test(ct))
							throw shopError("REQUEST_UNSUPPORTED_MEDIA_TYPE");
						if (
							req.body === null ||
							typeof req.body !== "object" ||
							Array.isArray(req.body)
						)
							throw shopError("REQUEST_BODY_NOT_OBJECT");
					}
					const pathKeys =
						(req.$alias as { keys?: { name: string | number }[] })?.keys ?? [];
					const hostile =
						findHostileValue(req.body, req.$params) ??
						findConflictingField(
							req.body,
							(req as { query?: unknown }).query,
							Object.fromEntries(pathKeys.map(k => [k.name, req.$params[k.name]]))
						);
					if (hostile)
						throw new Errors.ValidationError(
							"Parameters validation error!",
							"VALIDATION_ERROR",
							[hostile]
						);
					const key = req.headers["idempotency-key"];
					if (key !== undefined) {
						if (typeof key !== "string" || !IDEMPOTENCY_KEY_RE.test(key))
							throw shopError(
								"REQUEST_INVALID_ID",
								"Idempotency-Key must be 1-255 of A-Z a-z 0-9 . _ : -"
							);
						ctx.meta.idempotencyKey = key;
					}
				},
				onError(this: ApiThis, req: Req, res: Res, err: unknown): void {
					this.sendErrorBody(req, res, err);
				}
			},
			{
				path: "/",
				mappingPolicy: "restrict",
				autoAliases: false,
				bodyParsers: { json: false, urlencoded: false },
				aliases: {
					// The probes are answered by `httpHandler` before moleculer-web's `rest` action;
					// these aliases name them in the route table (and the OpenAPI document).
					/** Liveness: the process answers. */
					"GET health"(this: ApiThis, _req: Req, res: Res): void {
						this.sendHealth(res);
					},
					/** Readiness (`sendReadiness`). */
					"GET ready"(this: ApiThis, _req: Req, res: Res): Promise<void> {
						return this.sendReadiness(res);
					}
				},
				onError(this: ApiThis, req: Req, res: Res, err: unknown): void {
					this.sendErrorBody(req, res, err);
				}
			}
		],
		onError(this: ApiThis, req: Req, res: Res, err: unknown): void {
			this.sendErrorBody(req, res, err);
		}
	},

	actions: {
		/**
		 * moleculer-web's request handler (its schema, merged): never retried as a whole. The
		 * calls it makes are retried by the broker's policy where that is safe; repeating the
		 * entire request after a partial failure could repeat a non-idempotent write.
		 */
		rest: { retryPolicy: { enabled: false } },

		/**
		 * moleculer-web's request handler for order streams only (`httpHandler`): the same route,
		 * authentication, authorization and rate limit, but outside the request bulkhead. A
		 * stream lasts until its order is final; in `rest`'s bulkhead 50 open streams would hold
		 * every slot and queue every other request behind them. Streams are bounded per user and
		 * per address instead (mixins/web.mixin.ts).
		 */
		restStream: {
			visibility: "private",
			// No timeout, as `rest` (moleculer-web's `timeout: 0`, not in 0.15's action typings).
			...({ timeout: 0 } as object),
			tracing: false,
			bulkhead: { enabled: false },
			retryPolicy: { enabled: false },
			handler: gatewayRestHandler
		},

		/**
		 * Outbox lag of every emitting service (admin, `GET /api/admin/outbox`).
		 * @returns `{ [service]: { pending, oldestPendingAgeMs, published, serverDuplicates, mode }
		 *   | { error: type } }` (pending rows, age of the oldest in ms)
		 */
		outbox: {
			visibility: "published",
			params: {},
			async handler(this: ApiThis, ctx: Context): Promise<Record<string, unknown>> {
				const out: Record<string, unknown> = {};
				await Promise.all(
					OUTBOX_SERVICES.map(async name => {
						out[name] = await ctx
							.call(`${name}.outboxStatus`, {}, { timeout: 5_000 })
							.catch((err: { type?: string }) => ({
								error: err.type ?? "SERVICE_UNAVAILABLE"
							}));
					})
				);
				return out;
			}
		}
	},

	methods: {
		/**
		 * Every HTTP request (the server's handler, replacing moleculer-web's): the probes
		 * `GET /health` and `GET /ready` are answered here, with the security headers, before
		 * moleculer-web's `rest` action, whose bulkhead (`bulkhead` in moleculer.config.ts: 50 at
		 * once per node, 500 queued) customer requests need; a flood of probes cannot fill it.
		 * Order streams go to moleculer-web through `restStream` (outside that bulkhead),
		 * everything else through `rest`.
		 */
		httpHandler(
			this: ApiThis,
			req: Req,
			res: Res,
			next?: (err?: unknown) => void
		): Promise<void> | void {
			const probe = probeOf(req);
			if (!probe && isOrderStreamPath(req.url)) {
				// moleculer-web's handler, with `restStream` as its `rest` (no bulkhead).
				const actions = { ...this.actions, rest: this.actions.restStream! };
				const self = Object.create(this, { actions: { value: actions } }) as ApiThis;
				return gatewayHttpHandler.call(self, req, res, next);
			}
			if (!probe) return gatewayHttpHandler.call(this, req, res, next);
			securityHeaders(req, res, () => undefined);
			res.setHeader("Cache-Control", "no-store");
			if (probe === "health") return this.sendHealth(res);
			return this.sendReadiness(res).catch(err => this.sendErrorBody(req, res, err));
		},

		/** Liveness: 200 `{ status: "ok", nodeID, uptime }` (uptime in s). */
		sendHealth(this: ApiThis, res: Res): void {
			res.setHeader("Content-Type", "application/json; charset=utf-8");
			res.end(
				JSON.stringify({
					status: "ok",
					nodeID: this.broker.nodeID,
					uptime: Math.round(process.uptime())
				})
			);
		},

		/**
		 * Readiness: 200 `{ status: "ready", checks, events, checkedAt }` when this broker runs,
		 * the transporter (if any) is connected and every service's `readiness` (database reachable
		 * and migrated) answers, else 503 `{ status: "unavailable", ... }` with `Retry-After: 1`,
		 * each failed check naming its error's `type` (`checks.broker`: `starting`, `stopping`).
		 * `events`: each service's consumer lag (reported, never unready). Computed at most once
		 * per `READINESS_CACHE_MS` (1 s) and shared by every probe meanwhile (`checkedAt`, ISO
		 * 8601, says when): 2,000 concurrent probes cost six readiness calls.
		 */
		async sendReadiness(this: ApiThis, res: Res): Promise<void> {
			const r = await this.$readiness();
			res.statusCode = r.ready ? 200 : 503;
			if (!r.ready) res.setHeader("Retry-After", "1");
			res.setHeader("Content-Type", "application/json; charset=utf-8");
			res.end(
				JSON.stringify({
					status: r.ready ? "ready" : "unavailable",
					checks: r.checks,
					events: r.events,
					checkedAt: r.checkedAt
				})
			);
		},

		/**
		 * Resolves the bearer token (if any) to a user. No header: anonymous.
		 * @throws AUTH_TOKEN_INVALID (401)
		 */
		async authenticate(
			this: ApiThis,
			ctx: Context<unknown, Record<string, unknown>>,
			_route: unknown,
			req: Req
		): Promise<AuthUser | null> {
			const header = req.headers.authorization;
			if (header === undefined || header === "") return null;
			const m = BEARER_RE.exec(header);
			if (!m) throw shopError("AUTH_TOKEN_INVALID");
			try {
				return await ctx.call<AuthUser, { token: string }>("users.resolveToken", {
					token: m[1]!
				});
			} catch (err) {
				if ((err as { type?: string }).type === "VALIDATION_ERROR")
					throw shopError("AUTH_TOKEN_INVALID");
				throw err;
			}
		},

		/** Enforces the alias's `auth`. @throws AUTH_TOKEN_MISSING (401), AUTH_FORBIDDEN (403) */
		authorize(
			this: ApiThis,
			ctx: Context<unknown, { user?: AuthUser | null }>,
			_route: unknown,
			req: Req
		): void {
			const need = req.$alias?.auth;
			if (!need) return;
			const user = ctx.meta.user;
			if (!user) throw shopError("AUTH_TOKEN_MISSING");
			if (need === "admin" && user.role !== "admin") throw shopError("AUTH_FORBIDDEN");
		},

		/** Writes an error in the CONTRACT's form; logs 5xx with their cause, server-side only. */
		sendErrorBody(this: ApiThis, req: Req, res: Res, err: unknown): void {
			const body = toErrorBody(err, config().production);
			if (body.code >= 500)
				// Also reached outside the request's handler (moleculer-web's last-resort handler).
				withRequestId(req.$ctx?.requestID, () =>
					this.logger.error(`${req.method} ${req.url} -> ${body.code}`, err)
				);
			if (res.headersSent) {
				res.end();
				return;
			}
			const ctx = req.$ctx;
			if (ctx?.requestID) res.setHeader("X-Request-ID", ctx.requestID);
			if (body.type === "REQUEST_RATE_LIMITED") {
				const retryAfter = retryAfterSeconds(res);
				res.setHeader("Retry-After", String(retryAfter));
				body.data = {
					limit: config().rateLimitMax,
					windowMs: config().rateLimitWindowMs,
					retryAfter
				};
			} else if (
				body.type === "AUTH_LOGIN_THROTTLED" ||
				body.type === "ORDERS_STREAM_LIMIT"
			) {
				const data = body.data as { retryAfter?: unknown } | undefined;
				const s = Number(data?.retryAfter);
				res.setHeader(
					"Retry-After",
					String(Number.isFinite(s) && s >= 1 ? Math.ceil(s) : 1)
				);
			} else if (body.code === 503 || body.code === 429) res.setHeader("Retry-After", "1");
			res.statusCode = body.code;
			res.setHeader("Content-Type", "application/json; charset=utf-8");
			let text: string;
			try {
				text = JSON.stringify(body);
			} catch {
				// `data` that cannot be serialized (too deep, a cycle) must not throw here: this
				// runs in moleculer-web's last-resort handler, and a throw ends the process.
				text = JSON.stringify({ ...body, data: undefined });
			}
			res.end(text);
		}
	},

	/**
	 * Node answers a request its HTTP parser refuses (a bad request line or framing, headers over
	 * 16 KB, a client too slow to send them, no Host) with a bare status line and no body; the
	 * gateway answers those in the CONTRACT's error form too (`clientErrorResponse`,
	 * `requireHost`). moleculer-web created the server in its own `created`, which runs first.
	 */
	created(this: ApiThis): void {
		this.$readiness = cachedFor(READINESS_CACHE_MS, () =>
			clusterReadiness(this.broker, DATABASE_SERVICES)
		);
		const server = (this as unknown as { server?: Server }).server;
		// Node reads this option from the server on every request; requireHost answers instead.
		if (server) (server as Server & { requireHostHeader: boolean }).requireHostHeader = false;
		server?.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
			// As Node's own handler: answer only on a connection nothing was written to yet.
			if (
				err.code === "ECONNRESET" ||
				!socket.writable ||
				(socket as Socket).bytesWritten > 0
			) {
				socket.destroy();
				return;
			}
			socket.end(clientErrorResponse(err.code));
		});
	},

	/** Closes the Redis connections of the routes' rate limit stores. */
	async stopped(this: ApiThis): Promise<void> {
		const routes =
			(this as unknown as { routes?: { rateLimit?: { store?: unknown } }[] }).routes ?? [];
		for (const route of routes) {
			const store = route.rateLimit?.store;
			if (store instanceof RedisRateLimitStore) await store.close();
		}
	}
};

export default ApiService;
