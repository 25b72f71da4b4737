/**
 * The shop's logger: pino through Moleculer's `Pino` logger (moleculer/src/loggers/pino.js makes
 * one pino instance per broker and a child per module with Moleculer's bindings `nodeID`, `ns`,
 * `mod`, `svc`, `ver`).
 *
 * - `LOG_FORMAT=json` (the default when `NODE_ENV=production`): one JSON object per line with
 *   `level` (a name), `time` (ISO 8601), `pid`, `hostname`, the bindings, `requestId` when the line
 *   belongs to a request (platform/request-context.ts), `msg`, and `err` (with its stack) for errors.
 * - `LOG_FORMAT=pretty` (the default otherwise): pino-pretty, one readable line per entry,
 *   `[12:00:00.000] INFO: orders-1/ORDERS [<requestId>]: msg`, colours on a terminal.
 *
 * JSON lines go to stdout through pino's asynchronous destination (sonic-boom, `sync: false`):
 * a log call appends its line to a buffer in memory and returns; one write at a time (libuv's
 * thread pool) takes everything buffered since the previous one (1 380 writes where the
 * synchronous destination made 23 813, one per line, in a benchmark of the same length). The
 * synchronous one cost the cached product read about a fifth of its throughput behind a pipe
 * (docs/performance.md, "Per-request logs"), and once a slow reader filled the pipe a write
 * failed with EAGAIN (Node makes a piped stdout non-blocking) and sonic-boom slept 100 ms,
 * stopping the whole event loop. What is buffered is written synchronously on `process.exit()`,
 * an uncaught exception, an unhandled rejection and at the end of the event loop (pino
 * registers the flush with on-exit-leak-free); a SIGKILL, or a native crash, loses what had
 * not been written yet: usually the lines of the last milliseconds, more while the reader of
 * stdout is behind (the buffer then grows in memory, up to 16 MiB, instead of blocking). A JSON line may come
 * out after a later `console.log` line of the start scripts. The readable format stays
 * synchronous (a development terminal, lines in order with the start scripts' own output).
 *
 * Secrets: values under keys that name a secret (`password`, `token`, `authorization`, `secret`,
 * `cookie`, `jwt`...) are replaced by `[REDACTED]` in every object a log call carries, including
 * an error's `data` (a validation error lists the rejected values: a password's `actual` is
 * redacted too). Messages are the code's own text and never interpolate such values.
 */
import util from "node:util";
import type { LoggerConfig } from "moleculer";
import pino, { type DestinationStream, type LoggerOptions } from "pino";
import type { ShopConfig } from "./config";
import { currentRequestId } from "./request-context";

/** Keys whose values are never logged. */
const SECRET_KEY = /pass(word)?|secret|token|authori[sz]ation|cookie|jwt|api[-_]?key|credential/i;

const REDACTED = "[REDACTED]";

/**
 * A copy of `value` with every secret-looking field replaced by `[REDACTED]` (and, in validation
 * error entries `{ field, actual }`, the `actual` of a secret field). Depth-limited, cycle-safe.
 */
export function redactSecrets(value: unknown, depth = 6, seen = new WeakSet<object>()): unknown {
	if (value === null || typeof value !== "object") return value;
	if (seen.has(value) || depth <= 0) return "[…]";
	seen.add(value);
	if (Array.isArray(value)) return value.map(v => redactSecrets(v, depth - 1, seen));
	if (value instanceof Date || Buffer.isBuffer(value)) return value;
	const out: Record<string, unknown> = {};
	const rec = value as Record<string, unknown>;
	const secretField = typeof rec.field === "string" && SECRET_KEY.test(rec.field);
	for (const [k, v] of Object.entries(rec)) {
		if (SECRET_KEY.test(k) || (secretField && (k === "actual" || k === "expected")))
			out[k] = REDACTED;
		else out[k] = redactSecrets(v, depth - 1, seen);
	}
	return out;
}

/** pino's error serializer, with the error's `data` (Moleculer errors) redacted. */
function serializeError(err: unknown): unknown {
	if (!(err instanceof Error)) return redactSecrets(err);
	const out = pino.stdSerializers.err(err) as unknown as Record<string, unknown>;
	// Wrapped driver errors (Sequelize's `parent` and `original`, the same pg error twice): their
	// type, message and code are enough; the wrapper's stack says where.
	for (const key of ["parent", "original"]) {
		const inner = out[key] as Record<string, unknown> | undefined;
		if (inner && typeof inner === "object")
			out[key] = { type: inner.type, message: inner.message, code: inner.code };
	}
	if (out.original && out.parent) delete out.original;
	// A failed query's bound values may be personal data or hashes: the SQL says enough.
	if (out.parameters !== undefined) out.parameters = REDACTED;
	return redactSecrets(out);
}

/**
 * Moleculer calls `logger.info(...args)` the console way (`"message", err`, `"label:", obj`);
 * pino takes `(mergingObject?, message, ...format args)` and would drop the extra arguments. This
 * hook keeps them: an Error becomes `err`, objects go (redacted) under `data`, other values are
 * appended to the message.
 */
function logMethod(this: pino.Logger, args: unknown[], method: pino.LogFn): void {
	if (args.length === 0) return method.call(this, "");
	const [first, ...rest] = args;
	if (first instanceof Error) {
		const msg = rest.length > 0 ? rest.map(String).join(" ") : first.message;
		return method.call(this, { err: first }, msg);
	}
	if (typeof first !== "string") {
		if (rest.length === 0)
			return method.call(
				this,
				{ data: first },
				typeof first === "object" ? "" : String(first)
			);
		return logMethod.call(this, [util.inspect(first, { depth: 2 }), ...rest], method);
	}
	if (rest.length === 0) return method.call(this, first);
	const merge: Record<string, unknown> = {};
	const words: string[] = [first];
	const objects: unknown[] = [];
	for (const a of rest) {
		if (a instanceof Error && merge.err === undefined) merge.err = a;
		else if (a !== null && typeof a === "object") objects.push(a);
		else words.push(String(a));
	}
	if (objects.length > 0) merge.data = objects.length === 1 ? objects[0] : objects;
	return method.call(this, merge, words.join(" "));
}

/** pino options shared by both formats. */
function pinoOptions(json: boolean): LoggerOptions {
	return {
		// Every child's level is set by Moleculer (LOGLEVEL); the root lets them all through.
		level: "trace",
		timestamp: json ? cachedIsoTime() : pino.stdTimeFunctions.epochTime,
		messageKey: "msg",
		mixin: () => {
			const requestId = currentRequestId();
			return requestId ? { requestId } : {};
		},
		serializers: { err: serializeError, data: v => redactSecrets(v) },
		hooks: { logMethod: logMethod as never },
		...(json ? { formatters: { level: (label: string) => ({ level: label }) } } : {})
	};
}

/** The readable development stream: pino-pretty, synchronous, one line per entry. */
function prettyStream(colors: boolean): DestinationStream {
	// eslint-disable-next-line @typescript-eslint/no-require-imports
	const pretty = require("pino-pretty") as typeof import("pino-pretty");
	return pretty({
		sync: true,
		colorize: colors,
		translateTime: "SYS:HH:MM:ss.l",
		ignore: "pid,hostname,nodeID,ns,mod,svc,ver,requestId",
		errorLikeObjectKeys: ["err"],
		messageFormat: (log, messageKey) => {
			const mod = typeof log.mod === "string" ? log.mod.toUpperCase() : "";
			const where = [log.nodeID, mod].filter(Boolean).join("/");
			const id = log.requestId ? ` [${String(log.requestId)}]` : "";
			return `${where}${id}: ${String(log[messageKey] ?? "")}`;
		}
	}) as unknown as DestinationStream;
}

/**
 * The most the asynchronous JSON destination buffers (16 MiB) while stdout's reader is behind;
 * past it, lines are dropped (sonic-boom's `maxLength`) rather than memory growing without bound.
 */
const LOG_BUFFER_MAX_BYTES = 16 * 1024 * 1024;

/**
 * pino's `isoTime` (`,"time":"<ISO 8601>"`), the string made once per millisecond: every line
 * written in the same millisecond has the same time anyway (`toISOString` per line was 0.9-1.9 %
 * of the cached product read, docs/performance.md "The cached read's remaining cost").
 * @param now - the clock, epoch ms (tests pass their own)
 * @returns pino's `timestamp` function
 */
export function cachedIsoTime(now: () => number = Date.now): () => string {
	let lastMs = Number.NaN;
	let last = "";
	return () => {
		const ms = now();
		if (ms !== lastMs) {
			lastMs = ms;
			last = `,"time":"${new Date(ms).toISOString()}"`;
		}
		return last;
	};
}

/**
 * The broker's `logger` option: Moleculer's Pino logger writing JSON lines or readable lines to
 * stdout, per `LOG_FORMAT`.
 */

export function shopLogger(c: Pick<ShopConfig, "logFormat" | "logLevel">): LoggerConfig {
	const json = c.logFormat === "json";
	const destination = json
		? pino.destination({ dest: 1, sync: false, maxLength: LOG_BUFFER_MAX_BYTES })
		: prettyStream(Boolean(process.stdout.isTTY));
	return {
		type: "Pino",
		options: { level: c.logLevel, pino: { options: pinoOptions(json), destination } }
	} as LoggerConfig;
}
