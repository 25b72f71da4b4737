/**
 * lib/database-unavailable.ts: which errors mean "the database does not answer" (a real refused
 * connection from Sequelize, pg's broken connections, Postgres's shutdown SQLSTATEs), which do
 * not (a constraint violation, a bad statement, wrong credentials), and the middleware turning the
 * former into SERVICE_UNAVAILABLE (503, retryable) while the latter pass unchanged.
 */
import { ServiceBroker } from "moleculer";
import { Sequelize } from "sequelize";
import {
	DatabaseUnavailableMiddleware,
	isDatabaseUnavailable
} from "../../lib/database-unavailable";
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
