/**
 * `OtlpTraceExporter`: a Moleculer trace exporter (on `BaseTraceExporter`, registered as
 * `"OTLP"`) that sends every finished, sampled span over OTLP/HTTP (JSON) with OpenTelemetry's
 * own packages: each Moleculer span becomes an OpenTelemetry `ReadableSpan`, batched by the SDK's
 * `BatchSpanProcessor` (@opentelemetry/sdk-trace) and sent by `OTLPTraceExporter`
 * (@opentelemetry/exporter-trace-otlp-http) to `<endpoint>/v1/traces`. Moleculer 0.15 has no
 * OTLP exporter; this follows its own Jaeger and Zipkin exporters
 * (moleculer/src/tracing/exporters/jaeger.js, zipkin.js): one span in, tags flattened.
 *
 * The conversion:
 * - ids: `w3cTraceId(span.traceID)`, `w3cSpanId(span.id)`, parent `w3cSpanId(span.parentID)`
 *   (platform/tracing/trace-context.ts), so the spans of a request joined to an incoming
 *   `traceparent` carry its trace id, and a parent id maps alike on every node;
 * - `service.name`: the Moleculer service that ran the span (`api`, `orders`...), on a node of
 *   several services too (`npm start`); `OTEL_SERVICE_NAME`, else a `service.name` in
 *   `OTEL_RESOURCE_ATTRIBUTES`, names every span of the node instead; a span of no service
 *   gets the broker's namespace (`shop`). One `Resource` per name, with the
 *   `OTEL_RESOURCE_ATTRIBUTES`, `service.namespace` (the broker's namespace),
 *   `service.instance.id` (the nodeID) and the SDK's `telemetry.sdk.*`;
 * - kind: `SERVER` for an action span that starts a node's part of the request (a call from
 *   another node, or the gateway's root call), `CONSUMER` for an event span, else `INTERNAL`;
 * - attributes: the span's tags flattened (`action.name`, `nodeID`, `requestID`...; the shop keeps
 *   params and meta out of them, moleculer.config.ts), `span.type`, the error's fields
 *   (`error.name`, `error.type`, `error.code`...) with status `ERROR` and its message;
 * - events: the span's logs; links: `opts.links` of a span started with them (`{ traceID,
 *   spanID }`, mapped as the ids above); `traceState`: the request's `ctx.meta.tracestate`.
 *
 * Export failures are logged by OpenTelemetry's diagnostics (off by default) and never reach a
 * request: a span that cannot be sent is dropped. `stop()` flushes what is queued.
 */
import {
	SpanKind,
	SpanStatusCode,
	TraceFlags,
	type Attributes,
	type AttributeValue,
	type Link,
	type SpanContext
} from "@opentelemetry/api";
import { millisToHrTime, TraceState, type InstrumentationScope } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { defaultResource, resourceFromAttributes, type Resource } from "@opentelemetry/resources";
import {
	BatchSpanProcessor,
	type ReadableSpan,
	type SpanExporter,
	type SpanProcessor,
	type TimedEvent
} from "@opentelemetry/sdk-trace";
import { TracerExporters, type Span, type Tracer } from "moleculer";
import { TRACESTATE_META, w3cSpanId, w3cTraceId } from "./trace-context";

/** The name the exporter is registered under (`tracing.exporter.type`). */
export const OTLP_TRACE_EXPORTER = "OTLP";

export interface OtlpTraceExporterOptions {
	/** The OTLP/HTTP traces URL, e.g. `http://jaeger:4318/v1/traces`. */
	url: string;
	/** `service.name` of every span; `null`/absent: the Moleculer service of each span. */
	serviceName?: string | null;
	/** More resource attributes (`OTEL_RESOURCE_ATTRIBUTES`). */
	resourceAttributes?: Readonly<Record<string, string>>;
	/** The longest a finished span waits before it is sent, in ms (the SDK's default: 5000). */
	scheduleDelayMs?: number;
	/** The span exporter instead of OTLP/HTTP to `url` (tests). */
	spanExporter?: SpanExporter;
}

/** A link a span was started with (`tracer.startSpan(name, { links })`): Moleculer's ids. */
export interface MoleculerSpanLink {
	traceID: string;
	spanID: string;
	attributes?: Attributes;
}

/** Moleculer span fields the typings leave out (span.js sets them). */
type MoleculerSpan = Span & {
	opts: Span["opts"] & {
		ctx?: { meta?: Record<string, unknown> };
		links?: MoleculerSpanLink[];
	};
};

const BaseTraceExporter = TracerExporters.Base as unknown as new (opts: object) => {
	tracer: Tracer;
	broker: Tracer["broker"];
	logger: { warn(...args: unknown[]): void; info(...args: unknown[]): void };
	init(tracer: Tracer): void;
	flattenTags(
		obj: Record<string, unknown>,
		convertToString?: boolean,
		path?: string
	): Record<string, unknown> | null;
	errorToObject(err: Error | boolean): Record<string, unknown> | null;
};

/** An attribute value OTLP can carry: a primitive, or a list of one primitive type; else JSON. */
function attributeValue(v: unknown): AttributeValue | undefined {
	if (v === null || v === undefined) return undefined;
	if (typeof v === "string" || typeof v === "boolean") return v;
	if (typeof v === "number") return Number.isFinite(v) ? v : String(v);
	if (typeof v === "bigint") return v.toString();
	if (Array.isArray(v)) {
		const kinds = new Set(v.map(x => typeof x));
		if (
			v.length > 0 &&
			kinds.size === 1 &&
			["string", "number", "boolean"].includes([...kinds][0]!)
		)
			return v as AttributeValue;
	}
	try {
		return JSON.stringify(v);
	} catch {
		return String(v);
	}
}

export class OtlpTraceExporter extends BaseTraceExporter {
	private readonly options: OtlpTraceExporterOptions;
	private processor: SpanProcessor | null = null;
	private readonly resources = new Map<string, Resource>();
	private scope: InstrumentationScope = { name: "moleculer" };

	constructor(opts: OtlpTraceExporterOptions) {
		super({});
		this.options = opts;
	}

	/** Creates the OTLP exporter and the batch processor (Moleculer calls it at broker creation). */
	override init(tracer: Tracer): void {
		super.init(tracer);
		const exporter =
			this.options.spanExporter ?? new OTLPTraceExporter({ url: this.options.url });
		this.processor = new BatchSpanProcessor({
			exporter,
			scheduledDelayMillis: this.options.scheduleDelayMs ?? 5_000
		});
		this.scope = {
			name: "moleculer",
			version: (this.broker.constructor as { MOLECULER_VERSION?: string }).MOLECULER_VERSION
		};
		this.logger.info(
			`OTLP trace exporter: ${this.options.spanExporter ? "custom span exporter" : this.options.url}`
		);
	}

	/** Sends what is queued, then closes the exporter. */
	async stop(): Promise<void> {
		const p = this.processor;
		this.processor = null;
		if (p) await p.shutdown();
	}

	/** Sends what is queued now (tests, shutdown). */
	async flush(): Promise<void> {
		await this.processor?.forceFlush();
	}

	/** Queues a finished span (Moleculer calls it for sampled spans only). */
	spanFinished(span: Span): void {
		if (!this.processor) return;
		this.processor.onEnd(this.toReadableSpan(span as MoleculerSpan));
	}

	/** The OpenTelemetry span of a finished Moleculer span (see the module comment). */
	toReadableSpan(span: MoleculerSpan): ReadableSpan {
		const traceId = w3cTraceId(span.traceID);
		const meta = span.opts.ctx?.meta;
		const rawState = meta?.[TRACESTATE_META];
		const traceState = typeof rawState === "string" ? new TraceState(rawState) : undefined;
		const sc: SpanContext = {
			traceId,
			spanId: w3cSpanId(span.id),
			traceFlags: TraceFlags.SAMPLED,
			traceState
		};
		const tags = span.tags as Record<string, unknown>;
		const remoteParent =
			tags.remoteCall === true || (tags.callingLevel === 1 && span.parentID != null);
		const parent: SpanContext | undefined = span.parentID
			? {
					traceId,
					spanId: w3cSpanId(span.parentID),
					traceFlags: TraceFlags.SAMPLED,
					isRemote: remoteParent,
					traceState
				}
			: undefined;
		const kind =
			span.type === "event"
				? SpanKind.CONSUMER
				: span.type === "action" && (remoteParent || !span.parentID)
					? SpanKind.SERVER
					: SpanKind.INTERNAL;

		const attributes: Attributes = {};
		const flat = {
			...(this.flattenTags({ ...tags, span: { type: span.type } }) ?? {}),
			...(span.error
				? (this.flattenTags(this.errorToObject(span.error) ?? {}, false, "error") ?? {})
				: {})
		};
		for (const [k, v] of Object.entries(flat)) {
			const value = attributeValue(v);
			if (value !== undefined) attributes[k] = value;
		}
		if (span.error) attributes.error = true;

		const start = span.startTime ?? Date.now();
		const end = span.finishTime ?? start;
		const events: TimedEvent[] = span.logs.map(log => {
			const eventAttributes: Attributes = {};
			for (const [k, v] of Object.entries(this.flattenTags(log.fields ?? {}) ?? {})) {
				const value = attributeValue(v);
				if (value !== undefined) eventAttributes[k] = value;
			}
			return { name: log.name, time: millisToHrTime(log.time), attributes: eventAttributes };
		});
		const links: Link[] = (span.opts.links ?? []).map(l => ({
			context: {
				traceId: w3cTraceId(l.traceID),
				spanId: w3cSpanId(l.spanID),
				traceFlags: TraceFlags.SAMPLED,
				isRemote: true
			},
			attributes: l.attributes
		}));
		const errorMessage =
			span.error && typeof span.error === "object" ? span.error.message : undefined;

		return {
			name: span.name,
			kind,
			spanContext: () => sc,
			parentSpanContext: parent,
			startTime: millisToHrTime(start),
			endTime: millisToHrTime(end),
			duration: millisToHrTime(Math.max(0, end - start)),
			status: span.error
				? { code: SpanStatusCode.ERROR, message: errorMessage }
				: { code: SpanStatusCode.UNSET },
			attributes,
			links,
			events,
			ended: true,
			resource: this.resourceOf(span.service?.fullName ?? span.service?.name ?? null),
			instrumentationScope: this.scope,
			droppedAttributesCount: 0,
			droppedEventsCount: 0,
			droppedLinksCount: 0
		};
	}

	/** The resource of the spans of Moleculer service `service` (one object per name: OTLP groups by it). */
	private resourceOf(service: string | null): Resource {
		const name =
			this.options.serviceName ??
			this.options.resourceAttributes?.["service.name"] ??
			service ??
			this.broker.namespace ??
			"moleculer";
		let resource = this.resources.get(name);
		if (!resource) {
			resource = defaultResource().merge(
				resourceFromAttributes({
					...(this.broker.namespace
						? { "service.namespace": this.broker.namespace }
						: {}),
					"service.instance.id": this.broker.nodeID,
					...this.options.resourceAttributes,
					"service.name": name
				})
			);
			this.resources.set(name, resource);
		}
		return resource;
	}
}

TracerExporters.register(
	OTLP_TRACE_EXPORTER,
	OtlpTraceExporter as unknown as Parameters<typeof TracerExporters.register>[1]
);
