/**
 * `api`: the moleculer-web gateway on `PORT`. Only the CONTRACT's routes are reachable
 * (`mappingPolicy: "restrict"`): internal actions (`inventory.reserve`, `payments.charge`,
 * `users.resolveToken`, `$node.*`) have no alias and are never callable over REST.
 *
 * - Authentication: `Authorization: Bearer <JWT>` (the scheme in any case, RFC 9110 §11.1)
 *   resolved by `users.resolveToken`; on a route that needs a user a malformed, expired or forged
 *   token is 401 `AUTH_TOKEN_INVALID`, on a public route it is ignored (the caller is anonymous).
 * - Authorization per alias (`auth`): `customer` needs a user (401 `AUTH_TOKEN_MISSING`),
 *   `admin` needs the admin role (403 `AUTH_FORBIDDEN`).
 * - JSON bodies only (415 otherwise; `application/*+json` too), objects only (400), at most
 *   `BODY_LIMIT` (413). A `__proto__` key anywhere in the body, or a string (body, query or
 *   path) with a control character other than tab, LF and CR or with a lone UTF-16 surrogate,
 *   is refused as 422 `VALIDATION_ERROR` before any action sees it (`findHostileValue`), as
 *   are values nested deeper than 32 levels and a field given twice (path, query, body) with
 *   different values (`findConflictingField`).
 * - A path of the REST table with a method it does not have (a non-preflight `OPTIONS`, a `HEAD`
 *   too) is 405 `REQUEST_METHOD_NOT_ALLOWED` with `Allow`; a path it does not have is 404
 *   `REQUEST_NOT_FOUND`. On a read (GET) query keys an action does not declare are ignored
 *   (`?_=1`); on a write, and in a body, they are 422 (docs/api.md "REST rules"). Requests Node's HTTP parser
 *   refuses get the error form too: 400 `REQUEST_MALFORMED` (also for a path with bad
 *   percent-encoding), 431 `REQUEST_HEADERS_TOO_LARGE` (the URL
 *   counts), 413 `REQUEST_BODY_TOO_LARGE` (chunk extensions over 16 KB), 408
 *   `REQUEST_CLIENT_TIMEOUT`, then the connection closes; a reused keep-alive connection is
 *   answered too, only one whose response is being written is cut without an answer
 *   (platform/web/client-errors.ts). A compressed body that does not decompress is 400
 *   `REQUEST_INVALID_JSON`.
 * - `X-Request-ID` (or `X-Correlation-ID`) accepted when well-formed, else generated; returned on
 *   every answer and used as the context's `requestID` through every service.
 * - `Idempotency-Key` on the routes that honour it (`IDEMPOTENCY_KEY_ACTIONS`: `POST /api/orders`)
 *   becomes `ctx.meta.idempotencyKey`; other routes ignore the header.
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
 * - Where things are: the REST table in routes.ts; the order streams (`GET /api/orders/:id/events`)
 *   and orders per second in order-streams.ts; the admin actions in admin-actions.ts; the services
 *   `/ready` asks in cluster-services.ts; the OpenAPI shapes in openapi-schemas.ts. Generic gateway
 *   wiring (web app, security headers, error bodies, probes) is mixins/web.mixin.ts; request checks,
 *   client address and rate limit are platform/web/.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { Errors, type Context, type Service, type ServiceSchema } from "moleculer";
import ApiGateway from "moleculer-web";
import { config } from "../../platform/config";
import type { AuthUser, ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import {
	cachedFor,
	clusterReadiness,
	READINESS_CACHE_MS,
	waitForLocalServices
} from "../../platform/node-health";
import {
	acceptTraceContext,
	answerTraceContext,
	type TraceCallOptions
} from "../../platform/tracing/trace-context";
import { clientAddress } from "../../platform/web/client-address";
import { apiRateLimit } from "../../platform/web/rate-limit";
import { RedisRateLimitStore } from "../../platform/web/rate-limit-store";
import { answerClientErrors } from "../../platform/web/client-errors";
import {
	allowedMethods,
	bearerToken,
	findConflictingField,
	findHostileValue,
	ignoreUnknownQueryKeys,
	requireHost,
	type RoutedAlias
} from "../../platform/web/request-guards";
import { ApiDocsMixin } from "../../mixins/api-docs.mixin";
import {
	acceptRequestId,
	probeOf,
	securityHeaders,
	WEB_ASSETS_OPTIONS,
	WEB_DIR,
	WebMixin,
	webSecurityHeaders,
	type GatewayRequest,
	type WebThis
} from "../../mixins/web.mixin";
import { ADMIN_ACTIONS } from "./admin-actions";
import { READINESS_SERVICES } from "./cluster-services";
import { SHOP_OPENAPI } from "./openapi-schemas";
import { isOrderStreamPath, OrderStreamsMixin, type OrderStreamMethods } from "./order-streams";
import { API_ALIASES, IDEMPOTENCY_KEY_ACTIONS, STREAM_ALIASES } from "./routes";

/** A request as the gateway's handlers see it (moleculer-web's fields they read). */
type Req = GatewayRequest & {
	/** The path without query string and trailing `/` (moleculer-web's `rest`). */
	parsedUrl?: string;
	$alias?: { auth?: string; action?: string };
};
type Res = ServerResponse;

const IDEMPOTENCY_KEY_RE = /^[A-Za-z0-9._:-]{1,255}$/;

/** The gateway as its handlers see it: moleculer-web, WebMixin and the order streams. */
type ApiThis = WebThis & OrderStreamMethods;

/** Error types whose `data.retryAfter` (s) is the answer's `Retry-After` (WebMixin). */
const RETRY_AFTER_FROM_DATA = ["AUTH_LOGIN_THROTTLED", "ORDERS_STREAM_LIMIT"] as const;

/** The web mixin, kept: the gateway's `send404` (405 first) falls back to its page-or-404. */
const Web = WebMixin({ retryAfterFromData: RETRY_AFTER_FROM_DATA });
const webSend404 = (
	Web.methods as { send404(this: unknown, req: IncomingMessage, res: ServerResponse): void }
).send404;

/** moleculer-web's aliases of every route of the gateway (method and path regexp). */
const routedAliases = (gateway: unknown): RoutedAlias[] =>
	(gateway as { aliases?: RoutedAlias[] }).aliases ?? [];

/**
 * The 405 of a path the REST table has with a method it does not: `Allow` lists the methods.
 * @returns the error to answer, or null when the path has no route (a 404)
 */
function methodNotAllowed(
	aliases: readonly RoutedAlias[],
	url: string,
	res: ServerResponse
): Error | null {
	const allow = allowedMethods(aliases, url);
	if (allow.length === 0) return null;
	res.setHeader("Allow", allow.join(", "));
	return shopError("REQUEST_METHOD_NOT_ALLOWED", undefined, { allow });
}

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

/**
 * A preflight (with Access-Control-Request-Method) was answered by CORS; moleculer-web resolves
 * any other OPTIONS as a GET (its `resolveAlias` defaults the method), so it reaches a GET
 * alias: refused here, 405 with `Allow` like any method a path does not have.
 * @throws REQUEST_METHOD_NOT_ALLOWED (405) for an OPTIONS
 */
function refuseOptions(gateway: unknown, req: Req, res: Res): void {
	if (req.method === "OPTIONS")
		throw (
			methodNotAllowed(routedAliases(gateway), req.parsedUrl ?? "", res) ??
			shopError("REQUEST_NOT_FOUND")
		);
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
	// WebMixin and OrderStreamsMixin first: their send404 (deep links load the web app) and
	// stopped (ends the order streams before the server waits for its connections) take
	// precedence over moleculer-web's. ListenWhenLocalServicesStarted last: its `started` runs
	// first (see there).
	mixins: [
		Web,
		OrderStreamsMixin(),
		ApiGateway as unknown as Partial<ServiceSchema>,
		ApiDocsMixin(SHOP_OPENAPI),
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
			allowedHeaders: [
				"Authorization",
				"Content-Type",
				"Idempotency-Key",
				"X-Request-ID",
				"traceparent",
				"tracestate"
			],
			exposedHeaders: [
				"X-Request-ID",
				"traceparent",
				"Retry-After",
				"X-Rate-Limit-Limit",
				"X-Rate-Limit-Remaining",
				"X-Rate-Limit-Reset"
			],
			credentials: false,
			maxAge: 600
		},
		/**
		 * Accepts a well-formed client request id; otherwise Moleculer generates one. A valid W3C
		 * `traceparent` joins the caller's trace: its trace id becomes the request id, its span the
		 * gateway span's parent (platform/tracing/trace-context.ts, docs/tracing.md).
		 */
		rootCallOptions(options: TraceCallOptions, req: IncomingMessage): void {
			acceptRequestId(options);
			acceptTraceContext(options, req.headers);
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
				/**
				 * Client address, content type, body shape, unknown query keys and Idempotency-Key,
				 * before the call.
				 */
				onBeforeCall(
					this: ApiThis,
					ctx: Context<unknown, Record<string, unknown>>,
					_route: unknown,
					req: Req,
					res: Res
				): void {
					ctx.meta.clientIp = clientAddress(req);
					refuseOptions(this, req, res);
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
					// On a read, query keys the action does not declare are ignored (`?_=1`);
					// on a write they stay refused (422), like unknown body keys. A handler route
					// (no action: the order stream) reads its path parameter only.
					const action = (req as { $action?: { params?: unknown } }).$action;
					const query =
						action && req.method === "GET"
							? ignoreUnknownQueryKeys(
									req.$params,
									(req as { query?: unknown }).query,
									req.body,
									Object.keys((action.params as object | undefined) ?? {})
								)
							: (req as { query?: unknown }).query;
					const hostile =
						findHostileValue(req.body, req.$params) ??
						findConflictingField(
							req.body,
							query,
							Object.fromEntries(pathKeys.map(k => [k.name, req.$params[k.name]]))
						);
					if (hostile)
						throw new Errors.ValidationError(
							"Parameters validation error!",
							"VALIDATION_ERROR",
							[hostile]
						);
					const key = req.headers["idempotency-key"];
					const honoured = IDEMPOTENCY_KEY_ACTIONS.has(String(req.$alias?.action ?? ""));
					if (key !== undefined && honoured) {
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
				/** A non-preflight OPTIONS of `/health` or `/ready`: 405 (see `refuseOptions`). */
				onBeforeCall(
					this: ApiThis,
					_ctx: Context,
					_route: unknown,
					req: Req,
					res: Res
				): void {
					refuseOptions(this, req, res);
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
		 * per address instead (services/api/order-streams.ts).
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

		...ADMIN_ACTIONS
	},

	/**
	 * Every answer carries the W3C `traceparent` of the request's gateway span (set where
	 * moleculer-web sets `X-Request-ID`); a well-formed client `X-Request-ID` that a
	 * `traceparent` replaced as the request id stays on that span as `clientRequestID`.
	 */
	hooks: {
		before: {
			"rest|restStream"(ctx: Context<{ req: Req; res: Res }>): void {
				const { req, res } = ctx.params;
				answerTraceContext(ctx, res);
				if (!ctx.span) return;
				const sent = {
					requestID: req.headers["x-correlation-id"] ?? req.headers["x-request-id"]
				} as { requestID?: string };
				acceptRequestId(sent);
				if (sent.requestID !== undefined && sent.requestID !== ctx.requestID)
					ctx.span.addTags({ clientRequestID: sent.requestID });
			}
		}
	},

	methods: {
		/**
		 * Not routed: a path of the REST table with another method is 405 with `Allow`
		 * (`methodNotAllowed`); anything else is the web mixin's answer (a page for a deep link,
		 * else 404 `REQUEST_NOT_FOUND`).
		 */
		send404(this: ApiThis, req: Req, res: Res): void {
			const url =
				req.parsedUrl ?? (req.url ?? "").replace(/\?.*$/, "").replace(/(.)\/+$/, "$1");
			const err = methodNotAllowed(routedAliases(this), url, res);
			if (err) return this.sendErrorBody(req, res, err);
			webSend404.call(this, req, res);
		},

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
			// Only `/h...` and `/r...` can be a probe: other paths skip probeOf's regexp.
			const second = req.url?.charCodeAt(1);
			const probe = second === 0x68 || second === 0x72 ? probeOf(req) : null;
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

		/**
		 * Resolves the bearer token (if any) to a user: `Authorization: Bearer <JWT>`, the scheme in
		 * any case (RFC 9110 §11.1). No header: anonymous. A token that cannot be verified
		 * (malformed, forged, expired, its user gone) is refused on a route that needs a user, and
		 * ignored on a public one (anonymous there: nothing a public route answers depends on it).
		 * @throws AUTH_TOKEN_INVALID (401) on a route with `auth` only; a transient error of
		 *   `users.resolveToken` (503) on any route
		 */
		async authenticate(
			this: ApiThis,
			ctx: Context<unknown, Record<string, unknown>>,
			_route: unknown,
			req: Req
		): Promise<AuthUser | null> {
			const token = bearerToken(req.headers.authorization);
			if (token === undefined) return null;
			const invalid = (): null => {
				if (req.$alias?.auth) throw shopError("AUTH_TOKEN_INVALID");
				return null;
			};
			if (token === null) return invalid();
			// One form for whoever reads the header later (the order streams read its expiry).
			req.headers.authorization = `Bearer ${token}`;
			try {
				return await ctx.call<AuthUser, { token: string }>("users.resolveToken", {
					token
				});
			} catch (err) {
				const type = (err as { type?: string }).type;
				if (type === "VALIDATION_ERROR" || type === "AUTH_TOKEN_INVALID") return invalid();
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
		}
	},

	/**
	 * Node answers a request its HTTP parser refuses (a bad request line or framing, headers over
	 * 16 KB, a client too slow to send them, no Host) with a bare status line and no body; the
	 * gateway answers those in the CONTRACT's error form too, on fresh and reused keep-alive
	 * connections alike, unless a response is being written on that connection
	 * (`answerClientErrors`, platform/web/client-errors.ts; `requireHost`). moleculer-web
	 * created the server in its own `created`, which runs first.
	 */
	created(this: ApiThis): void {
		this.$readiness = cachedFor(READINESS_CACHE_MS, () =>
			clusterReadiness(this.broker, READINESS_SERVICES)
		);
		const server = (this as unknown as { server?: Server }).server;
		if (server) {
			// Node reads this option from the server on every request; requireHost answers instead.
			(server as Server & { requireHostHeader: boolean }).requireHostHeader = false;
			answerClientErrors(server);
		}
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
