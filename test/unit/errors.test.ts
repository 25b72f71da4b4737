import fs from "node:fs";
import path from "node:path";
import { Errors, ServiceBroker } from "moleculer";
import {
	ERRORS,
	FRAMEWORK_ERROR_TYPES,
	isErrorType,
	isTransientError,
	ShopClientError,
	ShopErrorRegenerator,
	ShopRetryableError,
	ShopServerError,
	shopError,
	type ErrorSpec,
	type ErrorType
} from "../../platform/errors";

const table = Object.entries(ERRORS) as [ErrorType, ErrorSpec][];
const allTypes = [...Object.keys(ERRORS), ...Object.keys(FRAMEWORK_ERROR_TYPES)];

describe("the error table", () => {
	it.each(allTypes)("%s is UPPER_SNAKE", type => {
		expect(type).toMatch(/^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$/);
	});

	it("types are unique across ERRORS and FRAMEWORK_ERROR_TYPES", () => {
		expect(new Set(allTypes).size).toBe(allTypes.length);
		for (const type of Object.keys(FRAMEWORK_ERROR_TYPES))
			expect(Object.prototype.hasOwnProperty.call(ERRORS, type)).toBe(false);
	});

	it.each([...table, ...Object.entries(FRAMEWORK_ERROR_TYPES)])(
		"%s has a valid HTTP error status and a description",
		(_type, spec) => {
			expect(Number.isInteger(spec.code)).toBe(true);
			expect(spec.code).toBeGreaterThanOrEqual(400);
			expect(spec.code).toBeLessThanOrEqual(599);
			expect(typeof spec.retryable).toBe("boolean");
			expect(spec.description.length).toBeGreaterThan(0);
		}
	);

	/** Moleculer's own errors of the framework types, as Moleculer throws them. */
	const moleculerErrors: Record<string, Error & { type?: string; retryable?: boolean }> = {
		VALIDATION_ERROR: new Errors.ValidationError("bad", "VALIDATION_ERROR", []),
		REQUEST_TIMEOUT: new Errors.RequestTimeoutError({ action: "a.b", nodeID: "n" }),
		SERVICE_NOT_AVAILABLE: new Errors.ServiceNotAvailableError({ action: "a.b" }),
		SERVICE_NOT_FOUND: new Errors.ServiceNotFoundError({ action: "a.b" }),
		QUEUE_FULL: new Errors.QueueIsFullError({ action: "a.b", nodeID: "n", size: 1, limit: 1 })
	};

	it("only server-side (5xx) or throttling errors are retryable, and Moleculer's as Moleculer says", () => {
		for (const [type, spec] of [...table, ...Object.entries(FRAMEWORK_ERROR_TYPES)])
			if (spec.retryable && !(type in moleculerErrors))
				expect([type, spec.code >= 500 || spec.code === 429]).toEqual([type, true]);
		// A framework type is retryable exactly when Moleculer's own class is (its retry policy and
		// isTransientError read the table): ServiceNotFoundError is a retryable 404.
		for (const [type, err] of Object.entries(moleculerErrors)) {
			expect(err.type).toBe(type);
			expect([type, FRAMEWORK_ERROR_TYPES[type]?.retryable]).toEqual([type, err.retryable]);
		}
	});

	it("isTransientError: derived from the tables' retryable flag", () => {
		for (const [type, spec] of [...table, ...Object.entries(FRAMEWORK_ERROR_TYPES)])
			expect([type, isTransientError({ type })]).toEqual([type, spec.retryable]);
		expect(isTransientError({ type: "INVENTORY_OUT_OF_STOCK", retryable: true })).toBe(true);
		expect(isTransientError({ type: "SERVICE_UNAVAILABLE", retryable: false })).toBe(true);
		expect(isTransientError({ type: "NOT_IN_THE_TABLES" })).toBe(false);
	});

	it("each application type is <AREA>_<REASON> with a known area", () => {
		const areas = [
			"REQUEST",
			"AUTH",
			"USERS",
			"PRODUCTS",
			"INVENTORY",
			"PAYMENTS",
			"ORDERS",
			"SAGAS",
			"EVENTS",
			"IDEMPOTENCY",
			"SERVICE",
			"INTERNAL"
		];
		for (const type of Object.keys(ERRORS))
			expect([type, areas.includes(type.split("_")[0]!)]).toEqual([type, true]);
	});

	it("every type is documented in docs/rest.md's error tables with its HTTP status", () => {
		const page = fs.readFileSync(path.join(__dirname, "..", "..", "docs", "rest.md"), "utf8");
		const start = page.indexOf("\n## Error types\n");
		expect(start).toBeGreaterThan(-1);
		const section = page.slice(start).split(/\n## (?!Error types)/)[0]!;
		const rows = section.split("\n").filter(l => l.trimStart().startsWith("|"));
		const missing: string[] = [];
		for (const [type, spec] of [...table, ...Object.entries(FRAMEWORK_ERROR_TYPES)]) {
			if (!section.includes(type)) {
				missing.push(type);
				continue;
			}
			const row = rows.find(r => r.includes(`\`${type}\``) || r.includes(`| ${type} |`));
			if (!row || !new RegExp(`\\|\\s*${spec.code}\\s*\\|`).test(row))
				missing.push(`${type} (${spec.code})`);
		}
		expect(missing).toEqual([]);
	});
});

describe("shopError", () => {
	it.each(table)("%s builds the class its spec calls for", (type, spec) => {
		const err = shopError(type, "message", { k: 1 });
		expect(err).toBeInstanceOf(Errors.MoleculerError);
		expect(err).toMatchObject({
			type,
			code: spec.code,
			message: "message",
			data: { k: 1 },
			retryable: spec.retryable
		});
		if (spec.retryable) {
			expect(err).toBeInstanceOf(ShopRetryableError);
			expect(err).toBeInstanceOf(Errors.MoleculerRetryableError);
		} else if (spec.code < 500) {
			expect(err).toBeInstanceOf(ShopClientError);
			expect(err).toBeInstanceOf(Errors.MoleculerClientError);
		} else {
			expect(err).toBeInstanceOf(ShopServerError);
			expect(err).not.toBeInstanceOf(Errors.MoleculerRetryableError);
		}
	});

	it("uses the table's description when no message is given", () => {
		expect(shopError("INVENTORY_OUT_OF_STOCK").message).toBe(
			ERRORS.INVENTORY_OUT_OF_STOCK.description
		);
	});

	it("gives 4xx the client class, 503s the retryable class, 500 the server class", () => {
		const client = shopError("INVENTORY_OUT_OF_STOCK");
		expect(client).toBeInstanceOf(ShopClientError);
		expect(client).toMatchObject({ code: 409, retryable: false, name: "ShopClientError" });
		const transient = shopError("SERVICE_UNAVAILABLE");
		expect(transient).toBeInstanceOf(ShopRetryableError);
		expect(transient).toMatchObject({ code: 503, retryable: true, name: "ShopRetryableError" });
		const internal = shopError("INTERNAL_ERROR");
		expect(internal).toBeInstanceOf(ShopServerError);
		expect(internal).toMatchObject({ code: 500, retryable: false, name: "ShopServerError" });
	});

	it("isErrorType matches by type, also on plain objects", () => {
		expect(isErrorType(shopError("PAYMENTS_CONFLICT"), "PAYMENTS_CONFLICT")).toBe(true);
		expect(isErrorType({ type: "PAYMENTS_CONFLICT" }, "X", "PAYMENTS_CONFLICT")).toBe(true);
		expect(isErrorType(shopError("PAYMENTS_CONFLICT"), "ORDERS_NOT_FOUND")).toBe(false);
		expect(isErrorType(null, "PAYMENTS_CONFLICT")).toBe(false);
		expect(isErrorType("PAYMENTS_CONFLICT", "PAYMENTS_CONFLICT")).toBe(false);
	});
});

describe("ShopErrorRegenerator", () => {
	let broker: ServiceBroker;
	let regenerator: ShopErrorRegenerator;

	beforeAll(() => {
		broker = new ServiceBroker({ logger: false, nodeID: "errors-test" });
		regenerator = new ShopErrorRegenerator();
		regenerator.init(broker);
	});

	/**
	 * What an error looks like after crossing the transporter: a plain object. Only the fields
	 * every sender sets; `retryable` and `nodeID` may be missing (older or foreign senders).
	 */
	function plain(over: Record<string, unknown>): Errors.PlainMoleculerError {
		return {
			name: "ShopClientError",
			message: "Not enough stock",
			code: 409,
			type: "INVENTORY_OUT_OF_STOCK",
			data: { productIds: ["p1"] },
			...over
		} as unknown as Errors.PlainMoleculerError;
	}
	const payload = { sender: "other-node" } as never;

	it("restores INVENTORY_OUT_OF_STOCK as a non-retryable client error with its type and data", () => {
		const err = regenerator.restore(plain({}), payload) as Errors.MoleculerError;
		expect(err).toBeInstanceOf(ShopClientError);
		expect(err).toMatchObject({
			type: "INVENTORY_OUT_OF_STOCK",
			code: 409,
			retryable: false,
			message: "Not enough stock",
			data: { productIds: ["p1"] },
			nodeID: "other-node"
		});
	});

	it("restores the class from the type even when the wire says otherwise", () => {
		const err = regenerator.restore(
			plain({ name: "Error", retryable: true, code: 500 }),
			payload
		);
		expect(err).toBeInstanceOf(ShopClientError);
		expect(err).toMatchObject({ type: "INVENTORY_OUT_OF_STOCK", code: 409, retryable: false });
	});

	it("restores SERVICE_UNAVAILABLE as a retryable error", () => {
		const err = regenerator.restore(
			plain({
				name: "ShopRetryableError",
				code: 503,
				type: "SERVICE_UNAVAILABLE",
				message: "down",
				data: {}
			}),
			payload
		);
		expect(err).toBeInstanceOf(ShopRetryableError);
		expect(err).toBeInstanceOf(Errors.MoleculerRetryableError);
		expect(err).toMatchObject({ type: "SERVICE_UNAVAILABLE", code: 503, retryable: true });
	});

	it("leaves Moleculer's own errors to Moleculer", () => {
		const err = regenerator.restore(
			plain({
				name: "ValidationError",
				code: 422,
				type: "VALIDATION_ERROR",
				data: [{ field: "x" }]
			}),
			payload
		);
		expect(err).toBeInstanceOf(Errors.ValidationError);
		expect(err).not.toBeInstanceOf(ShopClientError);
		expect(err).toMatchObject({ type: "VALIDATION_ERROR", code: 422 });
	});

	it("round-trips every application error through extractPlainError and restore", () => {
		for (const [type, spec] of table) {
			const original = shopError(type, `m-${type}`, { type });
			const restored = regenerator.restore(regenerator.extractPlainError(original), payload);
			expect(restored.constructor).toBe(original.constructor);
			expect(restored).toMatchObject({
				type,
				code: spec.code,
				retryable: spec.retryable,
				message: `m-${type}`,
				data: { type }
			});
		}
	});
});
