/**
 * W3C Trace Context (www.w3.org/TR/trace-context/) for Moleculer's tracer.
 *
 * Moleculer's trace id is the context's `requestID` (the client's `X-Request-ID`, or a UUID it
 * generates) and a span's id is its context's `id` (a UUID). OpenTelemetry and the W3C header
 * need 32 lowercase hex digits for a trace id and 16 for a span id. The ids are mapped, the same
 * on every node and with no state, by `w3cTraceId` and `w3cSpanId`:
 *
 * - a trace id that already is 32 hex digits stays (lowercased); a UUID loses its dashes; any
 *   other request id becomes the first 32 hex digits of its SHA-256;
 * - a span id that already is 16 hex digits stays (the parent id of an incoming `traceparent`);
 *   any other (Moleculer's UUIDs) becomes the first 16 hex digits of its SHA-256.
 *
 * The gateway (services/api/api.service.ts) joins an incoming `traceparent` (`acceptTraceContext`):
 * its trace id becomes the request id, so Moleculer carries it to every node, into the saga's
 * steps (platform/saga/call.ts) and onto the durable events (their `requestId`); its parent id
 * becomes the gateway span's parent. The answer carries a `traceparent` naming the gateway's span
 * (`answerTraceContext`). Parsing and writing the headers is @opentelemetry/core's
 * W3CTraceContextPropagator's (the validation of the specification: version `ff`, all-zero ids,
 * upper-case hex, a version 00 header with more fields are refused; `tracestate` parsed into
 * at most 32 valid members, 512 characters); the answer's header, made of ids valid by
 * construction, is written directly (`traceparentOf`).
 *
 * Cost: every answer maps two ids. SHA-256 is Node's one-shot `crypto.hash` (≈ 0.3 µs; a
 * `createHash` object, update and digest took ≈ 2 µs), UUIDs are recognised without lower-casing
 * or a replace, and the header is a template string, not the propagator's `inject` (with its
 * context objects): `traceparentOf` took 3.1-3.3 µs of CPU before, 0.9 µs after
 * (docs/performance.md, "The cached read's remaining cost").
 */
import crypto from "node:crypto";
import type { IncomingHttpHeaders, ServerResponse } from "node:http";
import { defaultTextMapGetter, ROOT_CONTEXT, trace, TraceFlags } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";

const propagator = new W3CTraceContextPropagator();

const HEX32 = /^[0-9a-fA-F]{32}$/;
const HEX16 = /^[0-9a-fA-F]{16}$/;
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const ZEROS = /^0+$/;
const UPPER = /[A-F]/;

/** SHA-256 of `s` in hex: Node's one-shot hash (no Hash object per call). */
const sha256Hex = (s: string): string => crypto.hash("sha256", s, "hex");

/** `s` lower-cased, without a copy when it has no upper-case hex digit (the usual case). */
const lowerHex = (s: string): string => (UPPER.test(s) ? s.toLowerCase() : s);

/**
 * The W3C trace id (32 lowercase hex digits, not all zero) of Moleculer trace id (request id)
 * `id`: itself when it is 32 hex digits, a UUID without its dashes, else the first 32 hex digits
 * of SHA-256(`id`). Deterministic: every node maps a request id alike.
 */
export function w3cTraceId(id: string): string {
	if (id.length === 32 && HEX32.test(id) && !ZEROS.test(id)) return lowerHex(id);
	if (id.length === 36 && UUID.test(id)) {
		const hex = lowerHex(
			id.slice(0, 8) + id.slice(9, 13) + id.slice(14, 18) + id.slice(19, 23) + id.slice(24)
		);
		if (!ZEROS.test(hex)) return hex;
	}
	return sha256Hex(id).slice(0, 32);
}

/**
 * The W3C span id (16 lowercase hex digits, not all zero) of Moleculer span id `id`: itself when
 * it is 16 hex digits (a remote parent from `traceparent`), else the first 16 hex digits of
 * SHA-256(`id`). Deterministic: a parent's id maps alike on the node that ran the parent.
 */
export function w3cSpanId(id: string): string {
	if (id.length === 16 && HEX16.test(id) && !ZEROS.test(id)) return lowerHex(id);
	return sha256Hex(id).slice(0, 16);
}

/** An incoming trace context: the caller's span, its sampling decision, its `tracestate`. */
export interface IncomingTraceContext {
	/** 32 lowercase hex digits. */
	readonly traceId: string;
	/** The caller's span: 16 lowercase hex digits. */
	readonly parentSpanId: string;
	/** The `sampled` flag: whether the caller records this trace. */
	readonly sampled: boolean;
	/** The valid members of `tracestate`, serialized; `null` when none. */
	readonly traceState: string | null;
}

/**
 * The W3C trace context of request headers (`traceparent`, `tracestate`; Node's lower-case
 * names, repeated `tracestate` headers joined), or `null` when `traceparent` is missing or
 * invalid (then `tracestate` is ignored too, as the specification says).
 */
export function extractTraceContext(headers: IncomingHttpHeaders): IncomingTraceContext | null {
	const ctx = propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
	const sc = trace.getSpanContext(ctx);
	if (!sc) return null;
	const state = sc.traceState?.serialize() ?? "";
	return {
		traceId: sc.traceId,
		parentSpanId: sc.spanId,
		sampled: (sc.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED,
		traceState: state === "" ? null : state
	};
}

/** `ctx.meta` key of the request's `tracestate` (the exporter puts it on the request's spans). */
export const TRACESTATE_META = "tracestate";

/** The part of Moleculer's calling options the gateway's root call sets from a trace context. */
export interface TraceCallOptions {
	requestID?: string;
	parentSpan?: { id: string; traceID: string; sampled: boolean };
	meta?: Record<string, unknown>;
}

/**
 * Joins the request's root call to an incoming `traceparent` (moleculer-web's `rootCallOptions`):
 * the request id becomes its trace id (Moleculer's trace id; the client's `X-Request-ID`, if
 * also sent, is dropped: the gateway's span keeps it as the `clientRequestID` tag), the caller's
 * span becomes the gateway span's parent and its `sampled` flag decides whether the request is
 * recorded; a `tracestate` goes to `ctx.meta.tracestate`. No valid `traceparent`: nothing changes.
 * @returns the trace context joined, or `null`
 */
export function acceptTraceContext(
	options: TraceCallOptions,
	headers: IncomingHttpHeaders
): IncomingTraceContext | null {
	const tc = extractTraceContext(headers);
	if (!tc) return null;
	options.requestID = tc.traceId;
	options.parentSpan = { id: tc.parentSpanId, traceID: tc.traceId, sampled: tc.sampled };
	if (tc.traceState) options.meta = { ...options.meta, [TRACESTATE_META]: tc.traceState };
	return tc;
}

/** What `traceparentOf` needs of a Moleculer context. */
export interface TracedContext {
	readonly id: string;
	readonly requestID: string | null;
	readonly span?: { readonly id: string; readonly sampled: boolean } | null;
}

/**
 * The `traceparent` of a context's current span (`00-<trace id>-<span id>-<flags>`): the W3C ids
 * of its request id and of its span (its own id when it has no span), flags `01` when the span
 * is recorded, else `00`. The header @opentelemetry/core's propagator would write for that span
 * context (version 00, lowercase hex, two-digit flags): the ids are valid (non-zero hex of the
 * right length) by construction, so the propagator's validation has nothing to refuse.
 */
export function traceparentOf(ctx: TracedContext): string {
	const traceId = w3cTraceId(ctx.requestID ?? ctx.id);
	const spanId = w3cSpanId(ctx.span?.id ?? ctx.id);
	return `00-${traceId}-${spanId}-${ctx.span?.sampled ? "01" : "00"}`;
}

/** Sets the answer's `traceparent` header from the request's context (`traceparentOf`). */
export function answerTraceContext(ctx: TracedContext, res: ServerResponse): void {
	if (!res.headersSent) res.setHeader("traceparent", traceparentOf(ctx));
}
