/**
 * platform/db/database-unavailable.ts: which errors mean "the database does not answer" (a real refused
 * connection from Sequelize and from the pg pool, pg's broken connections, Postgres's shutdown SQLSTATEs), which do
 * not (a constraint violation, a bad statement, wrong credentials), and the middleware turning the
 * former into SERVICE_UNAVAILABLE (503, retryable) while the latter pass unchanged. With
 * Moleculer's own circuit breaker and the shop's failure check, a database outage leaves nothing
 * behind: the first successes after it no longer open the breaker of the healthy endpoint, which
 * an outage of 500s still does (Moleculer evaluates the failure rate on successes too).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker, type ServiceSchema } from "moleculer";
import { Sequelize } from "sequelize";
import {
	circuitBreakerFailure,
	DatabaseUnavailableMiddleware,
	isDatabaseOutageError,
	isDatabaseUnavailable
} from "../../platform/db/database-unavailable";
import { ShopDatabase } from "../../platform/db/pool";
import { freePort } from "../support/ports";

/** What Sequelize wraps a pg error of a query in. */
const sequelizeDatabaseError = (parent: Error & { code?: string }): Error =>
	Object.assign(new Error(parent.message), {
		name: "SequelizeDatabaseError",
		parent,
		original: parent
	});
const pgError = (message: string, code: string): Error & { code: string } =>
	Object.assign(new Error(message), { code });

describe("isDatabaseUnavailable", () => {
	it("a connection Sequelize could not make (nothing listens on the port)", async () => {
		const port = await freePort();
		const sequelize = new Sequelize(`postgres://u:p@127.0.0.1:${port}/db`, {
			logging: false,
			retry: { max: 0 }
		});
		const err = await sequelize.query("SELECT 1").catch((e: unknown) => e);
		await sequelize.close();
		expect((err as Error).name).toBe("SequelizeConnectionRefusedError");
		expect(isDatabaseUnavailable(err)).toBe(true);
	});

	it("a connection the pg pool could not make (nothing listens on the port)", async () => {
		const port = await freePort();
		const db = new ShopDatabase(`postgres://u:p@127.0.0.1:${port}/db`, { max: 1 });
		const err = await db.query("SELECT 1").catch((e: unknown) => e);
		await db.close();
		expect((err as { code?: string }).code).toBe("ECONNREFUSED");
		expect(isDatabaseUnavailable(err)).toBe(true);
	});

	it("a connection the pg pool could not make over a Unix socket that is gone (server stopped)", async () => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "no-pg-socket-"));
		const db = new ShopDatabase(
			`postgres://u:p@localhost/db?host=${encodeURIComponent(dir)}&port=5999`,
			{ max: 1 }
		);
		const err = await db.query("SELECT 1").catch((e: unknown) => e);
		await db.close();
		fs.rmSync(dir, { recursive: true, force: true });
		expect((err as { code?: string }).code).toBe("ENOENT");
		expect(isDatabaseUnavailable(err)).toBe(true);
		// A missing file elsewhere is not a database outage.
		expect(
			isDatabaseUnavailable(
				Object.assign(new Error("ENOENT: no such file"), {
					code: "ENOENT",
					syscall: "open"
				})
			)
		).toBe(false);
	});

	it.each([
		["pg's connection broke under a query", new Error("Connection terminated unexpectedly")],
		[
			"wrapped by Sequelize",
			sequelizeDatabaseError(new Error("Connection terminated unexpectedly"))
		],
		[
			"a fast shutdown ends the session (57P01)",
			sequelizeDatabaseError(
				pgError("terminating connection due to administrator command", "57P01")
			)
		],
		[
			"the server is starting up (57P03)",
			pgError("the database system is starting up", "57P03")
		],
		["a connection exception (08006)", pgError("connection failure", "08006")],
		[
			"no connection from the pool in time",
			Object.assign(new Error("Operation timeout"), {
				name: "SequelizeConnectionAcquireTimeoutError"
			})
		],
		["a reset socket", Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" })],
		[
			"no connection from the pg pool in time",
			new Error("timeout exceeded when trying to connect")
		],
		[
			"pg could not connect in time",
			new Error("Connection terminated due to connection timeout")
		],
		["a client that already broke", new Error("Client was closed and is not queryable")]
	])("%s: unavailable", (_what, err) => {
		expect(isDatabaseUnavailable(err)).toBe(true);
	});

	it.each([
		[
			"a unique violation (23505)",
			sequelizeDatabaseError(pgError("duplicate key value", "23505"))
		],
		["a syntax error (42601)", sequelizeDatabaseError(pgError("syntax error", "42601"))],
		[
			"wrong credentials",
			Object.assign(new Error("password authentication failed"), {
				name: "SequelizeAccessDeniedError",
				parent: pgError("password authentication failed", "28P01")
			})
		],
		["a plain bug", new TypeError("x is undefined")],
		["not an error", "Connection terminated"],
		["nothing", null]
	])("%s: not an outage", (_what, err) => {
		expect(isDatabaseUnavailable(err)).toBe(false);
	});
});

describe("DatabaseUnavailableMiddleware", () => {
	const broker = new ServiceBroker({
		logger: false,
		middlewares: [DatabaseUnavailableMiddleware]
	});
	broker.createService({
		name: "stock",
		actions: {
			down() {
				throw sequelizeDatabaseError(
					pgError("terminating connection due to administrator command", "57P01")
				);
			},
			async downLater() {
				await new Promise(r => setTimeout(r, 5));
				throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), {
					name: "SequelizeConnectionRefusedError"
				});
			},
			conflict() {
				throw sequelizeDatabaseError(pgError("duplicate key value", "23505"));
			},
			ok() {
				return "fine";
			}
		}
	});
	beforeAll(() => broker.start());
	afterAll(() => broker.stop());

	it.each(["stock.down", "stock.downLater"])(
		"%s: 503 SERVICE_UNAVAILABLE, retryable, naming the service",
		async action => {
			await expect(broker.call(action)).rejects.toMatchObject({
				type: "SERVICE_UNAVAILABLE",
				code: 503,
				retryable: true,
				data: { service: "stock" }
			});
		}
	);

	it("other errors and results pass unchanged", async () => {
		await expect(broker.call("stock.conflict")).rejects.toMatchObject({
			name: "SequelizeDatabaseError",
			message: "duplicate key value"
		});
		await expect(broker.call("stock.ok")).resolves.toBe("fine");
	});
});

describe("the circuit breaker's failure check", () => {
	/** A service whose action `call` throws `fail()` on its first 4 calls, then answers "ok". */
	const flaky = (name: string, fail: () => Error): ServiceSchema => {
		let calls = 0;
		return {
			name,
			actions: {
				call() {
					if (++calls <= 4) throw fail();
					return "ok";
				}
			}
		};
	};
	const broker = new ServiceBroker({
		logger: false,
		middlewares: [DatabaseUnavailableMiddleware],
		circuitBreaker: {
			enabled: true,
			threshold: 0.5,
			minRequestCount: 5,
			windowTime: 60,
			halfOpenTime: 60_000,
			check: circuitBreakerFailure
		}
	});
	broker.createService(
		flaky("db", () =>
			Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), {
				name: "SequelizeConnectionRefusedError"
			})
		)
	);
	broker.createService(
		flaky("bug", () => Object.assign(new Error("internal"), { code: 500, type: "INTERNAL" }))
	);
	beforeAll(() => broker.start());
	afterAll(() => broker.stop());

	/** Ten calls; what each answered (the result or the error's type). */
	const tenCalls = async (action: string): Promise<string[]> => {
		const out: string[] = [];
		for (let i = 0; i < 10; i++)
			out.push(
				await broker.call<string>(action).catch((e: { type?: string }) => String(e.type))
			);
		return out;
	};

	it("counts a 5xx, not a database outage", () => {
		expect(circuitBreakerFailure({ code: 500, type: "INTERNAL_ERROR" })).toBe(true);
		expect(circuitBreakerFailure({ code: 504, type: "REQUEST_TIMEOUT" })).toBe(true);
		expect(circuitBreakerFailure({ code: 503, type: "PAYMENTS_PROCESSOR_UNAVAILABLE" })).toBe(
			true
		);
		expect(circuitBreakerFailure({ code: 422, type: "VALIDATION_ERROR" })).toBe(false);
		// Backpressure is the node working as designed, not failing.
		expect(circuitBreakerFailure({ code: 503, type: "ORDERS_OVERLOADED" })).toBe(false);
		const outage = {
			code: 503,
			type: "SERVICE_UNAVAILABLE",
			data: { service: "orders", dependency: "database" }
		};
		expect(isDatabaseOutageError(outage)).toBe(true);
		expect(circuitBreakerFailure(outage)).toBe(false);
	});

	it("after a database outage the endpoint answers again at once", async () => {
		const answers = await tenCalls("db.call");
		expect(answers).toEqual([...Array(4).fill("SERVICE_UNAVAILABLE"), ...Array(6).fill("ok")]);
	});

	it("after an outage of 500s, Moleculer's breaker opens on the first successes", async () => {
		const answers = await tenCalls("bug.call");
		expect(answers.slice(0, 4)).toEqual(Array(4).fill("INTERNAL"));
		// The 5th call succeeds, and 4 failures of 5 calls open the breaker: refused from then on.
		expect(answers[4]).toBe("ok");
		expect(answers.slice(5)).toEqual(Array(5).fill("SERVICE_NOT_AVAILABLE"));
	});
});
