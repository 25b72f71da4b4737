/**
 * The shop's part of its OpenAPI 3.1 document (`GET /api/openapi.json`, mixins/api-docs.mixin.ts):
 * the response shapes of its services (Order, Product, Saga...), each routed action's success
 * answer, the headers some actions read and the operations' tags. The generator
 * (platform/web/openapi.ts) knows no service; this file is what it is given (issue 17).
 *
 * The Order shape is also written in services/orders/orders.model.ts (`Order`, `OrderItem`,
 * `OrderStatus`): the schemas here are checked against those types by the compiler (`satisfies
 * Record<keyof Order, ...>`), so a field added to, renamed in or dropped from the model fails
 * `tsc` until the document follows.
 */
import {
	json,
	obj,
	ref,
	type JsonSchema,
	type OpenApiSpec,
	type ResponseSpec
} from "../../platform/web/openapi";
import type { Order, OrderItem, OrderStatus } from "../orders/orders.model";

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
	}
};

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
		"The shop's REST API (docs/CONTRACT.md), generated by the gateway from its routes and the parameter schemas of the actions behind them. Every answer carries `X-Request-ID`; errors are `{ name, message, code, type, data }`.",
	tags: TAGS,
	schemas: SCHEMAS,
	responses: RESPONSES,
	/** Header parameters some actions read. */
	headers: { "orders.create": [{ $ref: "#/components/parameters/IdempotencyKey" }] },
	parameters: {
		IdempotencyKey: {
			name: "Idempotency-Key",
			in: "header",
			required: false,
			description: "A repeat with the same key answers the same order",
			schema: { type: "string", pattern: "^[A-Za-z0-9._:-]{1,255}$" }
		}
	}
};
