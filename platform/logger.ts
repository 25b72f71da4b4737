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
 * JSON lines go to stdout through pino's destination (sonic-boom) in synchronous mode with a
 * buffer: a log call appends its line and returns; once 8 KiB are buffered, or every 25 ms
 * (`minLength`, `periodicFlush`), one `write(2)` takes all of it, so a burst of requests costs a
 * write per about sixty lines instead of one per line (the per-line synchronous write cost the
 * cached product read about a fifth of its throughput behind a pipe: docs/performance.md,
 * "Per-request logs"). Nothing is ever in flight: a write either completed or has not started,
 * so the buffer is written whole, in order, by `flushSync` on the process's `exit` event
 * (`process.exit()`, an uncaught exception, an unhandled rejection, the end of the event loop).
 * pino's asynchronous mode (`sync: false`) was used before and lost up to one write's worth of
 * lines (about 16 KiB) when the process exited while a write was in libuv's thread pool and the
 * reader was slow (test/unit/read-path.test.ts caught it in CI). A SIGKILL, or a native crash,
 * loses the lines buffered (at most 8 KiB, 25 ms). When stdout's reader is behind and the pipe is
 * full, a write fails with EAGAIN (Node makes a piped stdout non-blocking) and sonic-boom waits
 * 100 ms and retries, the event loop with it: backpressure from the log reader, never a dropped
 * line. A JSON line may come out after a later `console.log` line of the start scripts. The
 * readable format is written line by line (a development terminal, lines in order with the
 * start scripts' own output).
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

/** Bytes of JSON lines buffered before they are written (sonic-boom's `minLength`). */
const LOG_BATCH_BYTES = 8 * 1024;
/** The longest a buffered JSON line waits to be written, in ms (sonic-boom's `periodicFlush`). */
const LOG_FLUSH_INTERVAL_MS = 25;

let jsonStdout: DestinationStream | null = null;

/**
 * The process's one JSON destination on stdout (every broker of the process shares it): synchronous
 * writes of up to `LOG_BATCH_BYTES` buffered bytes, flushed every `LOG_FLUSH_INTERVAL_MS` and,
 * whole, on the process's `exit` event.
 */
function jsonDestination(): DestinationStream {
	if (!jsonStdout) {
		const dest = pino.destination({
			dest: 1,
			sync: true,
			minLength: LOG_BATCH_BYTES,
			periodicFlush: LOG_FLUSH_INTERVAL_MS
		});
		process.on("exit", () => {
			try {
				dest.flushSync();
			} catch {
				// stdout closed (EPIPE): nothing can be written any more
			}
		});
		jsonStdout = dest;
	}
	return jsonStdout;
}

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
	const destination = json ? jsonDestination() : prettyStream(Boolean(process.stdout.isTTY));
	return {
		type: "Pino",
		options: { level: c.logLevel, pino: { options: pinoOptions(json), destination } }
	} as LoggerConfig;
}
