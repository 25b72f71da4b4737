/**
 * The request id of the work in progress, for log correlation: an `AsyncLocalStorage` holding the
 * Moleculer context's `requestID` (the client's `X-Request-ID`, or one Moleculer generated).
 *
 * `RequestContextMiddleware` runs every local action and event handler inside the store with its
 * context's `requestID`, so everything the handler does, awaited or not (the saga it launches,
 * the after-commit hooks of its transactions), sees the id; platform/logger.ts adds it to every log
 * line as `requestId`. Moleculer carries `requestID` to other nodes with each call, so a request's
 * lines share one id across the cluster. Work that outlives its request on purpose (saga
 * recovery, outbox relay, durable consumers) sets the id it belongs to with `withRequestId`.
 *
 * The store only feeds log lines: it never becomes a call's `requestID` (that is also the tracing
 * trace id, and a call made without its parent span would start a second root in the trace).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { Context, Middleware } from "moleculer";

interface RequestStore {
	readonly requestId: string;
}

const storage = new AsyncLocalStorage<RequestStore | undefined>();

/** The request id of the current asynchronous context, if any. */
export function currentRequestId(): string | undefined {
	return storage.getStore()?.requestId;
}

/**
 * Runs `fn` with `requestId` as the current request id; with `null`/`undefined`, with none (the
 * caller's id does not leak into work that belongs to no request, or to another one).
 */
export function withRequestId<T>(requestId: string | null | undefined, fn: () => T): T {
	return storage.run(requestId ? { requestId } : undefined, fn);
}

/**
 * Runs `next(ctx)` with the context's `requestID` current: in a new store, unless the current one
 * already holds that id (a local call made by a handler of the same request, such as the
 * gateway's call of `products.get`: the store would be the same, and `storage.run` costs a new
 * asynchronous context frame per call). Without a `requestID`, as it is.
 */
function runWithRequestId(self: unknown, next: (ctx: Context) => unknown, ctx: Context): unknown {
	const id = ctx.requestID;
	if (!id || storage.getStore()?.requestId === id) return next.call(self, ctx);
	return storage.run({ requestId: id }, () => next.call(self, ctx));
}

/** Wraps local action and event handlers: they run with their context's `requestID` current. */
export const RequestContextMiddleware: Middleware = {
	name: "RequestContext",
	localAction(next: (ctx: Context) => unknown) {
		return function requestContext(this: unknown, ctx: Context): unknown {
			return runWithRequestId(this, next, ctx);
		};
	},
	localEvent(next: (ctx: Context) => unknown) {
		return function requestContext(this: unknown, ctx: Context): unknown {
			return runWithRequestId(this, next, ctx);
		};
	}
} as unknown as Middleware;
