/**
 * Every application error of the shop, in ONE table (fastify's habit): a stable UPPER_SNAKE
 * `type` (`<AREA>_<REASON>`), the HTTP status as `code`, and whether it is retryable.
 *
 * Client errors (4xx) extend `MoleculerClientError` and are never retried; transient errors extend
 * `MoleculerRetryableError`. Errors lose their class when they cross the transporter, so callers
 * branch on `err.type`, and `ShopErrorRegenerator` (the broker's `errorRegenerator`) rebuilds the
 * right class on the receiving node.
 *
 * Errors raised by Moleculer and moleculer-web themselves keep their own types; the ones a client
 * can see are listed in `FRAMEWORK_ERROR_TYPES` so the README's table is complete.
 */
import { Errors } from "moleculer";

const { MoleculerClientError, MoleculerRetryableError, MoleculerError, Regenerator } = Errors;

export interface ErrorSpec {
	/** HTTP status. */
	readonly code: number;
	/** Retried by the broker's retry policy (transient). */
	readonly retryable: boolean;
	/** One line for the docs. */
	readonly description: string;
}

/** The application's error table: `type` → spec. */
export const ERRORS = {
	REQUEST_INVALID_JSON: {
		code: 400,
		retryable: false,
		description: "The body is not valid JSON."
	},
	REQUEST_BODY_NOT_OBJECT: {
		code: 400,
		retryable: false,
		description: "The JSON body is not an object."
	},
	REQUEST_INVALID_ID: {
		code: 400,
		retryable: false,
		description: "A request header such as Idempotency-Key or X-Request-ID is malformed."
	},
	REQUEST_MALFORMED: {
		code: 400,
		retryable: false,
		description: "The HTTP request or its URL cannot be parsed (e.g. bad percent-encoding)."
	},
	REQUEST_NOT_FOUND: { code: 404, retryable: false, description: "No such route." },
	REQUEST_METHOD_NOT_ALLOWED: {
		code: 405,
		retryable: false,
		description: "The route exists, not with this method; `Allow` lists its methods."
	},
	REQUEST_CLIENT_TIMEOUT: {
		code: 408,
		retryable: false,
		description: "The client did not send the whole request in time."
	},
	REQUEST_BODY_TOO_LARGE: {
		code: 413,
		retryable: false,
		description: "The body is over the limit."
	},
	REQUEST_UNSUPPORTED_MEDIA_TYPE: {
		code: 415,
		retryable: false,
		description: "The body is not application/json."
	},
	REQUEST_RATE_LIMITED: { code: 429, retryable: false, description: "Too many requests." },
	REQUEST_HEADERS_TOO_LARGE: {
		code: 431,
		retryable: false,
		description: "The request's headers are over the limit (16 KB)."
	},
	AUTH_TOKEN_MISSING: { code: 401, retryable: false, description: "No bearer token." },
	AUTH_TOKEN_INVALID: {
		code: 401,
		retryable: false,
		description: "The bearer token is malformed, expired, badly signed or for an unknown user."
	},
	AUTH_FORBIDDEN: {
		code: 403,
		retryable: false,
		description: "The caller's role may not do this."
	},
	AUTH_LOGIN_THROTTLED: {
		code: 429,
		retryable: false,
		description:
			"Too many failed logins or sign-ups of a taken e-mail, or logins (account or address); see `Retry-After`."
	},
	USERS_EMAIL_TAKEN: { code: 409, retryable: false, description: "The e-mail is registered." },
	USERS_EMAIL_INVALID: {
		code: 422,
		retryable: false,
		description:
			"The e-mail has no identity key (an invisible or unsupported character, an invalid domain); `data.reason` says which."
	},
	USERS_PASSWORD_WEAK: {
		code: 422,
		retryable: false,
		description: "The password is the e-mail or a common one; `data.reasons` says which."
	},
	USERS_INVALID_CREDENTIALS: {
		code: 401,
		retryable: false,
		description: "Wrong e-mail or password."
	},
	USERS_NOT_FOUND: { code: 404, retryable: false, description: "No such user." },
	USERS_BUSY: {
		code: 429,
		retryable: true,
		description: "Password hashing is at its limit (PASSWORD_HASH_*); retry after Retry-After."
	},
	PRODUCTS_NOT_FOUND: { code: 404, retryable: false, description: "No such product." },
	PRODUCTS_SKU_TAKEN: { code: 409, retryable: false, description: "A product has that SKU." },
	INVENTORY_NOT_FOUND: { code: 404, retryable: false, description: "No stock record." },
	INVENTORY_OUT_OF_STOCK: {
		code: 409,
		retryable: false,
		description: "Not enough available stock for a reservation."
	},
	INVENTORY_BELOW_RESERVED: {
		code: 409,
		retryable: false,
		description: "onHand may not be set below what is reserved."
	},
	INVENTORY_RESERVATION_CONFLICT: {
		code: 409,
		retryable: false,
		description: "The reservation is in a state that forbids this (e.g. commit after release)."
	},
	INVENTORY_RESERVATION_EXPIRED: {
		code: 409,
		retryable: false,
		description: "The reservation expired and its units were taken before the commit."
	},
	PAYMENTS_CARD_DECLINED: { code: 402, retryable: false, description: "The card was declined." },
	PAYMENTS_INVALID_METHOD: {
		code: 422,
		retryable: false,
		description: "Unknown payment method token."
	},
	PAYMENTS_CONFLICT: {
		code: 409,
		retryable: false,
		description: "The payment is in a state that forbids this (e.g. charge after refund)."
	},
	PAYMENTS_PROCESSOR_UNAVAILABLE: {
		code: 503,
		retryable: true,
		description: "The (simulated) card processor is temporarily unavailable."
	},
	ORDERS_OVERLOADED: {
		code: 503,
		retryable: true,
		description:
			"This orders node runs as many sagas as its adaptive limit allows (SAGA_*_IN_FLIGHT); retry after Retry-After."
	},
	ORDERS_CUSTOMER_LIMIT: {
		code: 429,
		retryable: false,
		description:
			"The customer has as many orders (or units) in flight as one may (ORDERS_MAX_*_PER_CUSTOMER); retry after Retry-After."
	},
	ORDERS_STREAM_LIMIT: {
		code: 429,
		retryable: false,
		description:
			"The caller or its address holds as many order streams as one may (ORDER_STREAMS_MAX_PER_*); retry after Retry-After."
	},
	ORDERS_NOT_FOUND: {
		code: 404,
		retryable: false,
		description: "No such order for this caller."
	},
	ORDERS_NOT_CANCELLABLE: {
		code: 409,
		retryable: false,
		description: "The order is confirmed or past its point of no return."
	},
	ORDERS_NOT_REFUNDABLE: {
		code: 409,
		retryable: false,
		description: "Only a CONFIRMED order can be refunded (an admin's return)."
	},
	ORDERS_CURRENCY_MISMATCH: {
		code: 422,
		retryable: false,
		description: "The items are priced in different currencies."
	},
	ORDERS_PRODUCT_UNAVAILABLE: {
		code: 422,
		retryable: false,
		description: "An item names an unknown or inactive product."
	},
	ORDERS_TOTAL_TOO_LARGE: {
		code: 422,
		retryable: false,
		description: "The order total exceeds the largest amount the shop accepts."
	},
	ORDERS_CANCEL_REQUESTED: {
		code: 409,
		retryable: false,
		description: "The customer cancelled the order before its point of no return."
	},
	ORDERS_IDEMPOTENCY_KEY_REUSED: {
		code: 422,
		retryable: false,
		description: "The Idempotency-Key was used before with a different request body."
	},
	IDEMPOTENCY_KEY_CONFLICT: {
		code: 409,
		retryable: false,
		description: "The idempotency key was used before for another action."
	},
	SAGAS_NOT_FOUND: { code: 404, retryable: false, description: "No such saga." },
	EVENTS_DEAD_LETTER_NOT_FOUND: {
		code: 404,
		retryable: false,
		description: "No such dead-lettered event."
	},
	EVENTS_REPLAY_FAILED: {
		code: 409,
		retryable: false,
		description: "Replaying the dead-lettered event failed again; `data.error` says why."
	},
	SAGAS_NOT_PARKED: {
		code: 409,
		retryable: false,
		description: "Only a saga parked as FAILED can be redriven, or refunded and cancelled."
	},
	SAGAS_STOCK_COMMITTED: {
		code: 409,
		retryable: false,
		description:
			"The parked order's stock was committed: redrive its saga forward instead of refunding and cancelling it."
	},
	SERVICE_UNAVAILABLE: {
		code: 503,
		retryable: true,
		description: "A dependency (database, a service) does not answer; try again."
	},
	INTERNAL_ERROR: { code: 500, retryable: false, description: "An unexpected error." }
} as const satisfies Record<string, ErrorSpec>;

export type ErrorType = keyof typeof ERRORS;

/**
 * Error types produced by Moleculer, fastest-validator and moleculer-web that a REST client can
 * see, kept as they are (renaming them would break Moleculer's own callers).
 */
export const FRAMEWORK_ERROR_TYPES: Record<string, ErrorSpec> = {
	VALIDATION_ERROR: {
		code: 422,
		retryable: false,
		description: "Parameters failed validation; `data` lists the fields."
	},
	REQUEST_TIMEOUT: { code: 504, retryable: true, description: "A service call timed out." },
	SERVICE_NOT_AVAILABLE: {
		code: 503,
		retryable: true,
		description: "No live node serves the action."
	},
	// Moleculer's ServiceNotFoundError is a MoleculerRetryableError: no node has registered the
	// action (yet), e.g. a participant restarting; the gateway answers it as 503
	// SERVICE_NOT_AVAILABLE (platform/web/gateway-errors.ts).
	SERVICE_NOT_FOUND: { code: 404, retryable: true, description: "No such action." },
	CIRCUIT_BREAKER_OPEN: {
		code: 503,
		retryable: true,
		description: "The circuit breaker is open for the target."
	},
	QUEUE_FULL: { code: 429, retryable: true, description: "The bulkhead queue is full." },
	ORIGIN_NOT_ALLOWED: {
		code: 403,
		retryable: false,
		description: "The request's Origin is not in CORS_ORIGINS (moleculer-web)."
	}
};

/** Data carried by a shop error: JSON-safe. */
export type ErrorData = Record<string, unknown> | unknown[] | undefined;

/** A 4xx error of the shop. */
export class ShopClientError extends MoleculerClientError {
	constructor(type: ErrorType, message?: string, data?: ErrorData) {
		const spec = ERRORS[type];
		super(message ?? spec.description, spec.code, type, data);
		this.name = "ShopClientError";
	}
}

/** A transient error of the shop: retried by the broker's retry policy. */
export class ShopRetryableError extends MoleculerRetryableError {
	constructor(type: ErrorType, message?: string, data?: ErrorData) {
		const spec = ERRORS[type];
		super(message ?? spec.description, spec.code, type, data);
		this.name = "ShopRetryableError";
	}
}

/** A 5xx non-retryable error of the shop. */
export class ShopServerError extends MoleculerError {
	constructor(type: ErrorType, message?: string, data?: ErrorData) {
		const spec = ERRORS[type];
		super(message ?? spec.description, spec.code, type, data);
		this.name = "ShopServerError";
	}
}

/**
 * Builds the error of `type` with the class its spec calls for. Every throw site in services
 * goes through this, so the class and the table cannot disagree.
 */
export function shopError(
	type: ErrorType,
	message?: string,
	data?: ErrorData
): ShopClientError | ShopRetryableError | ShopServerError {
	const spec: ErrorSpec = ERRORS[type];
	if (spec.retryable) return new ShopRetryableError(type, message, data);
	if (spec.code < 500) return new ShopClientError(type, message, data);
	return new ShopServerError(type, message, data);
}

/** Whether `err` carries the given shop error type (works across the transporter). */
export function isErrorType(err: unknown, ...types: string[]): boolean {
	return (
		typeof err === "object" &&
		err !== null &&
		types.includes(String((err as { type?: unknown }).type))
	);
}

/** Error types the tables (`ERRORS`, `FRAMEWORK_ERROR_TYPES`) mark `retryable`. */
const TRANSIENT_TYPES: ReadonlySet<string> = new Set(
	[...Object.entries(ERRORS), ...Object.entries(FRAMEWORK_ERROR_TYPES)]
		.filter(([, spec]) => spec.retryable)
		.map(([type]) => type)
);

/**
 * Whether an error is transient (worth retrying): its `retryable` is true, or its `type` is one
 * the tables mark `retryable` (also when it crossed the transporter without its flag). Business
 * and client errors never are. Used by the broker's retry policy (moleculer.config.ts), a saga
 * step's retries (platform/saga/forward.ts) and the idempotency mixin (not remembered).
 */
export function isTransientError(err: unknown): boolean {
	if (typeof err !== "object" || err === null) return false;
	const e = err as { retryable?: unknown; type?: unknown };
	return e.retryable === true || TRANSIENT_TYPES.has(String(e.type));
}

/**
 * Restores the shop's error classes from errors that crossed the transporter, so a remote
 * `INVENTORY_OUT_OF_STOCK` arrives as a `ShopClientError` with `retryable: false` and a remote
 * `SERVICE_UNAVAILABLE` as a `ShopRetryableError`. Anything else falls back to Moleculer's own.
 */
export class ShopErrorRegenerator extends Regenerator {
	/**
	 * Moleculer's `restore` copies `retryable` from the wire after `restoreCustomError`, which
	 * would leave a shop error's `retryable` undefined (or contradicting its class) when the sender
	 * left it out; the table decides it instead.
	 */
	override restore(plainError: Errors.PlainMoleculerError, payload: Record<string, any>): Error {
		const err = super.restore(plainError, payload);
		const type = plainError.type;
		if (type && Object.prototype.hasOwnProperty.call(ERRORS, type))
			(err as { retryable?: boolean }).retryable = ERRORS[type as ErrorType].retryable;
		return err;
	}

	override restoreCustomError(plainError: Errors.PlainMoleculerError): Error {
		const type = plainError.type;
		if (type && Object.prototype.hasOwnProperty.call(ERRORS, type)) {
			return shopError(type as ErrorType, plainError.message, plainError.data as ErrorData);
		}
		// Moleculer's base class answers undefined for "not mine"; its typings say Error.
		return undefined as unknown as Error;
	}
}
