/**
 * A local OTLP/HTTP trace receiver for tests: an HTTP server on a free 127.0.0.1 port accepting
 * what @opentelemetry/exporter-trace-otlp-http sends (`POST /v1/traces`, `Content-Type:
 * application/json`, body an `ExportTraceServiceRequest` in OTLP's JSON encoding: ids as
 * lowercase hex, attribute values as `{ stringValue | intValue | boolValue | doubleValue |
 * arrayValue }`), decoded for real. It answers 200 `{}` (an ExportTraceServiceResponse with
 * nothing rejected). Anything else (another path or method, another content type, a body that
 * is not such a request) is answered 4xx and kept in `errors()`, so a broken sender fails the
 * test instead of vanishing.
 *
 * Every span is kept flat: `{ traceId, spanId, parentSpanId, name, kind, serviceName, attributes,
 * resource, status, links, traceState, flags }`, `parentSpanId` null for a root span,
 * `serviceName` the `service.name` of the span's resource.
 */
import http from "node:http";

export type OtlpValue = string | number | boolean | null | OtlpValue[];

export interface ReceivedSpan {
	readonly traceId: string;
	readonly spanId: string;
	readonly parentSpanId: string | null;
	readonly name: string;
	/** OTLP's enum: 1 INTERNAL, 2 SERVER, 3 CLIENT, 4 PRODUCER, 5 CONSUMER. */
	readonly kind: number;
	readonly serviceName: string;
	readonly attributes: Readonly<Record<string, OtlpValue>>;
	readonly resource: Readonly<Record<string, OtlpValue>>;
	/** 0 UNSET, 1 OK, 2 ERROR. */
	readonly status: { code: number; message?: string };
	readonly links: readonly { traceId: string; spanId: string }[];
	readonly traceState: string | null;
	readonly flags: number | null;
}

export interface OtlpReceiver {
	/** `http://127.0.0.1:<port>`: the OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`). */
	readonly url: string;
	/** Every span received so far, in arrival order. */
	spans(): ReceivedSpan[];
	/** Export requests decoded. */
	requests(): number;
	/** Requests refused (path, method, content type, undecodable body). */
	errors(): string[];
	stop(): Promise<void>;
}

interface JsonKeyValue {
	key: string;
	value: JsonAnyValue;
}
interface JsonAnyValue {
	stringValue?: string;
	boolValue?: boolean;
	intValue?: string | number;
	doubleValue?: number;
	arrayValue?: { values?: JsonAnyValue[] };
	kvlistValue?: { values?: JsonKeyValue[] };
	bytesValue?: string;
}
interface JsonSpan {
	traceId: string;
	spanId: string;
	parentSpanId?: string;
	name: string;
	kind: number;
	attributes?: JsonKeyValue[];
	status?: { code?: number; message?: string };
	links?: { traceId: string; spanId: string }[];
	traceState?: string;
	flags?: number;
}
interface JsonRequest {
	resourceSpans: {
		resource?: { attributes?: JsonKeyValue[] };
		scopeSpans: { spans?: JsonSpan[] }[];
	}[];
}

function value(v: JsonAnyValue): OtlpValue {
	if (v.stringValue !== undefined) return v.stringValue;
	if (v.boolValue !== undefined) return v.boolValue;
	if (v.intValue !== undefined) return Number(v.intValue);
	if (v.doubleValue !== undefined) return v.doubleValue;
	if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(value);
	if (v.bytesValue !== undefined) return v.bytesValue;
	if (v.kvlistValue !== undefined) return JSON.stringify(attributes(v.kvlistValue.values));
	return null;
}

function attributes(kvs: JsonKeyValue[] | undefined): Record<string, OtlpValue> {
	const out: Record<string, OtlpValue> = {};
	for (const kv of kvs ?? []) out[kv.key] = value(kv.value);
	return out;
}

const HEX = (n: number) => new RegExp(`^[0-9a-f]{${n}}$`);

/** Decodes one export request body. @throws Error when it is not an ExportTraceServiceRequest */
export function decodeTraces(body: string): ReceivedSpan[] {
	const req = JSON.parse(body) as JsonRequest;
	if (!Array.isArray(req.resourceSpans)) throw new Error("no resourceSpans");
	const out: ReceivedSpan[] = [];
	for (const rs of req.resourceSpans) {
		const resource = attributes(rs.resource?.attributes);
		for (const ss of rs.scopeSpans ?? [])
			for (const s of ss.spans ?? []) {
				if (!HEX(32).test(s.traceId)) throw new Error(`bad traceId "${s.traceId}"`);
				if (!HEX(16).test(s.spanId)) throw new Error(`bad spanId "${s.spanId}"`);
				if (s.parentSpanId && !HEX(16).test(s.parentSpanId))
					throw new Error(`bad parentSpanId "${s.parentSpanId}"`);
				out.push({
					traceId: s.traceId,
					spanId: s.spanId,
					parentSpanId: s.parentSpanId || null,
					name: s.name,
					kind: s.kind,
					serviceName: String(resource["service.name"]),
					attributes: attributes(s.attributes),
					resource,
					status: { code: s.status?.code ?? 0, message: s.status?.message },
					links: (s.links ?? []).map(l => ({ traceId: l.traceId, spanId: l.spanId })),
					traceState: s.traceState || null,
					flags: s.flags ?? null
				});
			}
	}
	return out;
}

/** Starts the receiver on a free 127.0.0.1 port. */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
	const spans: ReceivedSpan[] = [];
	const errors: string[] = [];
	let requests = 0;

	const server = http.createServer((req, res) => {
		const reject = (status: number, why: string): void => {
			errors.push(`${req.method} ${req.url}: ${why}`);
			res.writeHead(status, { "Content-Type": "text/plain" }).end(why);
		};
		if (req.method !== "POST" || req.url?.split("?")[0] !== "/v1/traces")
			return reject(404, "only POST /v1/traces");
		const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
		if (type !== "application/json") return reject(415, `unsupported content type "${type}"`);
		const chunks: Buffer[] = [];
		req.on("data", (c: Buffer) => chunks.push(c));
		req.on("end", () => {
			try {
				spans.push(...decodeTraces(Buffer.concat(chunks).toString("utf8")));
				requests++;
				res.writeHead(200, { "Content-Type": "application/json" }).end("{}");
			} catch (err) {
				reject(400, `cannot decode the export request: ${(err as Error).message}`);
			}
		});
	});
	await new Promise<void>((resolve, reject) => {
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => resolve());
	});
	const addr = server.address();
	if (!addr || typeof addr !== "object") throw new Error("The receiver has no address");

	return {
		url: `http://127.0.0.1:${addr.port}`,
		spans: () => [...spans],
		requests: () => requests,
		errors: () => [...errors],
		stop: () =>
			new Promise(resolve => {
				server.closeAllConnections();
				server.close(() => resolve());
			})
	};
}
