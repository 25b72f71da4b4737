/**
 * What the gateway answers for any error that reaches its error handler: the CONTRACT's body
 * `{ name, message, code, type, data }` with `code` the HTTP status and `type` from the ONE table
 * (platform/errors.ts: the shop's `ERRORS` or Moleculer's `FRAMEWORK_ERROR_TYPES`).
 *
 * Every error class of Moleculer (node_modules/moleculer/src/errors.js) and moleculer-web
 * (node_modules/moleculer-web/src/errors.js) that a request can meet is mapped here, by its `type`
 * (what survives the transporter) or, for the classes thrown without one, by class name
 * (test/unit/gateway-errors.test.ts constructs each). A class ends as 500 `INTERNAL_ERROR` only
 * when it means a bug: a schema or broker option error, a call loop (`MAX_CALL_LEVEL`), a response
 * the gateway cannot send, a foreign protocol. The ones that mean "not (yet) there" (a service not
 * registered while the shop starts, a node that left, a transporter reconnecting) are 503 and the
 * gateway adds `Retry-After` (mixins/web.mixin.ts `sendErrorBody`): a client retrying through
 * a restart can tell them from a bug.
 */
import { ERRORS, FRAMEWORK_ERROR_TYPES, type ErrorType } from "../errors";

/** A type a client may see: the shop's own or one of Moleculer's kept as they are. */
type ClientType = ErrorType | keyof typeof FRAMEWORK_ERROR_TYPES;

/**
 * Framework and body-parser error types → the type the client sees (its status from the table).
 */
export const GATEWAY_ERROR_TYPES: Readonly<Record<string, ClientType>> = {
	// body-parser (http-errors' `type`)
	"entity.parse.failed": "REQUEST_INVALID_JSON",
	"entity.too.large": "REQUEST_BODY_TOO_LARGE",
	"encoding.unsupported": "REQUEST_UNSUPPORTED_MEDIA_TYPE",
	"charset.unsupported": "REQUEST_UNSUPPORTED_MEDIA_TYPE",
	"request.aborted": "REQUEST_INVALID_JSON",
	"request.size.invalid": "REQUEST_INVALID_JSON",
	"stream.encoding.set": "REQUEST_INVALID_JSON",
	// moleculer-web: NotFoundError (no route), BadRequestError (a path param that is not valid
	// percent-encoding, `/api/products/%ff`), PayloadTooLarge, InvalidRequestBodyError,
	// UnAuthorizedError, ForbiddenError (CORS), RateLimitExceeded (when given a type)
	NOT_FOUND: "REQUEST_NOT_FOUND",
	UNABLE_DECODE_PARAM: "REQUEST_MALFORMED",
	PAYLOAD_TOO_LARGE: "REQUEST_BODY_TOO_LARGE",
	INVALID_REQUEST_BODY: "REQUEST_INVALID_JSON",
	NO_TOKEN: "AUTH_TOKEN_MISSING",
	INVALID_TOKEN: "AUTH_TOKEN_INVALID",
	ORIGIN_NOT_FOUND: "ORIGIN_NOT_ALLOWED",
	RATE_LIMIT_EXCEEDED: "REQUEST_RATE_LIMITED",
	// Moleculer. Every route is an alias of a known action (mappingPolicy "restrict"), so a
	// service not found behind one is an outage (not started yet, its nodes died or left), not a
	// missing resource; Moleculer gives SERVICE_NOT_AVAILABLE (also an open circuit breaker's
	// answer) code 404, which is not what a client should see either.
	SERVICE_NOT_FOUND: "SERVICE_NOT_AVAILABLE",
	SERVICE_NOT_AVAILABLE: "SERVICE_NOT_AVAILABLE",
	// RequestRejectedError: the node handling the call disconnected; GracefulStopTimeoutError: the
	// service was stopping.
	REQUEST_REJECTED: "SERVICE_NOT_AVAILABLE",
	GRACEFUL_STOP_TIMEOUT: "SERVICE_NOT_AVAILABLE",
	// RequestSkippedError: the request's own timeout passed before a nested call was made.
	REQUEST_SKIPPED: "REQUEST_TIMEOUT",
	// BrokerDisconnectedError (Moleculer: 502): this node's transporter is reconnecting.
	BAD_GATEWAY: "SERVICE_UNAVAILABLE"
};

/** Classes thrown without a type → the type the client sees. */
export const GATEWAY_ERROR_CLASSES: Readonly<Record<string, ClientType>> = {
	// moleculer-web: an alias whose action has no endpoint (its service is not registered: the
	// shop is starting, or the service's nodes are gone)
	ServiceUnavailableError: "SERVICE_NOT_AVAILABLE",
	RateLimitExceeded: "REQUEST_RATE_LIMITED",
	ForbiddenError: "AUTH_FORBIDDEN",
	BadRequestError: "REQUEST_MALFORMED",
	UnAuthorizedError: "AUTH_TOKEN_INVALID",
	NotFoundError: "REQUEST_NOT_FOUND",
	// Moleculer's utils.promiseTimeout
	TimeoutError: "REQUEST_TIMEOUT"
};

/** A 4xx without a (known) type, by status: the shop's generic type of that status. */
const CLIENT_STATUS_TYPES: Readonly<Record<number, ErrorType>> = {
	400: "REQUEST_MALFORMED",
	401: "AUTH_TOKEN_INVALID",
	403: "AUTH_FORBIDDEN",
	404: "REQUEST_NOT_FOUND",
	408: "REQUEST_CLIENT_TIMEOUT",
	413: "REQUEST_BODY_TOO_LARGE",
	415: "REQUEST_UNSUPPORTED_MEDIA_TYPE",
	429: "REQUEST_RATE_LIMITED",
	431: "REQUEST_HEADERS_TOO_LARGE"
};

/** The error body of the CONTRACT: `{ name, message, code, type, data }`. */
export interface ErrorBody {
	name: string;
	message: string;
	code: number;
	type: string;
	data?: unknown;
}

const spec = (type: string): { code: number; description: string } | undefined =>
	Object.prototype.hasOwnProperty.call(ERRORS, type)
		? ERRORS[type as ErrorType]
		: FRAMEWORK_ERROR_TYPES[type];

/** The class name a framework type's body carries (the class Moleculer throws it with). */
const FRAMEWORK_NAMES: Readonly<Record<string, string>> = {
	SERVICE_NOT_AVAILABLE: "ServiceNotAvailableError",
	REQUEST_TIMEOUT: "RequestTimeoutError",
	ORIGIN_NOT_ALLOWED: "ForbiddenError"
};

/** The body of a type from the table, with its description as the message. */
function tableBody(type: ClientType): ErrorBody {
	const s = spec(type)!;
	const own = Object.prototype.hasOwnProperty.call(ERRORS, type);
	return {
		name: own
			? s.code < 500
				? "ShopClientError"
				: "ShopRetryableError"
			: (FRAMEWORK_NAMES[type] ?? "MoleculerError"),
		message: s.description,
		code: s.code,
		type
	};
}

/**
 * Maps any error that reaches the gateway to the CONTRACT's body (see the file's comment). The
 * shop's own errors and Moleculer's kept types (`VALIDATION_ERROR`, `REQUEST_TIMEOUT`, ...) keep
 * their message and `data`; framework errors get the table's type and description. In
 * production a 5xx keeps only name, message, code and type.
 * @param err - anything thrown or rejected
 * @param production - `NODE_ENV=production`: no internals in 5xx bodies
 * @returns the body; `code` is the HTTP status (400-599)
 */
export function toErrorBody(err: unknown, production: boolean): ErrorBody {
	const e = (err ?? {}) as {
		name?: unknown;
		message?: unknown;
		code?: unknown;
		status?: unknown;
		type?: unknown;
		data?: unknown;
	};
	const type = typeof e.type === "string" ? e.type : "";
	const name = typeof e.name === "string" ? e.name : "";
	// A compressed body that does not decompress: moleculer-web re-wraps body-parser's zlib
	// error, keeping zlib's string `code` and dropping its 400 status.
	if (typeof e.code === "string" && /^(?:Z_|ERR__ERROR_)/.test(e.code))
		return tableBody("REQUEST_INVALID_JSON");
	const mapped =
		(Object.prototype.hasOwnProperty.call(GATEWAY_ERROR_TYPES, type)
			? GATEWAY_ERROR_TYPES[type]
			: undefined) ??
		(!spec(type) && Object.prototype.hasOwnProperty.call(GATEWAY_ERROR_CLASSES, name)
			? GATEWAY_ERROR_CLASSES[name]
			: undefined);
	if (mapped) return tableBody(mapped);

	const known = spec(type);
	const rawCode =
		typeof e.code === "number" ? e.code : typeof e.status === "number" ? e.status : 500;
	const code = known ? known.code : rawCode >= 400 && rawCode < 600 ? rawCode : 500;
	// A 4xx of no type (a bare MoleculerClientError): the shop's generic type of its status.
	const generic = CLIENT_STATUS_TYPES[code];
	if (!known && !type && generic) return tableBody(generic);
	if (!known && code >= 500) {
		// Unknown and "unavailable": transient, as it says; anything else is a bug.
		if (code === 503) return tableBody("SERVICE_UNAVAILABLE");
		return production || !type
			? {
					name: "InternalError",
					message: "Internal server error",
					code: 500,
					type: "INTERNAL_ERROR"
				}
			: {
					name: "InternalError",
					message: "Internal server error",
					code: 500,
					type: "INTERNAL_ERROR",
					data: { cause: name || type }
				};
	}
	const body: ErrorBody = {
		name: name || "Error",
		message: String(e.message ?? ""),
		code,
		type: type || "INTERNAL_ERROR"
	};
	if (e.data !== undefined && !(production && code >= 500)) body.data = e.data;
	return body;
}
