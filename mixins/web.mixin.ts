/**
 * `WebMixin(options)`: a moleculer-web gateway's generic wiring, mixed into `api`
 * (services/api/api.service.ts) before moleculer-web (its `send404` and `stopped` must come
 * first). It knows no service (issue 17: the order streams moved to services/api/).
 *
 * - The web app (web/, built by `npm run build` into dist/web, served by moleculer-web's
 *   `assets`): a GET for a page (`Accept: text/html`, no file extension, outside `/api`, `/health`,
 *   `/ready`) that is not a file answers `index.html`, so deep links (`/admin`, `/orders/<id>`)
 *   load the app; anything else not found stays the JSON 404. `webSecurityHeaders` gives the app's
 *   pages a Content-Security-Policy that lets the bundle run (`'self'` only) while `/api` answers
 *   keep `default-src 'none'`.
 * - Security headers (`securityHeaders`: helmet, CSP locked down for a JSON API) and client
 *   request ids (`acceptRequestId`).
 * - Error bodies (`sendErrorBody`): the CONTRACT's `{ name, message, code, type, data }`
 *   (platform/web/gateway-errors.ts) with `Retry-After` on every 429 and 503.
 * - The probes (`sendHealth`, `sendReadiness`, `probeOf`): `GET /health` and `GET /ready`, the
 *   latter from the gateway's `$readiness` (set by the service: which services it asks is its
 *   business).
 */
import fs from "node:fs";
import path from "node:path";
import type { IncomingMessage, ServerResponse } from "node:http";
import helmet from "helmet";
import type { Context, Service, ServiceSchema } from "moleculer";
import ApiGateway from "moleculer-web";
import { config } from "../platform/config";
import type { ShopServiceSchema } from "../platform/context";
import type { NodeReadiness } from "../platform/node-health";
import { withRequestId } from "../platform/request-context";
import { toErrorBody } from "../platform/web/gateway-errors";
import { retryAfterSeconds } from "../platform/web/rate-limit";

/** A request as moleculer-web hands it to routes' hooks and handlers. */
export type GatewayRequest = IncomingMessage & {
	$ctx: Context<unknown, Record<string, unknown>>;
	$params: Record<string, unknown>;
	$alias?: { auth?: "customer" | "admin" };
	body?: unknown;
	originalUrl?: string;
};

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

/** Security headers of every answer (helmet's defaults, CSP locked down for a JSON API). */
export const securityHeaders = helmet({
	contentSecurityPolicy: {
		useDefaults: false,
		directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] }
	},
	frameguard: { action: "deny" },
	strictTransportSecurity: config().production
});

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** Drops a client request id that is not well-formed (1-128 of A-Z a-z 0-9 . _ : -). */
export function acceptRequestId(options: { requestID?: string }): void {
	const id = options.requestID;
	if (id !== undefined && (typeof id !== "string" || !REQUEST_ID_RE.test(id)))
		delete options.requestID;
}

/** `health` or `ready` for a `GET`/`HEAD` of the probes' paths (query and a trailing `/` allowed). */
export function probeOf(req: Pick<IncomingMessage, "method" | "url">): "health" | "ready" | null {
	if (req.method !== "GET" && req.method !== "HEAD") return null;
	const m = /^\/(health|ready)\/?(?:\?|$)/.exec(req.url ?? "");
	return m ? (m[1] as "health" | "ready") : null;
}

/** moleculer-web's own 404, kept by `send404` below for what is not a page. */
const gatewaySend404 = (
	ApiGateway as unknown as {
		methods: { send404(this: unknown, req: IncomingMessage, res: ServerResponse): void };
	}
).methods.send404;

/** What the service mixing this in chooses. */
export interface WebOptions {
	/**
	 * Error types whose `data.retryAfter` (seconds) gives the answer's `Retry-After`; other 429
	 * and 503 answers get 1 s (a rate-limited request: the time to its window's end).
	 */
	retryAfterFromData: readonly string[];
}

/** The methods the gateway's routes and handlers call. */
export interface WebMethods {
	/** Writes an error in the CONTRACT's form; logs 5xx with their cause, server-side only. */
	sendErrorBody(req: GatewayRequest, res: ServerResponse, err: unknown): void;
	/** Liveness: 200 `{ status: "ok", nodeID, uptime }` (uptime in s). */
	sendHealth(res: ServerResponse): void;
	/** Readiness from `$readiness`: 200 or 503 (`Retry-After: 1`). */
	sendReadiness(res: ServerResponse): Promise<void>;
}

/** The gateway as these handlers see it. */
export type WebThis = Service &
	WebMethods & {
		/** The gateway's readiness, cached (the service sets it in its `created`). */
		$readiness: () => Promise<NodeReadiness>;
		/** moleculer-web's static file server (`assets`). */
		serve?: (
			req: IncomingMessage & { originalUrl?: string },
			res: ServerResponse,
			next: (err?: unknown) => void
		) => void;
	};

export function WebMixin(options: WebOptions): Partial<ServiceSchema> {
	const schema: Partial<ShopServiceSchema<WebThis>> = {
		created(this: WebThis): void {
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

			/** Liveness: 200 `{ status: "ok", nodeID, uptime }` (uptime in s). */
			sendHealth(this: WebThis, res: ServerResponse): void {
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
			async sendReadiness(this: WebThis, res: ServerResponse): Promise<void> {
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

			/** Writes an error in the CONTRACT's form; logs 5xx with their cause, server-side only. */
			sendErrorBody(
				this: WebThis,
				req: GatewayRequest,
				res: ServerResponse,
				err: unknown
			): void {
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
				} else if (options.retryAfterFromData.includes(body.type)) {
					const data = body.data as { retryAfter?: unknown } | undefined;
					const s = Number(data?.retryAfter);
					res.setHeader(
						"Retry-After",
						String(Number.isFinite(s) && s >= 1 ? Math.ceil(s) : 1)
					);
				} else if (body.code === 503 || body.code === 429)
					res.setHeader("Retry-After", "1");
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
		}
	};
	return schema as Partial<ServiceSchema>;
}
