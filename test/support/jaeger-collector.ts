/**
 * A local Jaeger-compatible collector for tests: an HTTP server on a free 127.0.0.1 port that
 * accepts what jaeger-client's HTTPSender sends (`POST /api/traces`, `Content-Type:
 * application/x-thrift`, body a Thrift *binary* encoded `Batch` of jaeger.thrift) and decodes it
 * for real, the way jaeger-client encodes it: `thriftrw` (jaeger-client's own dependency) loaded
 * with the IDL jaeger-client ships (`dist/src/jaeger-idl/thrift/jaeger.thrift`, as its
 * `dist/src/thrift.js` loads it). A body that does not decode is answered 400 and kept in
 * `errors()`, so a broken sender fails the test instead of vanishing.
 *
 * Every span is kept as `{ traceId, spanId, parentSpanId, operationName, serviceName, tags }`:
 * ids in lowercase hex (the trace id from traceIdHigh/traceIdLow, 16 digits when the high half is
 * zero as with Moleculer's 64-bit "legacy" ids, else 32), `parentSpanId` null for a root span,
 * `serviceName` the batch's `process.serviceName`.
 */
import fs from "node:fs";
import http from "node:http";
import path from "node:path";

/** A decoded tag value (LONG as a decimal string, BINARY as hex). */
export type TagValue = string | number | boolean | null;

export interface CollectedSpan {
	readonly traceId: string;
	readonly spanId: string;
	/** `null` for a root span (parentSpanId 0). */
	readonly parentSpanId: string | null;
	readonly operationName: string;
	/** `process.serviceName` of the batch the span came in. */
	readonly serviceName: string;
	readonly tags: Readonly<Record<string, TagValue>>;
	/** `process.tags` of that batch (hostname, ip, jaeger.version, client-uuid...). */
	readonly processTags: Readonly<Record<string, TagValue>>;
}

export interface JaegerCollector {
	/** `http://127.0.0.1:<port>`; jaeger-client's endpoint is `${url}/api/traces`. */
	readonly url: string;
	/** Every span received so far, in arrival order. */
	spans(): CollectedSpan[];
	/** How many batches were decoded. */
	batches(): number;
	/** Requests that were rejected (wrong path, method, content type, undecodable body). */
	errors(): string[];
	stop(): Promise<void>;
}

/* The part of thriftrw's API used here (it ships no types). */
interface ThriftTag {
	key: string;
	vType: string;
	vStr: string | null;
	vDouble: number | null;
	vBool: boolean | null;
	vLong: Buffer | null;
	vBinary: Buffer | null;
}
interface ThriftSpan {
	traceIdLow: Buffer;
	traceIdHigh: Buffer;
	spanId: Buffer;
	parentSpanId: Buffer;
	operationName: string;
	tags: ThriftTag[] | null;
}
interface ThriftBatch {
	process: { serviceName: string; tags: ThriftTag[] | null };
	spans: ThriftSpan[];
}
interface ThriftResult<T> {
	err: Error | null;
	value: T;
}
interface JaegerThrift {
	Batch: { rw: { fromBuffer(buffer: Buffer): ThriftResult<ThriftBatch> } };
}
interface ThriftModule {
	Thrift: new (opts: { source: string; allowOptionalArguments?: boolean }) => JaegerThrift;
}

/** The jaeger.thrift IDL jaeger-client encodes with (next to its dist/src/thrift.js). */
export function jaegerThriftIdl(): string {
	const thriftJs = require.resolve("jaeger-client/dist/src/thrift.js");
	return fs.readFileSync(
		path.join(path.dirname(thriftJs), "jaeger-idl", "thrift", "jaeger.thrift"),
		"ascii"
	);
}

/** A Thrift model of jaeger.thrift, built as jaeger-client's HTTPSender builds its own. */
export function jaegerThrift(): JaegerThrift {
	const { Thrift } = require("thriftrw") as ThriftModule;
	return new Thrift({ source: jaegerThriftIdl(), allowOptionalArguments: true });
}

const isZero = (b: Buffer): boolean => b.every(x => x === 0);

function traceIdHex(high: Buffer, low: Buffer): string {
	return isZero(high) ? low.toString("hex") : high.toString("hex") + low.toString("hex");
}

function tagValue(t: ThriftTag): TagValue {
	switch (t.vType) {
		case "STRING":
			return t.vStr;
		case "DOUBLE":
			return t.vDouble;
		case "BOOL":
			return t.vBool;
		case "LONG":
			return t.vLong ? t.vLong.readBigInt64BE(0).toString() : null;
		case "BINARY":
			return t.vBinary ? t.vBinary.toString("hex") : null;
		default:
			throw new Error(`Unknown tag type ${t.vType} of tag ${t.key}`);
	}
}

function tagMap(tags: ThriftTag[] | null): Record<string, TagValue> {
	const out: Record<string, TagValue> = {};
	for (const t of tags ?? []) out[t.key] = tagValue(t);
	return out;
}

/** Decodes one `POST /api/traces` body into spans. @throws Error when it is not a Batch */
export function decodeBatch(thrift: JaegerThrift, body: Buffer): CollectedSpan[] {
	const res = thrift.Batch.rw.fromBuffer(body);
	if (res.err) throw res.err;
	const batch = res.value;
	const serviceName = batch.process.serviceName;
	const processTags = tagMap(batch.process.tags);
	return batch.spans.map(s => ({
		traceId: traceIdHex(s.traceIdHigh, s.traceIdLow),
		spanId: s.spanId.toString("hex"),
		parentSpanId: isZero(s.parentSpanId) ? null : s.parentSpanId.toString("hex"),
		operationName: s.operationName,
		serviceName,
		tags: tagMap(s.tags),
		processTags
	}));
}

/** Content types a Jaeger collector accepts for Thrift binary batches. */
const THRIFT_TYPES = ["application/x-thrift", "application/vnd.apache.thrift.binary"];

/** Starts the collector on a free 127.0.0.1 port. */
export async function startJaegerCollector(): Promise<JaegerCollector> {
	const thrift = jaegerThrift();
	const spans: CollectedSpan[] = [];
	const errors: string[] = [];
	let batches = 0;

	const server = http.createServer((req, res) => {
		const reject = (status: number, why: string): void => {
			errors.push(`${req.method} ${req.url}: ${why}`);
			res.writeHead(status, { "Content-Type": "text/plain" }).end(why);
		};
		if (req.method !== "POST" || req.url?.split("?")[0] !== "/api/traces")
			return reject(404, "only POST /api/traces");
		const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
		if (!THRIFT_TYPES.includes(type)) return reject(415, `unsupported content type "${type}"`);
		const chunks: Buffer[] = [];
		req.on("data", (c: Buffer) => chunks.push(c));
		req.on("end", () => {
			try {
				spans.push(...decodeBatch(thrift, Buffer.concat(chunks)));
				batches++;
				res.writeHead(202).end();
			} catch (err) {
				reject(400, `cannot decode the Thrift Batch: ${(err as Error).message}`);
			}
		});
	});
	await new Promise<void>((resolve, reject) => {
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => resolve());
	});
	const addr = server.address();
	if (!addr || typeof addr !== "object") throw new Error("The collector has no address");

	return {
		url: `http://127.0.0.1:${addr.port}`,
		spans: () => [...spans],
		batches: () => batches,
		errors: () => [...errors],
		stop: () =>
			new Promise(resolve => {
				server.closeAllConnections();
				server.close(() => resolve());
			})
	};
}
