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
