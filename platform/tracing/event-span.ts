/**
 * The span of one delivery of a durable event to a consumer (platform/events/inbox.ts runs the
 * handler outside any Moleculer context, so the tracer sees nothing of it by itself).
 *
 * The span (`event '<name>' consumed by '<consumer>'`, kind CONSUMER in OTLP) belongs to the
 * trace of the request that produced the event: Moleculer's trace id is the request id, which
 * the event carries (`requestId`). When the event also carries the producer's span
 * (`producerSpanId`: the Moleculer span that wrote it to the outbox), the consumer's span is
 * that span's child and links to it (OpenTelemetry's messaging conventions: a consumer's span
 * links to the context the message was created in); without it, the span joins the trace as a
 * root of its own. An event of no request (`requestId` null) starts a trace.
 *
 * Tags: `eventID`, `eventName`, `eventSource`, `consumer`, `delivery` (1 for the first),
 * `requestID`, `nodeID`, and the outcome the callback returns (`outcome`: applied, duplicate,
 * failed...), or the error it threw.
 */
import type { ServiceBroker, Span } from "moleculer";

/** What the span needs of a domain event (platform/events/domain-event.ts `DomainEvent`). */
export interface ConsumedEvent {
	readonly id: string;
	readonly name: string;
	readonly source: string;
	/** The producing request's id: Moleculer's trace id. */
	readonly requestId: string | null;
	/** The producer's Moleculer span id, when the event carries it. */
	readonly producerSpanId?: string | null;
}

/**
 * Runs `fn` (one delivery of `event` to `consumer` of service `service`) inside a consumer span
 * (see the module comment). Without tracing it only runs `fn`.
 * @param delivery - 1 for the first delivery
 * @returns what `fn` returns; a string result is the span's `outcome` tag
 * @throws what `fn` throws (the span records it as its error)
 */
export async function traceConsumption<T>(
	broker: ServiceBroker,
	service: string,
	consumer: string,
	event: ConsumedEvent,
	delivery: number,
	fn: () => Promise<T>
): Promise<T> {
	if (!broker.isTracingEnabled()) return fn();
	const producer = event.producerSpanId ?? null;
	const traceID = event.requestId ?? undefined;
	const span: Span = broker.tracer.startSpan(`event '${event.name}' consumed by '${consumer}'`, {
		type: "event",
		service,
		traceID,
		parentID: traceID && producer ? producer : null,
		tags: {
			eventID: event.id,
			eventName: event.name,
			eventSource: event.source,
			consumer,
			delivery,
			requestID: event.requestId,
			nodeID: broker.nodeID
		},
		// Read by platform/tracing/otlp-exporter.ts (Moleculer's SpanOptions have no links).
		...(traceID && producer ? { links: [{ traceID, spanID: producer }] } : {})
	} as Parameters<ServiceBroker["tracer"]["startSpan"]>[1]);
	try {
		const result = await fn();
		if (typeof result === "string") span.addTags({ outcome: result });
		return result;
	} catch (err) {
		span.setError(err as Error);
		throw err;
	} finally {
		span.finish();
	}
}
