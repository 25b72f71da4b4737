/**
 * Checks a gateway makes on a request before any action sees it, and its answers to requests
 * Node's HTTP parser refuses. Moved out of services/api/api.service.ts (issue 17): they know no
 * service, only the errors table (platform/errors.ts).
 *
 * - `findHostileValue`, `findConflictingField`: values no action's fastest-validator schema
 *   catches (too deep, `__proto__`, control characters, lone surrogates, a field given twice).
 * - `clientErrorType`, `clientErrorResponse`: Node's `clientError` (a bad request line, headers
 *   over 16 KB, a slow client) answered in the CONTRACT's error form instead of a bare status.
 * - `requireHost`: connect middleware refusing an HTTP/1.1 request without `Host`.
 * - `bearerToken`: the token of an `Authorization: Bearer` header, the scheme in any case.
 * - `ignoreUnknownQueryKeys`: the query keys an action does not declare, dropped from its params
 *   (the gateway does it for reads, GET).
 * - `allowedMethods`: the methods of the routes a path has (a 405's `Allow`).
 *
 * The rules they implement are docs/api.md's "Request rules".
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from "node:http";
import { ERRORS, shopError, type ErrorType } from "../errors";

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

// ---------------------------------------------------------------------------------------------
// Authorization, query keys, methods

/** `Bearer <token68>`: the scheme case-insensitive (RFC 9110 §11.1), then 1+ spaces. */
const BEARER_RE = /^bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)$/i;

/**
 * The JWT of an `Authorization` header: `Bearer <token>` with the scheme in any case (`bearer`,
 * `BEARER`: RFC 9110 §11.1 makes auth-schemes case-insensitive) and one or more spaces.
 * @param header - the header's value as Node gives it (absent: undefined)
 * @returns `undefined` when there is no header (or it is empty), `null` when it is not a bearer
 *   JWT (another scheme, a malformed token), else the token (three base64url parts)
 */
export function bearerToken(header: string | undefined): string | null | undefined {
	if (header === undefined || header === "") return undefined;
	return BEARER_RE.exec(header)?.[1] ?? null;
}

/**
 * Drops from `params` (an action's merged parameters: body, then query, then path) every query
 * key the action does not declare, so `GET /api/products?_=1` (a cache-busting client) means
 * `GET /api/products`. Body keys are left alone (the action's `$$strict` refuses unknown ones,
 * 422), and so is a query key the body also has (the body's copy decides; a different value is
 * a conflict, `findConflictingField`). Mutates `params`.
 * @param params - the merged params (moleculer-web's `req.$params`)
 * @param query - the parsed query string
 * @param body - the JSON body (anything: only an object's own keys count)
 * @param declared - the action's parameter names (its fastest-validator schema's keys)
 * @returns the query without the dropped keys (for the conflict check)
 */
export function ignoreUnknownQueryKeys(
	params: Record<string, unknown>,
	query: unknown,
	body: unknown,
	declared: readonly string[]
): Record<string, unknown> {
	if (query === null || typeof query !== "object") return {};
	const inBody = (k: string): boolean =>
		body !== null &&
		typeof body === "object" &&
		!Array.isArray(body) &&
		Object.prototype.hasOwnProperty.call(body, k);
	const kept: Record<string, unknown> = {};
	for (const [key, value] of Object.entries(query as Record<string, unknown>)) {
		if (declared.includes(key) && !key.startsWith("$$")) kept[key] = value;
		else if (!inBody(key)) delete params[key];
	}
	return kept;
}

/** A route of a gateway as moleculer-web holds it (`this.aliases`): its method and path regexp. */
export interface RoutedAlias {
	method: string;
	re: RegExp;
}

/**
 * The methods of the routes whose path matches `url` (no query string, no trailing `/`), sorted,
 * for the `Allow` header of a 405: empty when no route has that path. A path parameter that is
 * not valid percent-encoding still matches (the route's own answer would be 400).
 */
export function allowedMethods(aliases: readonly RoutedAlias[], url: string): string[] {
	const methods = new Set<string>();
	for (const a of aliases) if (a.method !== "*" && a.re.test(url)) methods.add(a.method);
	return [...methods].sort();
}
