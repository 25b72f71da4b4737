/**
 * The shop's OpenAPI 3.1 document, generated from what the gateway actually serves: its routes'
 * aliases (services/api/api.service.ts: `API_ALIASES` under `/api`, `/health` and `/ready`, and any
 * other alias of its routes) and the parameter schemas (fastest-validator) of the actions behind
 * them, as the service registry knows them, so that in a cluster the actions of the other nodes
 * are documented too (their schemas travel in Moleculer's INFO packets). Response bodies come
 * from `RESPONSES` below: the error body every route may answer and the main success shapes.
 *
 * Parameters: `:name` in an alias path is a path parameter; for GET and DELETE the action's
 * other parameters are query parameters; for POST, PUT and PATCH a JSON request body.
 */
import fs from "node:fs";
import path from "node:path";

/** A JSON Schema (2020-12, as OpenAPI 3.1 uses it). */
export type JsonSchema = Record<string, unknown>;

/** A fastest-validator rule: shorthand string, rule object, or several (any of them). */
type FvRule = string | Record<string, unknown> | FvRule[];

const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });

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

const str = { type: "string" };
const uuid = { type: "string", format: "uuid" };
const int = { type: "integer" };
const time = { type: "string", format: "date-time" };
const obj = (properties: Record<string, unknown>, required = Object.keys(properties)) => ({
	type: "object",
	properties,
	required
});
const page = (item: string): JsonSchema =>
	obj({
		rows: { type: "array", items: ref(item) },
		total: int,
		page: int,
		pageSize: int,
		totalPages: int
	});

/** components.schemas: the error body and the main success shapes. */
export const SCHEMAS: Record<string, JsonSchema> = {
	Error: {
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
	},
	User: obj({
		id: uuid,
		email: { ...str, format: "email" },
		name: str,
		role: { enum: ["customer", "admin"] }
	}),
	AuthResult: obj({
		user: ref("User"),
		token: { ...str, description: "A JWT: `Authorization: Bearer <token>`" }
	}),
	Product: obj({
		id: uuid,
		sku: str,
		name: str,
		description: str,
		price: { ...int, description: "Integer cents" },
		currency: { ...str, description: "ISO 4217" },
		active: { type: "boolean" },
		createdAt: time,
		updatedAt: time
	}),
	ProductPage: page("Product"),
	Stock: obj({ productId: uuid, onHand: int, reserved: int, available: int }),
	OrderItem: obj({
		productId: uuid,
		sku: str,
		name: str,
		quantity: int,
		unitPrice: { ...int, description: "Integer cents" },
		lineTotal: { ...int, description: "Integer cents" }
	}),
	Order: obj({
		id: uuid,
		userId: uuid,
		status: {
			enum: [
				"PENDING",
				"STOCK_RESERVED",
				"PAID",
				"CONFIRMING",
				"CONFIRMED",
				"CANCELLED",
				"REFUNDING",
				"REFUNDED"
			]
		},
		items: { type: "array", items: ref("OrderItem") },
		total: { ...int, description: "Integer cents" },
		currency: str,
		paymentMethod: str,
		cancellationReason: {
			type: ["string", "null"],
			description:
				"`OUT_OF_STOCK`, `PAYMENT_DECLINED`, `PAYMENT_METHOD_INVALID`, `TIMEOUT`, `CANCELLED_BY_CUSTOMER` or `PROCESSING_FAILED`; null unless cancelled"
		},
		cancelRequested: { type: "boolean" },
		createdAt: time,
		updatedAt: time
	}),
	OrderPage: page("Order"),
	OrderRefund: obj({
		sagaId: uuid,
		sagaStatus: { type: ["string", "null"] },
		restock: { type: "boolean" },
		amount: { ...int, description: "Integer cents (the order's total: a full refund)" },
		currency: str,
		actorId: { type: ["string", "null"] },
		actor: str,
		note: { type: ["string", "null"] },
		at: time
	}),
	OrderWithRefund: { allOf: [ref("Order"), obj({ refund: ref("OrderRefund") })] },
	LedgerEntry: obj({
		id: int,
		paymentId: uuid,
		kind: { enum: ["CAPTURE", "REFUND"] },
		amount: { ...int, description: "Integer cents" },
		currency: str,
		createdAt: time
	}),
	AdminOrder: {
		allOf: [
			ref("Order"),
			obj({
				customerEmail: str,
				payments: { type: "array", items: {} },
				ledger: { type: "array", items: ref("LedgerEntry") },
				captured: { ...int, description: "Ledger captures of the order, integer cents" },
				refunded: { ...int, description: "Ledger refunds of the order, integer cents" },
				reservation: {},
				sagas: { type: "array", items: ref("Saga") },
				interventions: { type: "array", items: {} },
				refund: { anyOf: [ref("OrderRefund"), { type: "null" }] }
			})
		]
	},
	StuckOrders: obj({
		thresholdMs: int,
		counts: { type: "object", additionalProperties: int },
		total: int,
		rows: { type: "array", items: ref("Order") }
	}),
	Notification: obj({
		id: uuid,
		orderId: uuid,
		kind: { enum: ["ORDER_CONFIRMED", "ORDER_CANCELLED", "ORDER_REFUNDED"] },
		recipient: str,
		subject: str,
		body: str,
		createdAt: time
	}),
	NotificationPage: page("Notification"),
	SagaError: obj({
		step: str,
		phase: { enum: ["forward", "compensate"] },
		type: str,
		code: { type: ["integer", "null"] },
		message: str,
		at: time
	}),
	Saga: obj({
		id: uuid,
		name: str,
		version: int,
		status: { enum: ["RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED"] },
		currentStep: int,
		currentStepName: { type: ["string", "null"] },
		orderId: { type: ["string", "null"] },
		failureReason: { type: ["string", "null"] },
		attempts: int,
		errors: { type: "array", items: ref("SagaError") },
		deadlineAt: time,
		createdAt: time,
		updatedAt: time
	}),
	SagaPage: page("Saga"),
	SagaDetail: {
		allOf: [
			ref("Saga"),
			obj({
				steps: {
					type: "array",
					items: obj(
						{
							stepIndex: int,
							stepName: str,
							phase: { enum: ["forward", "compensate"] },
							status: { enum: ["STARTED", "SUCCEEDED", "FAILED"] },
							attempt: int,
							result: {},
							error: {},
							startedAt: time,
							finishedAt: { type: ["string", "null"], format: "date-time" }
						},
						["stepIndex", "stepName", "phase", "status", "attempt"]
					)
				}
			})
		]
	},
	DeadLetter: obj({
		id: uuid,
		consumer: str,
		eventId: str,
		eventName: str,
		event: {},
		error: str,
		deliveries: int,
		createdAt: time,
		replayedAt: { type: ["string", "null"], format: "date-time" }
	}),
	DeadLetterPage: page("DeadLetter"),
	OutboxStatus: {
		type: "object",
		description: "By emitting service: its outbox lag, or `{ error }` when it did not answer",
		additionalProperties: {
			anyOf: [
				obj(
					{
						pending: int,
						oldestPendingAgeMs: int,
						published: int,
						serverDuplicates: int,
						mode: { enum: ["jetstream", "local"] }
					},
					["pending", "oldestPendingAgeMs"]
				),
				obj({ error: str })
			]
		}
	},
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

interface ResponseSpec {
	status: number;
	description: string;
	/** A components schema name, or a content map for non-JSON answers. */
	schema?: string;
	content?: Record<string, { schema: JsonSchema }>;
}

const json = (status: number, schema: string, description: string): ResponseSpec => ({
	status,
	schema,
	description
});

/** The success answer of each routed action. */
export const RESPONSES: Record<string, ResponseSpec> = {
	"users.register": json(201, "AuthResult", "Registered; signed in"),
	"users.login": json(200, "AuthResult", "Signed in"),
	"users.me": json(200, "User", "The caller"),
	"products.list": json(200, "ProductPage", "Active products, by name"),
	"products.get": json(200, "Product", "The product"),
	"products.create": json(201, "Product", "Created (with `stock` when given)"),
	"products.update": json(200, "Product", "Updated"),
	"inventory.get": json(200, "Stock", "The product's stock"),
	"inventory.setStock": json(200, "Stock", "The new stock"),
	"orders.create": json(202, "Order", "Accepted: PENDING while its saga runs"),
	"orders.list": json(200, "OrderPage", "The caller's orders, newest first"),
	"orders.get": json(200, "Order", "The order"),
	"orders.cancel": json(202, "Order", "Cancel requested (or already cancelled)"),
	"notifications.list": json(200, "NotificationPage", "The caller's notifications"),
	"orders.listSagas": json(200, "SagaPage", "Sagas, newest first"),
	"orders.getSaga": json(200, "SagaDetail", "The saga and its step log"),
	"orders.redriveSaga": json(202, "Saga", "Resumed"),
	"orders.refundAndCancelSaga": json(
		202,
		"Saga",
		"Compensating past its pivot: refund, release, order CANCELLED / OPERATOR_REFUNDED"
	),
	"orders.refund": json(
		202,
		"OrderWithRefund",
		"Refund started (REFUNDING) or already done (REFUNDED): a repeat answers the first"
	),
	"orders.adminGet": json(
		200,
		"AdminOrder",
		"The order with its payments, ledger entries, reservation, sagas and operators' actions"
	),
	"orders.stuck": json(
		200,
		"StuckOrders",
		"Orders in a non-terminal status past ORDERS_STUCK_AFTER_MS, oldest first"
	),
	"notifications.listDeadLetters": json(200, "DeadLetterPage", "Dead letters, newest first"),
	"notifications.replayDeadLetter": json(200, "DeadLetter", "Replayed"),
	"api.outbox": json(200, "OutboxStatus", "Outbox lag of every emitting service"),
	"api.openapi": {
		status: 200,
		description: "This document",
		content: { "application/json": { schema: { type: "object" } } }
	},
	"api.docs": {
		status: 200,
		description: "The API documentation page (Swagger UI)",
		content: { "text/html": { schema: { type: "string" } } }
	},
	"api.docsAsset": {
		status: 200,
		description: "A file of the documentation page",
		content: {
			"text/css": { schema: { type: "string" } },
			"application/javascript": { schema: { type: "string" } },
			"image/png": { schema: { type: "string", contentMediaType: "image/png" } }
		}
	}
};

/** Header parameters some actions read. */
const EXTRA_HEADERS: Record<string, JsonSchema[]> = {
	"orders.create": [{ $ref: "#/components/parameters/IdempotencyKey" }]
};

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

const errorResponse = (description: string): JsonSchema => ({
	description,
	content: { "application/json": { schema: ref("Error") } }
});

function operation(alias: GatewayAlias, actions: ReadonlyMap<string, ActionInfo>): JsonSchema {
	const { params: pathParams } = openApiPath(alias.path);
	const action = alias.action ? actions.get(alias.action) : undefined;
	const params = (action?.params ?? {}) as Record<string, FvRule>;
	const parameters: JsonSchema[] = [{ $ref: "#/components/parameters/RequestId" }];
	for (const name of pathParams)
		parameters.push({
			name,
			in: "path",
			required: true,
			schema: params[name] !== undefined ? ruleToSchema(params[name]!) : { type: "string" }
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
	for (const h of EXTRA_HEADERS[alias.action ?? ""] ?? []) parameters.push(h);

	const spec = alias.action ? RESPONSES[alias.action] : undefined;
	const responses: Record<string, JsonSchema> = {};
	if (spec)
		responses[String(spec.status)] = {
			description: spec.description,
			content: spec.content ?? { "application/json": { schema: ref(spec.schema!) } }
		};
	else responses["200"] = { description: "Success", content: { "*/*": { schema: {} } } };
	if (alias.action && Object.keys(params).some(k => !k.startsWith("$$")))
		responses["422"] = errorResponse("VALIDATION_ERROR: `data` lists the rejected fields");
	if (alias.auth) responses["401"] = errorResponse("No valid bearer token");
	if (alias.auth === "admin") responses["403"] = errorResponse("Not an administrator");
	if (alias.path.startsWith("/api/"))
		responses["429"] = errorResponse("Rate limited: see `Retry-After`");
	responses.default = errorResponse("Any other error");

	const op: JsonSchema = {
		operationId: alias.action
			? `${alias.action}${alias.method === "GET" ? "" : `.${alias.method.toLowerCase()}`}`
			: `${alias.method.toLowerCase()}${alias.path.replace(/[^A-Za-z0-9]+/g, "_")}`,
		summary: alias.action ? `\`${alias.action}\`` : "Served by the gateway",
		tags: [alias.action ? alias.action.split(".")[0]! : "gateway"],
		parameters,
		responses
	};
	if (alias.action && !action)
		op.description = `\`${alias.action}\` has no live node now: its parameters are not known.`;
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

/** Builds the OpenAPI 3.1 document of `aliases`, with the parameters of `actions`. */
export function buildOpenApi(
	aliases: readonly GatewayAlias[],
	actions: ReadonlyMap<string, ActionInfo>
): JsonSchema {
	const paths: Record<string, Record<string, JsonSchema>> = {};
	for (const alias of aliases) {
		const { path: p } = openApiPath(alias.path);
		const op = probeOperations(alias) ?? operation(alias, actions);
		(paths[p] ??= {})[alias.method.toLowerCase()] = op;
	}
	return {
		openapi: "3.1.0",
		info: {
			title: "moleculer-shop API",
			version: shopVersion(),
			description:
				"The shop's REST API (docs/CONTRACT.md), generated by the gateway from its routes and the parameter schemas of the actions behind them. Every answer carries `X-Request-ID`; errors are `{ name, message, code, type, data }`."
		},
		servers: [{ url: "/" }],
		tags: [
			{ name: "users" },
			{ name: "products" },
			{ name: "inventory" },
			{ name: "orders" },
			{ name: "notifications" },
			{ name: "api", description: "The gateway's own actions" },
			{ name: "probes" }
		],
		paths,
		components: {
			schemas: SCHEMAS,
			securitySchemes: {
				bearerAuth: { type: "http", scheme: "bearer", bearerFormat: "JWT" }
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
				IdempotencyKey: {
					name: "Idempotency-Key",
					in: "header",
					required: false,
					description: "A repeat with the same key answers the same order",
					schema: { type: "string", pattern: "^[A-Za-z0-9._:-]{1,255}$" }
				}
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
