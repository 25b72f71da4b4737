/**
 * A database that does not answer is an outage, not a bug: `DatabaseUnavailableMiddleware` turns
 * the errors of an unreachable Postgres (refused, reset or timed-out connections, a server
 * shutting down or starting up, a pool that cannot get a connection) thrown by any local action
 * into `SERVICE_UNAVAILABLE` (503, retryable; platform/errors.ts), with the service's name in `data`.
 *
 * Without it they left the action as whatever Sequelize or pg threw, which the gateway answers as
 * 500 INTERNAL_ERROR (the chaos suite saw one for every request during a Postgres restart), and
 * which callers cannot tell from a bug: the order saga took a participant's database outage for
 * a permanent failure of its step, compensating the order (`PROCESSING_FAILED`) instead of
 * retrying it, and after the pivot parking the saga (`FAILED`) with the order left `CONFIRMING`.
 * As `SERVICE_UNAVAILABLE` the saga retries the step until its deadline, the broker's retry
 * policy retries calls that are safe to repeat, and clients get 503 with `Retry-After`.
 *
 * Errors of the database that are not about reaching it (constraint violations, a bad query,
 * wrong credentials) pass unchanged.
 *
 * `circuitBreakerFailure` (the broker's `circuitBreaker.check`) does not count such an outage
 * against the endpoint: a database down fails every node of the service alike, so opening one
 * node's breaker routes nothing elsewhere, and its failures linger in the breaker's 60 s window.
 * Moleculer evaluates the failure rate on successes too, so the first successful calls after the
 * database is back opened the breaker of a healthy endpoint: the chaos suite saw `orders.get`
 * refused (503) 11 s after a Postgres restart had ended.
 *
 * Nor does it count a backpressure refusal (`ORDERS_OVERLOADED`, 503 + `Retry-After`): the node
 * is healthy and answering exactly as designed. Counted, an overload opened the breaker of
 * `orders.create` and every order was refused for the breaker's half-open time after the load
 * had gone (`npm run bench`: all 172 orders of the half-load run after a full-load run).
 *
 * Nor a failure tied to one request rather than to the endpoint (`data.scope: "request"`, e.g.
 * the simulated processor's `tok_processorUnavailable`, services/payments/payments.service.ts): the breaker
 * counts the processor's failures, not one card's. Counted, a dozen orders of one customer with
 * that token opened the breaker of `payments.charge` and every other customer's order waited for
 * its half-open time (test/unit/payments-isolation.test.ts: 9 of 10 `tok_visa` orders still
 * unconfirmed after 15 s). A whole processor down (`scope: "processor"`) still counts.
 */
import type { Context, Middleware } from "moleculer";
import { shopError } from "../errors";

/** Sequelize's errors for a connection that could not be made or obtained. */
const CONNECTION_ERROR_NAMES = new Set([
	"SequelizeConnectionError",
	"SequelizeConnectionRefusedError",
	"SequelizeConnectionTimedOutError",
	"SequelizeHostNotFoundError",
	"SequelizeHostNotReachableError",
	"SequelizeConnectionAcquireTimeoutError",
	"SequelizeInvalidConnectionError"
]);

/** Network errors of the socket to the server (raw from pg, or under Sequelize's). */
const NETWORK_CODES = new Set([
	"ECONNREFUSED",
	"ENOTFOUND",
	"ECONNRESET",
	"EPIPE",
	"ETIMEDOUT",
	"EHOSTUNREACH",
	"ENETUNREACH",
	"EAI_AGAIN"
]);

/**
 * Postgres SQLSTATEs of an unreachable server: class 08 (connection exception), 57P01
 * admin_shutdown (a fast or smart shutdown ends the session), 57P02 crash_shutdown, 57P03
 * cannot_connect_now (starting up, shutting down, in recovery).
 */
const UNAVAILABLE_SQLSTATE = /^(08...|57P0[123])$/;

/**
 * What pg says when its connection broke under a query, and what its pool (platform/db/pool.ts)
 * says when no connection came in time (Sequelize's `ConnectionAcquireTimeoutError`).
 */
const BROKEN_CONNECTION =
	/Connection terminated|connection error and is not queryable|Client was closed and is not queryable|the database system is (shutting down|starting up|in recovery mode)|timeout exceeded when trying to connect/i;

/**
 * Whether `err` (or the error it wraps: Sequelize's `parent`/`original`, `cause`) says that the
 * database could not be reached, as opposed to an error of the statement itself. Recognises
 * Sequelize's connection errors and the raw errors of pg and its pool alike.
 */
export function isDatabaseUnavailable(err: unknown, depth = 0): boolean {
	if (typeof err !== "object" || err === null || depth > 3) return false;
	const e = err as {
		name?: unknown;
		code?: unknown;
		message?: unknown;
		parent?: unknown;
		original?: unknown;
		cause?: unknown;
		syscall?: unknown;
	};
	if (typeof e.name === "string" && CONNECTION_ERROR_NAMES.has(e.name)) return true;
	if (
		typeof e.code === "string" &&
		(NETWORK_CODES.has(e.code) || UNAVAILABLE_SQLSTATE.test(e.code))
	)
		return true;
	// Over a Unix socket, a stopped server's socket file is gone: `connect ENOENT`.
	if (e.code === "ENOENT" && e.syscall === "connect") return true;
	if (typeof e.message === "string" && BROKEN_CONNECTION.test(e.message)) return true;
	return [e.parent, e.original, e.cause].some(
		inner => inner !== err && isDatabaseUnavailable(inner, depth + 1)
	);
}

/** Whether `err` is the `SERVICE_UNAVAILABLE` this middleware makes of a database outage. */
export function isDatabaseOutageError(err: unknown): boolean {
	const e = err as { type?: unknown; data?: { dependency?: unknown } } | null;
	return e?.type === "SERVICE_UNAVAILABLE" && e.data?.dependency === "database";
}

/**
 * The circuit breaker's failure check (`circuitBreaker.check`): a 5xx counts against the
 * endpoint, except a database outage, a backpressure refusal and a failure tied to one request
 * (`data.scope: "request"`) (see above).
 */
export function circuitBreakerFailure(err: unknown): boolean {
	const e = err as { type?: unknown; data?: { scope?: unknown } } | null;
	if (e?.type === "ORDERS_OVERLOADED") return false;
	if (e?.data?.scope === "request") return false;
	return Number((err as { code?: unknown } | null)?.code) >= 500 && !isDatabaseOutageError(err);
}

/** Least time between two warnings of one node, in ms. */
const WARN_EVERY_MS = 10_000;

/** Turns database outages thrown by local actions into `SERVICE_UNAVAILABLE` (see above). */
export const DatabaseUnavailableMiddleware: Middleware = {
	name: "DatabaseUnavailable",
	localAction(next: (ctx: Context) => Promise<unknown>) {
		let lastWarnAt = 0;
		let suppressed = 0;
		return function databaseUnavailable(this: unknown, ctx: Context): Promise<unknown> {
			let result: Promise<unknown>;
			try {
				result = Promise.resolve(next.call(this, ctx));
			} catch (err) {
				result = Promise.reject(err);
			}
			return result.catch((err: unknown) => {
				if (!isDatabaseUnavailable(err)) throw err;
				const service = (ctx.service as { name?: string } | undefined)?.name;
				const now = Date.now();
				if (now - lastWarnAt >= WARN_EVERY_MS) {
					const more =
						suppressed > 0 ? ` (${suppressed} more since the last warning)` : "";
					ctx.broker
						.getLogger("database")
						.warn(
							`${ctx.action?.name}: the database does not answer${more}: ${(err as Error).message}`
						);
					lastWarnAt = now;
					suppressed = 0;
				} else suppressed++;
				throw shopError("SERVICE_UNAVAILABLE", "The database does not answer", {
					service,
					dependency: "database"
				});
			});
		};
	}
} as unknown as Middleware;
