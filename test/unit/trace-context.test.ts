/**
 * W3C trace context and the OTLP exporter (platform/tracing/), in one process:
 *
 * - the id mapping (Moleculer's UUIDs and request ids to W3C ids), `traceparent`/`tracestate`
 *   parsing (the specification's refusals), the `traceparent` the gateway answers;
 * - the OpenTelemetry variables as platform/config.ts reads them;
 * - the exporter on a real broker and gateway (services/api with moleculer.config.ts's options)
 *   sending OTLP/HTTP JSON to a local receiver (test/support/otlp-receiver.ts): the gateway joins
 *   an incoming `traceparent`, answers one naming its span, and the spans of two services behind
 *   it share the caller's trace id, each under its own `service.name`; an error becomes status
 *   ERROR; an unsampled caller's request is not recorded.
 *
 * In this process the spans are serialized by OpenTelemetry's own OTLP JSON serializer (the one
 * `OTLPTraceExporter` uses) and POSTed with `fetch`: `OTLPTraceExporter`'s transport loads `http`
 * with a dynamic `import()`, which Jest's CommonJS runtime refuses without
 * `--experimental-vm-modules`. `OTLPTraceExporter` itself runs in the node processes of
 * test/cluster/otlp-tracing.test.ts.
 */
import type { Server } from "node:http";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import { JsonTraceSerializer } from "@opentelemetry/otlp-transformer";
import {
	InMemorySpanExporter,
	type ReadableSpan,
	type SpanExporter
} from "@opentelemetry/sdk-trace";
import {
	ServiceBroker,
	type BrokerOptions,
	type Context,
	type ServiceSchema,
	type TracerOptions
} from "moleculer";
import { loadConfig, resetConfig } from "../../platform/config";
import {
	acceptTraceContext,
	extractTraceContext,
	traceparentOf,
	w3cSpanId,
	w3cTraceId,
	type TraceCallOptions
} from "../../platform/tracing/trace-context";
import { traceConsumption } from "../../platform/tracing/event-span";
import { OtlpTraceExporter } from "../../platform/tracing/otlp-exporter";
import { startTestBroker, type TestBroker } from "../support/broker";
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from "../support/otlp-receiver";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT = "00f067aa0ba902b7";

describe("W3C ids of Moleculer ids", () => {
	it("keeps W3C ids, strips a UUID's dashes, hashes anything else, the same every time", () => {
		expect(w3cTraceId(TRACE)).toBe(TRACE);
		expect(w3cTraceId(TRACE.toUpperCase())).toBe(TRACE);
		expect(w3cTraceId("0f8fad5b-d9cb-469f-a165-70867728950e")).toBe(
			"0f8fad5bd9cb469fa16570867728950e"
		);
		const hashed = w3cTraceId("my-request-42");
		expect(hashed).toMatch(/^[0-9a-f]{32}$/);
		expect(w3cTraceId("my-request-42")).toBe(hashed);
		expect(w3cTraceId("my-request-43")).not.toBe(hashed);
		// All zeros is not a valid trace id: hashed too.
		expect(w3cTraceId("0".repeat(32))).toMatch(/^(?!0{32})[0-9a-f]{32}$/);

		expect(w3cSpanId(PARENT)).toBe(PARENT);
		const span = w3cSpanId("0f8fad5b-d9cb-469f-a165-70867728950e");
		expect(span).toMatch(/^[0-9a-f]{16}$/);
		expect(w3cSpanId("0f8fad5b-d9cb-469f-a165-70867728950e")).toBe(span);
		expect(w3cSpanId("0".repeat(16))).toMatch(/^(?!0{16})[0-9a-f]{16}$/);
	});
});

describe("traceparent and tracestate", () => {
	const tp = (flags = "01") => `00-${TRACE}-${PARENT}-${flags}`;

	it("reads a valid traceparent, its sampled flag and the valid members of tracestate", () => {
		expect(extractTraceContext({ traceparent: tp() })).toEqual({
			traceId: TRACE,
			parentSpanId: PARENT,
			sampled: true,
			traceState: null
		});
		expect(extractTraceContext({ traceparent: tp("00") })?.sampled).toBe(false);
		const tc = extractTraceContext({
			traceparent: tp(),
			tracestate: "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7,Bad Key=x"
		});
		// Members kept in order; the invalid one dropped.
		expect(tc?.traceState).toBe("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
		// A future version may carry more fields.
		expect(
			extractTraceContext({ traceparent: `cc-${TRACE}-${PARENT}-01-what-the-future-holds` })
				?.traceId
		).toBe(TRACE);
	});

	it("refuses what the specification refuses, and then ignores tracestate", () => {
		for (const bad of [
			`ff-${TRACE}-${PARENT}-01`, // version ff
			`00-${"0".repeat(32)}-${PARENT}-01`, // all-zero trace id
			`00-${TRACE}-${"0".repeat(16)}-01`, // all-zero parent id
			`00-${TRACE.toUpperCase()}-${PARENT}-01`, // upper-case hex
			`00-${TRACE}-${PARENT}-01-extra`, // version 00 has four fields
			`00-${TRACE.slice(1)}-${PARENT}-01`, // short trace id
			`00-${TRACE}-${PARENT}-01, 00-${TRACE}-${PARENT}-01`, // two headers joined
			"garbage"
		])
			expect(extractTraceContext({ traceparent: bad, tracestate: "a=b" })).toBeNull();
		expect(extractTraceContext({ tracestate: "a=b" })).toBeNull();
	});

	it("joins the root call to the caller's trace; without a valid traceparent nothing changes", () => {
		const options: TraceCallOptions = { requestID: "client-id-1" };
		expect(
			acceptTraceContext(options, { traceparent: tp(), tracestate: "a=b" })
		).not.toBeNull();
		expect(options).toEqual({
			requestID: TRACE,
			parentSpan: { id: PARENT, traceID: TRACE, sampled: true },
			meta: { tracestate: "a=b" }
		});
		const untouched: TraceCallOptions = { requestID: "client-id-1" };
		expect(acceptTraceContext(untouched, { traceparent: "00-nope" })).toBeNull();
		expect(untouched).toEqual({ requestID: "client-id-1" });
	});

	it("answers the traceparent of the context's span", () => {
		const ctxId = "0f8fad5b-d9cb-469f-a165-70867728950e";
		expect(
			traceparentOf({ id: ctxId, requestID: TRACE, span: { id: ctxId, sampled: true } })
		).toBe(`00-${TRACE}-${w3cSpanId(ctxId)}-01`);
		expect(traceparentOf({ id: ctxId, requestID: "req-1", span: null })).toBe(
			`00-${w3cTraceId("req-1")}-${w3cSpanId(ctxId)}-00`
		);
	});
});

describe("the OpenTelemetry variables (platform/config.ts)", () => {
	const base = { JWT_SECRET: "x".repeat(40) };

	it("is off unless OTEL_TRACES_EXPORTER=otlp; the endpoint as the specification builds it", () => {
		expect(loadConfig({ ...base }).otlpTracing).toBeNull();
		expect(loadConfig({ ...base, OTEL_TRACES_EXPORTER: "none" }).otlpTracing).toBeNull();
		expect(loadConfig({ ...base, OTEL_TRACES_EXPORTER: "otlp" }).otlpTracing).toEqual({
			tracesUrl: "http://localhost:4318/v1/traces",
			serviceName: null,
			resourceAttributes: {},
			scheduleDelayMs: 5000
		});
		const c = loadConfig({
			...base,
			OTEL_TRACES_EXPORTER: "otlp",
			OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318",
			OTEL_SERVICE_NAME: "shop-edge",
			OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=staging, team=a%20b",
			OTEL_BSP_SCHEDULE_DELAY: "250"
		});
		expect(c.otlpTracing).toEqual({
			tracesUrl: "http://jaeger:4318/v1/traces",
			serviceName: "shop-edge",
			resourceAttributes: { "deployment.environment.name": "staging", team: "a b" },
			scheduleDelayMs: 250
		});
		expect(
			loadConfig({
				...base,
				OTEL_TRACES_EXPORTER: "otlp",
				OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/otel/"
			}).otlpTracing?.tracesUrl
		).toBe("http://collector:4318/otel/v1/traces");
		// The signal's own endpoint is used as is.
		expect(
			loadConfig({
				...base,
				OTEL_TRACES_EXPORTER: "otlp",
				OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
				OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://traces.example/custom"
			}).otlpTracing?.tracesUrl
		).toBe("https://traces.example/custom");
	});

	it.each([
		[
			"an exporter this shop has not",
			{ OTEL_TRACES_EXPORTER: "zipkin" },
			/OTEL_TRACES_EXPORTER/
		],
		[
			"a non-http endpoint",
			{ OTEL_EXPORTER_OTLP_ENDPOINT: "grpc://h:4317" },
			/OTEL_EXPORTER_OTLP_ENDPOINT/
		],
		[
			"a resource attribute without =",
			{ OTEL_RESOURCE_ATTRIBUTES: "a=1,b" },
			/OTEL_RESOURCE_ATTRIBUTES/
		],
		[
			"a bad percent-encoding",
			{ OTEL_RESOURCE_ATTRIBUTES: "a=%zz" },
			/OTEL_RESOURCE_ATTRIBUTES/
		],
		["a zero batch delay", { OTEL_BSP_SCHEDULE_DELAY: "0" }, /OTEL_BSP_SCHEDULE_DELAY/]
	])("refuses %s", (_what, env, message) => {
		expect(() => loadConfig({ ...base, ...env })).toThrow(message);
	});
});

describe("OTLP export from a real broker and gateway", () => {
	let receiver: OtlpReceiver;
	let shop: TestBroker;
	let base: string;

	/** `products.list` (the alias `GET /api/products`) calls `stock.count` on another service. */
	const products: ServiceSchema = {
		name: "products",
		actions: {
			list: {
				rest: false,
				params: { fail: { type: "string", optional: true } },
				async handler(ctx: Context<{ fail?: string }>) {
					return {
						count: await ctx.call("stock.count", { fail: ctx.params.fail === "1" })
					};
				}
			}
		}
	} as unknown as ServiceSchema;
	const stock: ServiceSchema = {
		name: "stock",
		actions: {
			count: {
				params: { fail: "boolean" },
				handler(ctx: Context<{ fail: boolean }>) {
					if (ctx.params.fail)
						throw Object.assign(new Error("no stock today"), {
							type: "STOCK_BROKEN",
							code: 500
						});
					return 7;
				}
			}
		}
	} as unknown as ServiceSchema;

	/** OTLP/HTTP JSON with OpenTelemetry's serializer, sent by `fetch` (see the module comment). */
	const jsonOverFetch = (url: string): SpanExporter => ({
		export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
			fetch(url, {
				method: "POST",
				headers: { "Content-Type": "application/json" },
				body: JsonTraceSerializer.serializeRequest(spans)
			}).then(
				r => done({ code: r.ok ? ExportResultCode.SUCCESS : ExportResultCode.FAILED }),
				error => done({ code: ExportResultCode.FAILED, error })
			);
		},
		shutdown: () => Promise.resolve()
	});

	beforeAll(async () => {
		receiver = await startOtlpReceiver();
		const env = {
			OTEL_TRACES_EXPORTER: "otlp",
			OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
			OTEL_BSP_SCHEDULE_DELAY: "100",
			TRACING_EXPORTER: "",
			PORT: "0",
			METRICS_PORT: "0",
			HEALTH_PORT: "0"
		};
		for (const [k, v] of Object.entries(env)) process.env[k] = v;
		resetConfig();
		const { tracing } = require("../../moleculer.config") as BrokerOptions;
		const { exporter, ...rest } = tracing as { exporter: { type: string; options: object } };
		// moleculer.config.ts's OTLP exporter with its options, only the transport swapped.
		expect(exporter.type).toBe("OTLP");
		const options = exporter.options as { url: string };
		expect(options.url).toBe(`${receiver.url}/v1/traces`);
		shop = await startTestBroker(["api"], {
			env,
			extra: [products, stock],
			broker: {
				tracing: {
					...rest,
					exporter: new OtlpTraceExporter({
						...options,
						spanExporter: jsonOverFetch(options.url)
					}) as unknown as TracerOptions["exporter"]
				}
			}
		});
		const server = (shop.broker.getLocalService("api") as unknown as { server: Server }).server;
		const addr = server.address();
		if (!addr || typeof addr !== "object") throw new Error("gateway has no port");
		base = `http://127.0.0.1:${addr.port}`;
	}, 60_000);
	afterAll(async () => {
		await shop?.stop();
		await receiver?.stop();
		delete process.env.OTEL_TRACES_EXPORTER;
		delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
		delete process.env.OTEL_BSP_SCHEDULE_DELAY;
	});

	const spansOf = async (traceId: string, atLeast: number): Promise<ReceivedSpan[]> => {
		const end = Date.now() + 10_000;
		for (;;) {
			const spans = receiver.spans().filter(s => s.traceId === traceId);
			if (spans.length >= atLeast || Date.now() > end) return spans;
			await new Promise(r => setTimeout(r, 50));
		}
	};

	it("joins the caller's traceparent: every span of the request in that trace, one service.name per service", async () => {
		const tracestate = "vendor=abc";
		const res = await fetch(`${base}/api/products`, {
			headers: {
				traceparent: `00-${TRACE}-${PARENT}-01`,
				tracestate,
				"X-Request-ID": "client-1"
			}
		});
		expect(res.status).toBe(200);
		expect(await res.json()).toEqual({ count: 7 });
		// The request id is the trace id (the log correlation id follows the trace).
		expect(res.headers.get("x-request-id")).toBe(TRACE);
		const answered = res.headers.get("traceparent");
		expect(answered).toMatch(new RegExp(`^00-${TRACE}-[0-9a-f]{16}-01$`));
		const gatewaySpanId = answered!.split("-")[2];

		const spans = await spansOf(TRACE, 3);
		expect(receiver.errors()).toEqual([]);
		const byName = (n: string) => spans.filter(s => s.name === n);
		const gateway = byName("GET /api/products");
		const list = byName("action 'products.list'");
		const count = byName("action 'stock.count'");
		expect([gateway.length, list.length, count.length]).toEqual([1, 1, 1]);

		// One tree under the caller's span; the answer named the gateway's span.
		expect(gateway[0]!.spanId).toBe(gatewaySpanId);
		expect(gateway[0]!.parentSpanId).toBe(PARENT);
		expect(list[0]!.parentSpanId).toBe(gateway[0]!.spanId);
		expect(count[0]!.parentSpanId).toBe(list[0]!.spanId);
		// SERVER: the gateway's span (its parent is remote); INTERNAL: local calls.
		expect(gateway[0]!.kind).toBe(2);
		expect(count[0]!.kind).toBe(1);

		// service.name: the Moleculer service of each span, on this one node.
		expect(gateway[0]!.serviceName).toBe("api");
		expect(list[0]!.serviceName).toBe("products");
		expect(count[0]!.serviceName).toBe("stock");
		for (const s of spans) {
			expect(s.resource["service.instance.id"]).toBe(shop.broker.nodeID);
			expect(s.resource["service.namespace"]).toBe("shop");
			expect(s.resource["telemetry.sdk.language"]).toBe("nodejs");
			expect(s.attributes.requestID).toBe(TRACE);
			expect(s.attributes.nodeID).toBe(shop.broker.nodeID);
			expect(s.traceState).toBe(tracestate);
			expect(s.status.code).toBe(0);
		}
		// The client's X-Request-ID, replaced by the trace id as the request id, stays on the span.
		expect(gateway[0]!.attributes.clientRequestID).toBe("client-1");
		// Params and meta stay out of spans (moleculer.config.ts).
		expect(Object.keys(count[0]!.attributes).some(k => k.startsWith("params."))).toBe(false);
	});

	it("without traceparent: the trace id is the request id's, and the answer says so", async () => {
		const requestId = "0f8fad5b-d9cb-469f-a165-70867728950e";
		const res = await fetch(`${base}/api/products`, { headers: { "X-Request-ID": requestId } });
		expect(res.status).toBe(200);
		expect(res.headers.get("x-request-id")).toBe(requestId);
		const traceId = requestId.replace(/-/g, "");
		const answered = res.headers.get("traceparent")!;
		expect(answered).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
		const spans = await spansOf(traceId, 3);
		const roots = spans.filter(s => s.parentSpanId === null);
		expect(roots.map(r => r.name)).toEqual(["GET /api/products"]);
		expect(roots[0]!.spanId).toBe(answered.split("-")[2]);
	});

	it("an unsampled caller's trace is not recorded; its answer says unsampled", async () => {
		const trace = "5bf92f3577b34da6a3ce929d0e0e4736";
		const res = await fetch(`${base}/api/products`, {
			headers: { traceparent: `00-${trace}-${PARENT}-00` }
		});
		expect(res.status).toBe(200);
		expect(res.headers.get("traceparent")).toMatch(new RegExp(`^00-${trace}-[0-9a-f]{16}-00$`));
		// A sampled request after it: once its spans arrived, the unsampled ones would have too.
		const after = "6bf92f3577b34da6a3ce929d0e0e4736";
		await fetch(`${base}/api/products`, {
			headers: { traceparent: `00-${after}-${PARENT}-01` }
		});
		expect((await spansOf(after, 3)).length).toBe(3);
		expect(receiver.spans().filter(s => s.traceId === trace)).toEqual([]);
	});

	it("a failed call is an ERROR span with the error's fields", async () => {
		const trace = "7bf92f3577b34da6a3ce929d0e0e4736";
		const res = await fetch(`${base}/api/products?fail=1`, {
			headers: { traceparent: `00-${trace}-${PARENT}-01` }
		});
		expect(res.status).toBe(500);
		expect(res.headers.get("traceparent")).toMatch(new RegExp(`^00-${trace}-`));
		const spans = await spansOf(trace, 3);
		const count = spans.find(s => s.name === "action 'stock.count'");
		expect(count?.status).toEqual({ code: 2, message: "no stock today" });
		expect(count?.attributes["error.type"]).toBe("STOCK_BROKEN");
		expect(count?.attributes.error).toBe(true);
	});
});

describe("the span of a durable event's delivery (platform/tracing/event-span.ts)", () => {
	const memory = new InMemorySpanExporter();
	const exporter = new OtlpTraceExporter({ url: "http://unused", spanExporter: memory });
	const broker = new ServiceBroker({
		logger: false,
		nodeID: "consumer-node",
		tracing: {
			enabled: true,
			exporter: exporter as unknown as TracerOptions["exporter"]
		}
	});
	beforeAll(() => broker.start());
	afterAll(() => broker.stop());

	const event = {
		id: "e5b4c7a2-1111-4222-8333-944455556666",
		name: "order.confirmed",
		source: "orders",
		requestId: "0f8fad5b-d9cb-469f-a165-70867728950e"
	};
	const producerSpanId = "7d3a1e0b-aaaa-4bbb-8ccc-dddddddddddd";

	it("is a CONSUMER span in the producer's trace, child of and linked to the producer's span", async () => {
		memory.reset();
		const outcome = await traceConsumption(
			broker,
			"notifications",
			"notifications-order-confirmed",
			{ ...event, producerSpanId },
			2,
			async () => "applied"
		);
		expect(outcome).toBe("applied");
		await exporter.flush();
		const [span, ...more] = memory.getFinishedSpans();
		expect(more).toEqual([]);
		expect(span!.name).toBe(
			"event 'order.confirmed' consumed by 'notifications-order-confirmed'"
		);
		expect(span!.kind).toBe(SpanKind.CONSUMER);
		expect(span!.spanContext().traceId).toBe("0f8fad5bd9cb469fa16570867728950e");
		expect(span!.parentSpanContext?.spanId).toBe(w3cSpanId(producerSpanId));
		expect(span!.links.map(l => [l.context.traceId, l.context.spanId])).toEqual([
			["0f8fad5bd9cb469fa16570867728950e", w3cSpanId(producerSpanId)]
		]);
		expect(span!.resource.attributes["service.name"]).toBe("notifications");
		expect(span!.attributes).toMatchObject({
			eventID: event.id,
			eventName: "order.confirmed",
			eventSource: "orders",
			delivery: 2,
			outcome: "applied",
			requestID: event.requestId,
			nodeID: "consumer-node"
		});
	});

	it("without the producer's span it joins the trace as a root; a failure is its error", async () => {
		memory.reset();
		await expect(
			traceConsumption(broker, "notifications", "c", event, 1, async () => {
				throw Object.assign(new Error("smtp down"), { type: "NOTIFICATIONS_SEND_FAILED" });
			})
		).rejects.toThrow("smtp down");
		await exporter.flush();
		const [span] = memory.getFinishedSpans();
		expect(span!.spanContext().traceId).toBe("0f8fad5bd9cb469fa16570867728950e");
		expect(span!.parentSpanContext).toBeUndefined();
		expect(span!.links).toEqual([]);
		expect(span!.status).toEqual({ code: SpanStatusCode.ERROR, message: "smtp down" });
		expect(span!.attributes["error.type"]).toBe("NOTIFICATIONS_SEND_FAILED");
	});
});
