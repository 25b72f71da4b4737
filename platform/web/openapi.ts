/**
 * A generic OpenAPI 3.1 generator for a moleculer-web gateway: the document of what the gateway
 * actually serves, from its routes' aliases (`gatewayAliases`) and the parameter schemas
 * (fastest-validator) of the actions behind them, as the service registry knows them, so that in
 * a cluster the actions of the other nodes are documented too (their schemas travel in
 * Moleculer's INFO packets). It knows no service (issue 17): the application gives its response
 * shapes, success answers, extra headers and tags (`OpenApiSpec`; the shop's are in
 * services/api/openapi-schemas.ts). What every gateway answers is here: the error body
 * (`Error`), and `/health` and `/ready` (`Health`, `Ready`).
 *
 * Parameters: `:name` in an alias path is a path parameter; for GET and DELETE the action's
 * other parameters are query parameters; for POST, PUT and PATCH a JSON request body.
 *
 * Answers: every status an operation can answer is declared, none left to `default`: its
 * success, the errors the gateway itself answers (`gatewayErrors`: 400, 401, 403, 413, 415, 422,
 * 429, 500, 503, 504 as they apply) and the ones its action throws (`OpenApiSpec.errors`), each
 * error status with the `type`s it carries (an `enum`, from platform/errors.ts), and the headers
 * every answer carries (`X-Request-ID`; `Retry-After` on 429 and 503; `traceparent`; the rate
 * limit's).
 */
import fs from "node:fs";
import path from "node:path";
import { ERRORS, FRAMEWORK_ERROR_TYPES } from "../errors";

/** A JSON Schema (2020-12, as OpenAPI 3.1 uses it). */
export type JsonSchema = Record<string, unknown>;

/** A fastest-validator rule: shorthand string, rule object, or several (any of them). */
type FvRule = string | Record<string, unknown> | FvRule[];

/** A reference to `components.schemas[name]`. */
export const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
/** A rule's shorthand `"number|optional|min:1"` as a rule object. */
function expandShorthand(rule: string): Record<string, unknown> {
	const [type, ...opts] = rule.split("|");
	const out: Record<string, unknown> = { type: type!.trim() };
	for (const o of opts) {
		const [k, v] = o.split(":");
		if (v === undefined) out[k!.trim()] = true;
		else out[k!.trim()] = /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : v === "true" ? true : v;
	}
	return out;
}

/** Whether a value may appear in a JSON document (defaults, enum values). */
const jsonSafe = (v: unknown): boolean =>
	v === null || ["string", "number", "boolean"].includes(typeof v) || Array.isArray(v);

/** A RegExp pattern's source; a string pattern as is; anything else (lost in transit) nothing. */
function patternOf(p: unknown): string | undefined {
	if (p instanceof RegExp) return p.source;
	if (typeof p === "string" && p.length > 0) return p;
	return undefined;
}

/** Whether a fastest-validator rule lets the field be absent. */
export function isOptional(rule: FvRule): boolean {
	if (Array.isArray(rule)) return rule.some(isOptional);
	const r = typeof rule === "string" ? expandShorthand(rule) : rule;
	return r.optional === true || r.default !== undefined;
}

/** A fastest-validator rule as JSON Schema (the types the shop uses, and the common others). */
export function ruleToSchema(rule: FvRule): JsonSchema {
	if (Array.isArray(rule)) return { anyOf: rule.map(ruleToSchema) };
	const r = typeof rule === "string" ? expandShorthand(rule) : rule;
	const s: JsonSchema = {};
	switch (r.type) {
		case "string": {
			s.type = "string";
			if (typeof r.min === "number") s.minLength = r.min;
			if (typeof r.max === "number") s.maxLength = r.max;
			if (typeof r.length === "number") s.minLength = s.maxLength = r.length;
			const pattern = patternOf(r.pattern);
			if (pattern) s.pattern = pattern;
			if (Array.isArray(r.enum)) s.enum = r.enum;
			break;
		}
		case "uuid":
			Object.assign(s, { type: "string", format: "uuid" });
			break;
		case "email":
			Object.assign(s, { type: "string", format: "email" });
			if (typeof r.max === "number") s.maxLength = r.max;
			break;
		case "url":
			Object.assign(s, { type: "string", format: "uri" });
			break;
		case "date":
			Object.assign(s, { type: "string", format: "date-time" });
			break;
		case "number": {
			s.type = r.integer ? "integer" : "number";
			if (typeof r.min === "number") s.minimum = r.min;
			if (typeof r.max === "number") s.maximum = r.max;
			if (r.positive) s.exclusiveMinimum = 0;
			if (r.negative) s.exclusiveMaximum = 0;
			break;
		}
		case "boolean":
			s.type = "boolean";
			break;
		case "enum":
			if (Array.isArray(r.values)) s.enum = r.values;
			break;
		case "equal":
			if (jsonSafe(r.value)) s.const = r.value;
			break;
		case "array": {
			s.type = "array";
			if (r.items !== undefined) s.items = ruleToSchema(r.items as FvRule);
			if (typeof r.min === "number") s.minItems = r.min;
			if (typeof r.max === "number") s.maxItems = r.max;
			if (typeof r.length === "number") s.minItems = s.maxItems = r.length;
			if (r.unique === true) s.uniqueItems = true;
			break;
		}
		case "object":
			Object.assign(
				s,
				paramsToSchema((r.props ?? r.properties ?? {}) as Record<string, FvRule>, {
					strict: r.strict === true || r.strict === "remove"
				})
			);
			break;
		case "multi":
			if (Array.isArray(r.rules)) s.anyOf = (r.rules as FvRule[]).map(ruleToSchema);
			break;
		default:
			// "any", "custom", "forbidden" and unknown types: anything.
			break;
	}
	if (r.default !== undefined && jsonSafe(r.default)) s.default = r.default;
	if (typeof r.description === "string") s.description = r.description;
	if (r.nullable === true && typeof s.type === "string") s.type = [s.type, "null"];
	return s;
}

/** An action's `params` as an object schema (`$$strict` forbids unknown properties). */
export function paramsToSchema(
	params: Record<string, FvRule>,
	opts: { strict?: boolean; omit?: readonly string[] } = {}
): JsonSchema {
	const properties: Record<string, JsonSchema> = {};
	const required: string[] = [];
	for (const [name, rule] of Object.entries(params)) {
		if (name.startsWith("$$") || opts.omit?.includes(name)) continue;
		if (rule === undefined || rule === null) continue;
		properties[name] = ruleToSchema(rule);
		if (!isOptional(rule)) required.push(name);
	}
	const $$strict = (params as Record<string, unknown>).$$strict;
	const strict = opts.strict ?? ($$strict === true || $$strict === "remove");
	return {
		type: "object",
		properties,
		...(required.length > 0 ? { required } : {}),
		...(strict ? { additionalProperties: false } : {})
	};
}

// ---------------------------------------------------------------------------------------------
// Response shapes

/** An object schema; every property required unless `required` says otherwise. */
export const obj = (
	properties: Record<string, unknown>,
	required = Object.keys(properties)
): JsonSchema => ({
	type: "object",
	properties,
	required
});

const str = { type: "string" };
const int = { type: "integer" };

/** The schemas every gateway answers with: its error body and its probes. */
const ERROR_SCHEMA: JsonSchema = {
	...obj(
		{
			name: { ...str, description: "Error class, e.g. `ShopClientError`" },
			message: str,
			code: { ...int, description: "The HTTP status" },
			type: { ...str, description: "Stable error type, e.g. `ORDERS_NOT_FOUND`" },
			data: { description: "Details (validation errors list the fields)" }
		},
		["name", "message", "code", "type"]
	),
	description: "Every error answer: `code` is the HTTP status, `type` is stable."
};

const PROBE_SCHEMAS: Record<string, JsonSchema> = {
	Health: obj({ status: { const: "ok" }, nodeID: str, uptime: int }, ["status"]),
	Ready: obj(
		{
			status: { enum: ["ready", "unavailable"] },
			checks: {
				type: "object",
				additionalProperties: { type: "string" },
				description: "`ok`, or why a check failed"
			}
		},
		["status", "checks"]
	)
};

/** The success answer of a routed action: a components schema, or a content map. */
export interface ResponseSpec {
	status: number;
	description: string;
	/** A components schema name, or a content map for non-JSON answers. */
	schema?: string;
	content?: Record<string, { schema: JsonSchema }>;
}

/** A JSON success answer with a components schema. */
export const json = (status: number, schema: string, description: string): ResponseSpec => ({
	status,
	schema,
	description
});

/**
 * A route served by a handler of the gateway rather than an action (an event stream), keyed
 * `"<METHOD> <full path>"` (`"GET /api/orders/:id/events"`).
 */
export interface HandlerSpec {
	operationId: string;
	summary: string;
	tag: string;
	/** Schemas of its path parameters (otherwise plain strings). */
	pathParams?: Readonly<Record<string, JsonSchema>>;
	/** Its success answer. */
	response: ResponseSpec;
}

/** What the application adds to the generic document. */
export interface OpenApiSpec {
	/** `info.title` and `info.description`. */
	title: string;
	description: string;
	/** The operations' tags, in order (`probes` is added last). */
	tags: readonly { name: string; description?: string }[];
	/** components.schemas besides `Error`, `Health` and `Ready`. */
	schemas: Readonly<Record<string, JsonSchema>>;
	/** The success answer of each routed action, by its full name. */
	responses: Readonly<Record<string, ResponseSpec>>;
	/** Header parameters (`$ref`s to `parameters`) some actions read, by action. */
	headers: Readonly<Record<string, readonly JsonSchema[]>>;
	/** components.parameters besides `RequestId`. */
	parameters: Readonly<Record<string, JsonSchema>>;
	/**
	 * The error types each operation answers besides the gateway's own (`gatewayErrors`), by
	 * action or handler route key: their status comes from platform/errors.ts.
	 */
	errors: Readonly<Record<string, readonly string[]>>;
	/** The rules an operation enforces that its schemas cannot say, by action or route key. */
	notes: Readonly<Record<string, string>>;
	/** The routes served by a handler, by `"<METHOD> <full path>"`. */
	handlers: Readonly<Record<string, HandlerSpec>>;
}

/** An error type's spec: the shop's table or Moleculer's kept types. */
function errorSpec(type: string): { code: number; description: string } {
	const spec = Object.prototype.hasOwnProperty.call(ERRORS, type)
		? ERRORS[type as keyof typeof ERRORS]
		: FRAMEWORK_ERROR_TYPES[type];
	if (!spec) throw new Error(`OpenAPI: unknown error type ${type}`);
	return spec;
}

// ---------------------------------------------------------------------------------------------
// The document

/** One alias of a gateway route. */
export interface GatewayAlias {
	method: string;
	/** Full path, moleculer-web style (`/api/orders/:id`). */
	path: string;
	/** The action it calls; absent for a handler of the gateway itself. */
	action?: string;
	/** Who may call it (`customer`: any signed-in user; `admin`). */
	auth?: string;
}

/** An action as the registry describes it. */
export interface ActionInfo {
	params?: Record<string, FvRule>;
}

/** The aliases of moleculer-web routes (`settings.routes`), with full paths. */
export function gatewayAliases(
	routes: readonly { path?: string; aliases?: Record<string, unknown> }[]
): GatewayAlias[] {
	const out: GatewayAlias[] = [];
	for (const route of routes) {
		const base = (route.path ?? "").replace(/\/+$/, "");
		for (const [key, value] of Object.entries(route.aliases ?? {})) {
			const m = /^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\s+(.*)$/i.exec(key.trim());
			if (!m) continue;
			const rel = m[2]!.replace(/^\/+/, "");
			const alias: GatewayAlias = {
				method: m[1]!.toUpperCase(),
				path: `${base}/${rel}`.replace(/\/+$/, "") || "/"
			};
			if (typeof value === "string") alias.action = value;
			else if (value && typeof value === "object") {
				const v = value as { action?: unknown; auth?: unknown };
				if (typeof v.action === "string") alias.action = v.action;
				if (typeof v.auth === "string") alias.auth = v.auth;
			}
			out.push(alias);
		}
	}
	return out;
}

/** `/api/orders/:id` as OpenAPI's `/api/orders/{id}`, and its parameter names. */
function openApiPath(p: string): { path: string; params: string[] } {
	const params: string[] = [];
	const path = p.replace(/:([A-Za-z0-9_]+)\??/g, (_m, name: string) => {
		params.push(name);
		return `{${name}}`;
	});
	return { path, params };
}

/** The headers of an answer under `/api` (`components.headers`). */
function answerHeaders(status: number): Record<string, JsonSchema> {
	const h: Record<string, JsonSchema> = {
		"X-Request-ID": { $ref: "#/components/headers/RequestId" },
		traceparent: { $ref: "#/components/headers/TraceParent" },
		"X-Rate-Limit-Limit": { $ref: "#/components/headers/RateLimitLimit" },
		"X-Rate-Limit-Remaining": { $ref: "#/components/headers/RateLimitRemaining" },
		"X-Rate-Limit-Reset": { $ref: "#/components/headers/RateLimitReset" }
	};
	if (status === 429 || status === 503)
		h["Retry-After"] = { $ref: "#/components/headers/RetryAfter" };
	return h;
}

/**
 * The errors the gateway itself answers on an operation, by type: the request's shape (400,
 * 413, 415), its values (422: control characters, depth, a field given twice, and the action's
 * schema), its token (401, 403), the rate limit (429), a service not there (503), a call timing
 * out (504) and a bug (500).
 */
export function gatewayErrors(op: {
	hasBody: boolean;
	hasParams: boolean;
	auth?: string;
	action: boolean;
	idempotencyKey: boolean;
}): string[] {
	const types = ["REQUEST_MALFORMED"];
	if (op.hasBody)
		types.push(
			"REQUEST_INVALID_JSON",
			"REQUEST_BODY_NOT_OBJECT",
			"REQUEST_BODY_TOO_LARGE",
			"REQUEST_UNSUPPORTED_MEDIA_TYPE"
		);
	if (op.idempotencyKey) types.push("REQUEST_INVALID_ID");
	if (op.hasParams) types.push("VALIDATION_ERROR");
	if (op.auth) types.push("AUTH_TOKEN_MISSING", "AUTH_TOKEN_INVALID");
	if (op.auth === "admin") types.push("AUTH_FORBIDDEN");
	types.push(
		"REQUEST_RATE_LIMITED",
		"QUEUE_FULL",
		"SERVICE_NOT_AVAILABLE",
		"SERVICE_UNAVAILABLE",
		"CIRCUIT_BREAKER_OPEN",
		"INTERNAL_ERROR"
	);
	if (op.action) types.push("REQUEST_TIMEOUT");
	return types;
}

/** One response per error status, its `type`s an enum (in the order given, without repeats). */
function errorResponses(types: readonly string[]): Record<string, JsonSchema> {
	const byStatus = new Map<number, string[]>();
	for (const t of types) {
		const { code } = errorSpec(t);
		const list = byStatus.get(code) ?? [];
		if (!list.includes(t)) list.push(t);
		byStatus.set(code, list);
	}
	const out: Record<string, JsonSchema> = {};
	for (const [code, list] of [...byStatus].sort((a, b) => a[0] - b[0]))
		out[String(code)] = {
			description: list.map(t => `\`${t}\`: ${errorSpec(t).description}`).join(" "),
			headers: answerHeaders(code),
			content: {
				"application/json": {
					schema: {
						allOf: [ref("Error")],
						properties: { code: { const: code }, type: { enum: list } }
					}
				}
			}
		};
	return out;
}

function operation(
	alias: GatewayAlias,
	actions: ReadonlyMap<string, ActionInfo>,
	spec: OpenApiSpec
): JsonSchema {
	const { params: pathParams } = openApiPath(alias.path);
	const routeKey = `${alias.method} ${alias.path}`;
	const handler = alias.action ? undefined : spec.handlers[routeKey];
	const key = alias.action ?? routeKey;
	const action = alias.action ? actions.get(alias.action) : undefined;
	const params = (action?.params ?? {}) as Record<string, FvRule>;
	const parameters: JsonSchema[] = [{ $ref: "#/components/parameters/RequestId" }];
	for (const name of pathParams)
		parameters.push({
			name,
			in: "path",
			required: true,
			schema:
				handler?.pathParams?.[name] ??
				(params[name] !== undefined ? ruleToSchema(params[name]!) : { type: "string" })
		});
	let requestBody: JsonSchema | undefined;
	const bodyMethod = ["POST", "PUT", "PATCH"].includes(alias.method);
	if (alias.action && action) {
		if (bodyMethod) {
			const schema = paramsToSchema(params, { omit: pathParams });
			const required = Array.isArray(schema.required) && schema.required.length > 0;
			if (Object.keys(schema.properties as object).length > 0 || required)
				requestBody = {
					required,
					content: { "application/json": { schema } }
				};
		} else
			for (const [name, rule] of Object.entries(params)) {
				if (name.startsWith("$$") || pathParams.includes(name) || rule == null) continue;
				parameters.push({
					name,
					in: "query",
					required: !isOptional(rule),
					schema: ruleToSchema(rule)
				});
			}
	}
	const headers = spec.headers[key] ?? [];
	for (const h of headers) parameters.push(h);

	const answer = alias.action ? spec.responses[alias.action] : handler?.response;
	const responses: Record<string, JsonSchema> = {};
	if (answer)
		responses[String(answer.status)] = {
			description: answer.description,
			headers: answerHeaders(answer.status),
			content: answer.content ?? { "application/json": { schema: ref(answer.schema!) } }
		};
	else responses["200"] = { description: "Success", content: { "*/*": { schema: {} } } };
	const errorTypes = gatewayErrors({
		// Every write may carry a JSON body (an action without parameters takes `{}`).
		hasBody: bodyMethod,
		hasParams: pathParams.length > 0 || Object.keys(params).some(k => !k.startsWith("$$")),
		auth: alias.auth,
		action: alias.action !== undefined,
		idempotencyKey: headers.some(h => h.$ref === "#/components/parameters/IdempotencyKey")
	});
	Object.assign(responses, errorResponses([...errorTypes, ...(spec.errors[key] ?? [])]));

	const op: JsonSchema = {
		operationId:
			handler?.operationId ??
			(alias.action
				? `${alias.action}${alias.method === "GET" ? "" : `.${alias.method.toLowerCase()}`}`
				: `${alias.method.toLowerCase()}${alias.path.replace(/[^A-Za-z0-9]+/g, "_")}`),
		summary:
			handler?.summary ?? (alias.action ? `\`${alias.action}\`` : "Served by the gateway"),
		tags: [handler?.tag ?? (alias.action ? alias.action.split(".")[0]! : "gateway")],
		parameters,
		responses
	};
	const notes = spec.notes[key];
	if (alias.action && !action)
		op.description = `\`${alias.action}\` has no live node now: its parameters are not known.`;
	else if (notes) op.description = notes;
	if (requestBody) op.requestBody = requestBody;
	if (alias.auth) op.security = [{ bearerAuth: [] }];
	return op;
}

/** The gateway's own `/health` and `/ready` answers. */
function probeOperations(alias: GatewayAlias): JsonSchema | null {
	if (alias.path === "/health")
		return {
			operationId: "health",
			summary: "Liveness: the gateway's process answers",
			tags: ["probes"],
			responses: {
				"200": {
					description: "Alive",
					content: { "application/json": { schema: ref("Health") } }
				}
			}
		};
	if (alias.path === "/ready")
		return {
			operationId: "ready",
			summary: "Readiness: the transporter and every service's database (migrations applied)",
			tags: ["probes"],
			responses: {
				"200": {
					description: "Ready",
					content: { "application/json": { schema: ref("Ready") } }
				},
				"503": {
					description: "Not ready: `checks` says which failed",
					content: { "application/json": { schema: ref("Ready") } }
				}
			}
		};
	return null;
}

/** The shop's version, from the nearest package.json above this file. */
function shopVersion(): string {
	let dir = __dirname;
	for (let i = 0; i < 5; i++) {
		const file = path.join(dir, "package.json");
		if (fs.existsSync(file))
			return String(
				(JSON.parse(fs.readFileSync(file, "utf8")) as { version?: string }).version ??
					"0.0.0"
			);
		dir = path.dirname(dir);
	}
	return "0.0.0";
}

/**
 * Builds the OpenAPI 3.1 document of `aliases`, with the parameters of `actions` and the
 * application's shapes and answers (`spec`).
 */
export function buildOpenApi(
	aliases: readonly GatewayAlias[],
	actions: ReadonlyMap<string, ActionInfo>,
	spec: OpenApiSpec
): JsonSchema {
	const paths: Record<string, Record<string, JsonSchema>> = {};
	for (const alias of aliases) {
		const { path: p } = openApiPath(alias.path);
		const op = probeOperations(alias) ?? operation(alias, actions, spec);
		(paths[p] ??= {})[alias.method.toLowerCase()] = op;
	}
	return {
		openapi: "3.1.0",
		info: { title: spec.title, version: shopVersion(), description: spec.description },
		servers: [{ url: "/" }],
		tags: [...spec.tags, { name: "probes" }],
		paths,
		components: {
			schemas: { Error: ERROR_SCHEMA, ...spec.schemas, ...PROBE_SCHEMAS },
			securitySchemes: {
				bearerAuth: { type: "http", scheme: "bearer", bearerFormat: "JWT" }
			},
			headers: {
				RequestId: {
					description:
						"The request's id: the client's `X-Request-ID` (or `X-Correlation-ID`) when well-formed, else generated; in every log line of the request",
					required: true,
					schema: { type: "string" }
				},
				TraceParent: {
					description:
						"W3C trace context of the request's trace (docs/tracing.md), when tracing is on",
					schema: {
						type: "string",
						pattern: "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
					}
				},
				RetryAfter: {
					description: "Seconds to wait before trying again",
					required: true,
					schema: { type: "string", pattern: "^[0-9]+$" }
				},
				RateLimitLimit: {
					description: "Requests allowed per window (when the rate limit is on)",
					schema: { type: "string", pattern: "^[0-9]+$" }
				},
				RateLimitRemaining: {
					description: "Requests left in this window",
					schema: { type: "string", pattern: "^[0-9]+$" }
				},
				RateLimitReset: {
					description: "End of this window, epoch ms",
					schema: { type: "string", pattern: "^[0-9]+$" }
				}
			},
			parameters: {
				RequestId: {
					name: "X-Request-ID",
					in: "header",
					required: false,
					description:
						"Correlates the request across services and logs (1-128 of A-Z a-z 0-9 . _ : -); generated when absent",
					schema: { type: "string", pattern: "^[A-Za-z0-9._:-]{1,128}$" }
				},
				...spec.parameters
			}
		}
	};
}

// ---------------------------------------------------------------------------------------------
// Portable parameter schemas

/** Replaces every RegExp `pattern` of a fastest-validator schema by its source (and flags). */
function portablePatterns(node: unknown, seen = new WeakSet<object>()): void {
	if (node === null || typeof node !== "object" || seen.has(node)) return;
	seen.add(node);
	if (Array.isArray(node)) {
		node.forEach(n => portablePatterns(n, seen));
		return;
	}
	const rule = node as Record<string, unknown>;
	if (rule.pattern instanceof RegExp) {
		const re = rule.pattern;
		rule.pattern = re.source;
		if (re.flags) rule.patternFlags = re.flags;
	}
	for (const v of Object.values(rule)) if (typeof v === "object") portablePatterns(v, seen);
}

/**
 * Moleculer sends each action's `params` to the other nodes in its INFO packets, as JSON: a
 * RegExp `pattern` arrives as `{}`, and the gateway's document (built from the registry) would
 * lose it. Before a service is created, this middleware turns every RegExp `pattern` of its
 * actions' params into the equivalent string (plus `patternFlags`), which fastest-validator
 * compiles to the same RegExp: validation is unchanged, and the pattern survives the wire.
 */
export const PortableParamsMiddleware = {
	name: "PortableParams",
	serviceCreating(_service: unknown, schema: { actions?: Record<string, unknown> }): void {
		for (const action of Object.values(schema.actions ?? {}))
			if (action && typeof action === "object")
				portablePatterns((action as { params?: unknown }).params);
	}
};
