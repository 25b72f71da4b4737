/**
 * The gateway's answer to every error class of Moleculer (moleculer/src/errors.js) and
 * moleculer-web (moleculer-web/src/errors.js) that can reach its error handler: each class is
 * constructed as the framework throws it and mapped by `toErrorBody`; a class ends as 500 only
 * when it means a bug. Then, with a real gateway on a broker: the HTTP port opens only once every
 * other local service has started ("ready before reachable"), and an alias whose service is not
 * registered answers 503 `SERVICE_NOT_AVAILABLE` with `Retry-After`, never 500.
 */
import net from "node:net";
import { Errors, ServiceBroker, type ServiceSchema } from "moleculer";
import ApiGateway from "moleculer-web";
import { toErrorBody } from "../../platform/web/gateway-errors";
import ApiService from "../../services/api/api.service";
import { ERRORS, FRAMEWORK_ERROR_TYPES } from "../../platform/errors";
import { api } from "../support/shop-process";
import { freePort } from "../support/ports";

const W = (ApiGateway as unknown as { Errors: Record<string, new (...a: unknown[]) => Error> })
	.Errors;
const M = Errors as unknown as Record<string, new (...a: unknown[]) => Error>;
const call = { action: "orders.create", nodeID: "node-1" };

/** [what is thrown, HTTP status, type the client sees] */
const CASES: [string, () => unknown, number, string][] = [
	// moleculer-web
	[
		"web InvalidRequestBodyError",
		() => new W.InvalidRequestBodyError!("{", "x"),
		400,
		"REQUEST_INVALID_JSON"
	],
	[
		"web InvalidResponseTypeError",
		() => new W.InvalidResponseTypeError!("symbol"),
		500,
		"INTERNAL_ERROR"
	],
	[
		"web UnAuthorizedError NO_TOKEN",
		() => new W.UnAuthorizedError!("NO_TOKEN"),
		401,
		"AUTH_TOKEN_MISSING"
	],
	["web UnAuthorizedError", () => new W.UnAuthorizedError!(), 401, "AUTH_TOKEN_INVALID"],
	[
		"web ForbiddenError ORIGIN_NOT_ALLOWED",
		() => new W.ForbiddenError!("ORIGIN_NOT_ALLOWED"),
		403,
		"ORIGIN_NOT_ALLOWED"
	],
	[
		"web ForbiddenError ORIGIN_NOT_FOUND",
		() => new W.ForbiddenError!("ORIGIN_NOT_FOUND"),
		403,
		"ORIGIN_NOT_ALLOWED"
	],
	["web ForbiddenError", () => new W.ForbiddenError!(), 403, "AUTH_FORBIDDEN"],
	[
		"web BadRequestError UNABLE_DECODE_PARAM",
		() => new W.BadRequestError!("UNABLE_DECODE_PARAM"),
		400,
		"REQUEST_MALFORMED"
	],
	["web BadRequestError", () => new W.BadRequestError!(), 400, "REQUEST_MALFORMED"],
	["web NotFoundError", () => new W.NotFoundError!(), 404, "REQUEST_NOT_FOUND"],
	["web PayloadTooLarge", () => new W.PayloadTooLarge!({}), 413, "REQUEST_BODY_TOO_LARGE"],
	["web RateLimitExceeded", () => new W.RateLimitExceeded!(), 429, "REQUEST_RATE_LIMITED"],
	[
		"web ServiceUnavailableError",
		() => new W.ServiceUnavailableError!(),
		503,
		"SERVICE_NOT_AVAILABLE"
	],
	// moleculer
	["ServiceNotFoundError", () => new M.ServiceNotFoundError!(call), 503, "SERVICE_NOT_AVAILABLE"],
	[
		"ServiceNotAvailableError",
		() => new M.ServiceNotAvailableError!(call),
		503,
		"SERVICE_NOT_AVAILABLE"
	],
	["RequestTimeoutError", () => new M.RequestTimeoutError!(call), 504, "REQUEST_TIMEOUT"],
	["RequestSkippedError", () => new M.RequestSkippedError!(call), 504, "REQUEST_TIMEOUT"],
	["RequestRejectedError", () => new M.RequestRejectedError!(call), 503, "SERVICE_NOT_AVAILABLE"],
	["QueueIsFullError", () => new M.QueueIsFullError!(call), 429, "QUEUE_FULL"],
	[
		"ValidationError",
		() => new M.ValidationError!("bad", "VALIDATION_ERROR", []),
		422,
		"VALIDATION_ERROR"
	],
	["BrokerDisconnectedError", () => new M.BrokerDisconnectedError!(), 503, "SERVICE_UNAVAILABLE"],
	[
		"GracefulStopTimeoutError",
		() => new M.GracefulStopTimeoutError!({ service: { name: "orders" } }),
		503,
		"SERVICE_NOT_AVAILABLE"
	],
	[
		"MaxCallLevelError",
		() => new M.MaxCallLevelError!({ level: 100, nodeID: "n" }),
		500,
		"INTERNAL_ERROR"
	],
	[
		"ServiceSchemaError",
		() => new M.ServiceSchemaError!("bad schema", {}),
		500,
		"INTERNAL_ERROR"
	],
	[
		"BrokerOptionsError",
		() => new M.BrokerOptionsError!("bad options", {}),
		500,
		"INTERNAL_ERROR"
	],
	[
		"ProtocolVersionMismatchError",
		() => new M.ProtocolVersionMismatchError!({}),
		500,
		"INTERNAL_ERROR"
	],
	["InvalidPacketDataError", () => new M.InvalidPacketDataError!({}), 500, "INTERNAL_ERROR"],
	[
		"MoleculerClientError without a type",
		() => new M.MoleculerClientError!("no"),
		400,
		"REQUEST_MALFORMED"
	],
	[
		"MoleculerRetryableError 503 without a type",
		() => new M.MoleculerRetryableError!("down", 503),
		503,
		"SERVICE_UNAVAILABLE"
	],
	// utils.promiseTimeout's (e.g. a stream that waited too long)
	["TimeoutError", () => new M.TimeoutError!("timed out"), 504, "REQUEST_TIMEOUT"],
	[
		"MoleculerServerError",
		() => new M.MoleculerServerError!("boom", 500, "SOMETHING"),
		500,
		"INTERNAL_ERROR"
	],
	[
		"circuit breaker open",
		() => new M.MoleculerRetryableError!("open", 503, "CIRCUIT_BREAKER_OPEN"),
		503,
		"CIRCUIT_BREAKER_OPEN"
	],
	// the shop's own and plain errors
	[
		"the shop's SERVICE_UNAVAILABLE",
		() => new M.MoleculerRetryableError!("db down", 503, "SERVICE_UNAVAILABLE"),
		503,
		"SERVICE_UNAVAILABLE"
	],
	["a bare Error", () => new Error("bug"), 500, "INTERNAL_ERROR"],
	["a thrown string", () => "bug", 500, "INTERNAL_ERROR"]
];

describe("toErrorBody: every framework error class has a typed status", () => {
	it.each(CASES)("%s", (_name, make, status, type) => {
		for (const production of [true, false]) {
			const body = toErrorBody(make(), production);
			expect([body.code, body.type]).toEqual([status, type]);
			const spec =
				(ERRORS as Record<string, { code: number }>)[type] ?? FRAMEWORK_ERROR_TYPES[type];
			// Every type a client sees is in the one table, with the status it is answered with.
			expect([type, spec?.code]).toEqual([type, status]);
		}
	});

	it("covers every error class moleculer and moleculer-web export", () => {
		const abstract = [
			"ExtendableError",
			"MoleculerError",
			"MoleculerRetryableError",
			"Regenerator"
		];
		const covered = new Set(CASES.map(([name]) => name.replace(/^web /, "").split(" ")[0]));
		const classes = [
			...Object.keys(M).filter(k => /^[A-Z]/.test(k) && !abstract.includes(k)),
			...Object.keys(W).filter(k => /^[A-Z][a-z]/.test(k))
		];
		expect(classes.filter(c => !covered.has(c))).toEqual([]);
	});
});

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
	return new Promise(resolve => {
		const socket = net.connect(port, "127.0.0.1");
		socket.once("connect", () => {
			socket.destroy();
			resolve(true);
		});
		socket.once("error", () => resolve(false));
	});
}

describe("the gateway on a broker", () => {
	const gateway = (port: number): ServiceSchema =>
		({
			mixins: [ApiService],
			settings: { port, ip: "127.0.0.1" }
		}) as unknown as ServiceSchema;

	it("opens its port only when every other local service has started", async () => {
		const port = await freePort();
		let release!: () => void;
		const released = new Promise<void>(r => (release = r));
		const broker = new ServiceBroker({ logger: false, nodeID: "gw-ready" });
		broker.createService({
			name: "products",
			actions: { list: { visibility: "published", handler: () => ({ rows: [] }) } },
			started: () => released
		});
		broker.createService(gateway(port));
		const starting = broker.start();
		try {
			// The gateway's own start-up is done in milliseconds; products is still starting.
			await new Promise(r => setTimeout(r, 500));
			expect(await listening(port)).toBe(false);
			release();
			await starting;
			expect(await listening(port)).toBe(true);
			const r = await api(`http://127.0.0.1:${port}`, "GET", "/api/products");
			expect([r.status, r.body]).toEqual([200, { rows: [] }]);
		} finally {
			release();
			await starting.catch(() => undefined);
			await broker.stop();
		}
	});

	it("alone (another node's services not registered): 503 SERVICE_NOT_AVAILABLE with Retry-After", async () => {
		const port = await freePort();
		const broker = new ServiceBroker({ logger: false, nodeID: "gw-alone" });
		broker.createService(gateway(port));
		await broker.start();
		try {
			const base = `http://127.0.0.1:${port}`;
			for (const [method, url, body] of [
				["GET", "/api/products", undefined],
				["GET", "/api/inventory/00000000-0000-4000-8000-000000000001", undefined],
				["POST", "/api/users/login", { email: "a@example.com", password: "x" }]
			] as const) {
				const r = await api(base, method, url, { body });
				expect([url, r.status, r.body.type]).toEqual([url, 503, "SERVICE_NOT_AVAILABLE"]);
				expect(r.headers.get("retry-after")).toBe("1");
			}
			// A bearer token needs users.resolveToken: not there either.
			const r = await api(base, "GET", "/api/orders", { token: "a.b.c" });
			expect([r.status, r.body.type]).toEqual([503, "SERVICE_NOT_AVAILABLE"]);
			const ready = await api(base, "GET", "/ready");
			expect(ready.status).toBe(503);
			expect(ready.headers.get("retry-after")).toBe("1");
		} finally {
			await broker.stop();
		}
	});

	it("gives up waiting when another local service fails to start", async () => {
		const port = await freePort();
		const broker = new ServiceBroker({ logger: false, nodeID: "gw-fail" });
		broker.createService({
			name: "products",
			started: () => Promise.reject(new Error("migration failed"))
		});
		broker.createService(gateway(port));
		try {
			await expect(broker.start()).rejects.toThrow("migration failed");
			expect(await listening(port)).toBe(false);
		} finally {
			await broker.stop();
		}
		expect(await listening(port)).toBe(false);
	});
});
