/**
 * The shop's part of its OpenAPI 3.1 document (`GET /api/openapi.json`, mixins/api-docs.mixin.ts):
 * the response shapes of its services (Order, Product, Saga...), each routed action's success
 * answer, the headers some actions read and the operations' tags. The generator
 * (platform/web/openapi.ts) knows no service; this file is what it is given (issue 17).
 *
 * It also says what the schemas cannot: the error types each action answers (`ERRORS_BY_ACTION`;
 * the gateway's own are the generator's), the rules an operation enforces beyond its schema
 * (`NOTES`), which routes honour `Idempotency-Key` (services/api/routes.ts) and the order event
 * stream's answer (`HANDLERS`). test/e2e/openapi-fuzz.e2e.test.ts checks the document against
 * the running shop.
 *
 * The Order shape is also written in services/orders/orders.model.ts (`Order`, `OrderItem`,
 * `OrderStatus`): the schemas here are checked against those types by the compiler (`satisfies
 * Record<keyof Order, ...>`), so a field added to, renamed in or dropped from the model fails
 * `tsc` until the document follows.
 */
import type { SagaStepLogEntry } from "../../platform/saga/types";
import {
	json,
	obj,
	ref,
	type HandlerSpec,
	type JsonSchema,
	type OpenApiSpec,
	type ResponseSpec
} from "../../platform/web/openapi";
import type { Order, OrderItem, OrderStatus, SagaIntervention } from "../orders/orders.model";
import { IDEMPOTENCY_KEY_ACTIONS } from "./routes";

const str = { type: "string" };
const uuid = { type: "string", format: "uuid" };
const int = { type: "integer" };
const time = { type: "string", format: "date-time" };
/** A page of a list action (the services' shared paging answer). */
const page = (item: string): JsonSchema =>
	obj({
		rows: { type: "array", items: ref(item) },
		total: int,
		page: int,
		pageSize: int,
		totalPages: int
	});

/**
 * The order's statuses, checked against `OrderStatus` (services/orders/orders.model.ts) by the
 * compiler: a `Record` over the union needs every status and allows no other.
 */
const ORDER_STATUSES: Record<OrderStatus, true> = {
	PENDING: true,
	STOCK_RESERVED: true,
	PAID: true,
	CONFIRMING: true,
	CONFIRMED: true,
	CANCELLED: true,
	REFUNDING: true,
	REFUNDED: true
};

/** `OrderItem`'s properties: exactly the keys of orders.model.ts's `OrderItem` (`satisfies`). */
const ORDER_ITEM_PROPERTIES = {
	productId: uuid,
	sku: str,
	name: str,
	quantity: int,
	unitPrice: { ...int, description: "Integer cents" },
	lineTotal: { ...int, description: "Integer cents" }
} satisfies Record<keyof OrderItem, JsonSchema>;

/** `Order`'s properties: exactly the keys of orders.model.ts's `Order` (`satisfies`). */
const ORDER_PROPERTIES = {
	id: uuid,
	userId: uuid,
	status: { enum: Object.keys(ORDER_STATUSES) },
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
} satisfies Record<keyof Order, JsonSchema>;

/** A saga step's log entry: exactly the keys of platform/saga/types.ts's `SagaStepLogEntry`. */
const SAGA_STEP_PROPERTIES = {
	id: int,
	sagaId: uuid,
	stepIndex: int,
	stepName: str,
	phase: { enum: ["forward", "compensate"] },
	status: { enum: ["STARTED", "SUCCEEDED", "FAILED"] },
	attempt: int,
	result: {},
	error: { anyOf: [ref("SagaError"), { type: "null" }] },
	startedAt: time,
	finishedAt: { type: ["string", "null"], format: "date-time" }
} satisfies Record<keyof SagaStepLogEntry, JsonSchema>;

/** An operator's action on a saga: exactly the keys of orders.model.ts's `SagaIntervention`. */
const SAGA_INTERVENTION_PROPERTIES = {
	action: { enum: ["REDRIVE", "REFUND_AND_CANCEL", "REFUND"] },
	actorId: { type: ["string", "null"] },
	actor: str,
	note: { type: ["string", "null"] },
	at: time
} satisfies Record<keyof SagaIntervention, JsonSchema>;
const SAGA_INTERVENTION = obj(SAGA_INTERVENTION_PROPERTIES);

/** components.schemas: the shop's success shapes (`Error`, `Health`, `Ready` are the generator's). */
export const SCHEMAS: Record<string, JsonSchema> = {
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
	ProductCreated: {
		allOf: [
			ref("Product"),
			obj({ stock: { ...int, description: "Units on hand, when `stock` was given" } }, [])
		]
	},
	ProductPage: page("Product"),
	Stock: obj({ productId: uuid, onHand: int, reserved: int, available: int }),
	OrderItem: obj(ORDER_ITEM_PROPERTIES),
	Order: obj(ORDER_PROPERTIES),
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
				steps: { type: "array", items: obj(SAGA_STEP_PROPERTIES) },
				interventions: { type: "array", items: SAGA_INTERVENTION }
			})
		]
	},
	Nodes: obj({
		nodes: {
			type: "array",
			items: obj(
				{
					id: str,
					available: { type: "boolean" },
					local: { type: "boolean" },
					hostname: { type: ["string", "null"] },
					client: obj({ type: str, version: str, langVersion: str }, []),
					cpu: { type: ["number", "null"], description: "CPU use, percent" },
					lastHeartbeatTime: { ...int, description: "Epoch ms" },
					services: { type: "array", items: str },
					health: {
						anyOf: [
							obj({
								cpuLoad1: { type: "number" },
								cpuUtilization: { type: ["number", "null"] },
								memFree: { ...int, description: "Bytes" },
								memTotal: { ...int, description: "Bytes" },
								processUptime: { ...int, description: "Seconds" },
								processRss: { ...int, description: "Bytes" },
								heapUsed: { ...int, description: "Bytes" }
							}),
							obj({ error: str }),
							{ type: "null" }
						],
						description: "null when the node is not available"
					}
				},
				["id", "available", "local", "services", "health"]
			)
		}
	}),
	OrderRate: obj({
		nodeID: { ...str, description: "The gateway node that counted" },
		intervalMs: { ...int, description: "Width of a point, ms (1000)" },
		points: {
			type: "array",
			description: "Oldest first; the current (partial) second last",
			items: obj({
				at: { ...int, description: "Start of the second, epoch ms" },
				created: int,
				confirmed: int,
				cancelled: int
			})
		}
	}),
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
	}
};

/** The success answer of each routed action. */
export const RESPONSES: Record<string, ResponseSpec> = {
	"users.register": json(201, "AuthResult", "Registered; signed in"),
	"users.login": json(200, "AuthResult", "Signed in"),
	"users.me": json(200, "User", "The caller"),
	"products.list": json(200, "ProductPage", "Active products, by name"),
	"products.get": json(200, "Product", "The product"),
	"products.create": json(201, "ProductCreated", "Created (with `stock` when given)"),
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
	"api.nodes": json(200, "Nodes", "The cluster's nodes, their services and health, by id"),
	"api.orderRate": json(
		200,
		"OrderRate",
		"Orders created, confirmed and cancelled per second, as this gateway saw them"
	),
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

/**
 * The error types each operation answers besides the gateway's own (request shape, validation,
 * token, rate limit, availability: platform/web/openapi.ts `gatewayErrors`), by action or handler
 * route. Their statuses come from platform/errors.ts.
 */
export const ERRORS_BY_ACTION: Record<string, readonly string[]> = {
	"users.register": [
		"USERS_EMAIL_INVALID",
		"USERS_PASSWORD_WEAK",
		"USERS_EMAIL_TAKEN",
		"AUTH_LOGIN_THROTTLED",
		"USERS_BUSY"
	],
	"users.login": ["USERS_INVALID_CREDENTIALS", "AUTH_LOGIN_THROTTLED", "USERS_BUSY"],
	"products.get": ["PRODUCTS_NOT_FOUND"],
	"products.create": ["PRODUCTS_SKU_TAKEN"],
	"products.update": ["PRODUCTS_NOT_FOUND"],
	"inventory.get": ["INVENTORY_NOT_FOUND"],
	"inventory.setStock": ["PRODUCTS_NOT_FOUND", "INVENTORY_BELOW_RESERVED"],
	"orders.create": [
		"ORDERS_PRODUCT_UNAVAILABLE",
		"ORDERS_CURRENCY_MISMATCH",
		"ORDERS_TOTAL_TOO_LARGE",
		"ORDERS_IDEMPOTENCY_KEY_REUSED",
		"ORDERS_CUSTOMER_LIMIT",
		"ORDERS_OVERLOADED"
	],
	"orders.get": ["ORDERS_NOT_FOUND"],
	"orders.cancel": ["ORDERS_NOT_FOUND", "ORDERS_NOT_CANCELLABLE"],
	"orders.getSaga": ["SAGAS_NOT_FOUND"],
	"orders.redriveSaga": ["SAGAS_NOT_FOUND", "SAGAS_NOT_PARKED"],
	"orders.refundAndCancelSaga": ["SAGAS_NOT_FOUND", "SAGAS_NOT_PARKED", "SAGAS_STOCK_COMMITTED"],
	"orders.refund": ["ORDERS_NOT_FOUND", "ORDERS_NOT_REFUNDABLE"],
	"orders.adminGet": ["ORDERS_NOT_FOUND"],
	"notifications.replayDeadLetter": ["EVENTS_DEAD_LETTER_NOT_FOUND", "EVENTS_REPLAY_FAILED"],
	"GET /api/orders/:id/events": ["ORDERS_NOT_FOUND", "ORDERS_STREAM_LIMIT"]
};

/** What an operation enforces that its schemas cannot say. */
const NOTES: Record<string, string> = {
	"orders.create":
		"Each product may appear once in `items` (a repeat is 422 `VALIDATION_ERROR`). Prices come from the catalog, never from the client. A repeat with the same `Idempotency-Key` answers the first order (202); the same key with another body is 422 `ORDERS_IDEMPOTENCY_KEY_REUSED`.",
	"users.register":
		"The e-mail's identity key (case, Unicode look-alikes) must be new (409 `USERS_EMAIL_TAKEN`); an e-mail with invisible characters is 422 `USERS_EMAIL_INVALID`; the password may be neither the e-mail nor a common one (422 `USERS_PASSWORD_WEAK`).",
	"users.login":
		"Wrong e-mail or password: 401 `USERS_INVALID_CREDENTIALS`; too many failures per account or address: 429 `AUTH_LOGIN_THROTTLED` with `Retry-After`.",
	"GET /api/orders/:id/events":
		"Server-Sent Events: `event: order` with the order (JSON) on every change, a comment every 15 s, `event: end` when the order is final (or the token expires, or its saga is parked)."
};

/** The routes served by a handler of the gateway (services/api/order-streams.ts). */
const HANDLERS: Record<string, HandlerSpec> = {
	"GET /api/orders/:id/events": {
		operationId: "orders.events",
		summary: "The order's changes as Server-Sent Events",
		tag: "orders",
		pathParams: { id: uuid },
		response: {
			status: 200,
			description: "The stream, until the order is final",
			content: { "text/event-stream": { schema: { type: "string" } } }
		}
	}
};

/** The operations' tags, in order. */
const TAGS = [
	{ name: "users" },
	{ name: "products" },
	{ name: "inventory" },
	{ name: "orders" },
	{ name: "notifications" },
	{ name: "api", description: "The gateway's own actions" }
];

/** Everything the shop adds to the generated document. */
export const SHOP_OPENAPI: OpenApiSpec = {
	title: "moleculer-shop API",
	description:
		"The shop's REST API (docs/api.md), generated by the gateway from its routes and the parameter schemas of the actions behind them. Every answer carries `X-Request-ID`; errors are `{ name, message, code, type, data }`, every status an operation answers is listed with its error types. Rules for every route: on a read (GET) query keys an operation does not declare are ignored (`?_=1`); on a write they are 422, as are unknown body keys; a string anywhere (path, query, body) with a control character other than tab, LF and CR, or a lone UTF-16 surrogate, is 422 `VALIDATION_ERROR`, as is nesting deeper than 32 levels or a field given twice with different values; `Authorization: Bearer <token>` takes the scheme in any case, and public routes ignore a token they cannot verify; a path with a method it does not have is 405 with `Allow`.",
	tags: TAGS,
	schemas: SCHEMAS,
	responses: RESPONSES,
	/** Header parameters some actions read: `Idempotency-Key` where it is honoured. */
	headers: Object.fromEntries(
		[...IDEMPOTENCY_KEY_ACTIONS].map(a => [
			a,
			[{ $ref: "#/components/parameters/IdempotencyKey" }]
		])
	),
	errors: ERRORS_BY_ACTION,
	notes: NOTES,
	handlers: HANDLERS,
	parameters: {
		IdempotencyKey: {
			name: "Idempotency-Key",
			in: "header",
			required: false,
			description:
				"A repeat with the same key answers the first outcome (the same order); malformed: 400 `REQUEST_INVALID_ID`. Other routes ignore this header.",
			schema: { type: "string", pattern: "^[A-Za-z0-9._:-]{1,255}$" }
		}
	}
};
