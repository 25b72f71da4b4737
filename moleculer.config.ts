/**
 * Broker options of every node of the shop (one process with `npm start`, or one node per
 * service with `moleculer-runner --config dist/moleculer.config.js dist/services/<name>/<name>.service.js`).
 *
 * Transporter, cacher and tracing come from the environment (platform/config.ts, CONTRACT.md):
 * `TRANSPORTER` (NATS) or none; `CACHER` (Redis) or in-memory; `TRACING_EXPORTER` console/jaeger
 * and/or `OTEL_TRACES_EXPORTER=otlp` (OpenTelemetry over OTLP/HTTP, docs/tracing.md).
 */
import type { BrokerOptions } from "moleculer";
import { config } from "./platform/config";
import {
	circuitBreakerFailure,
	DatabaseUnavailableMiddleware
} from "./platform/db/database-unavailable";
import { isTransientError, ShopErrorRegenerator } from "./platform/errors";
import { FailoverMiddleware } from "./platform/failover";
import { NatsReconnectMiddleware } from "./platform/nats-reconnect";
import { shopLogger } from "./platform/logger";
import { NodeHealthMiddleware } from "./platform/node-health";
import { PortableParamsMiddleware } from "./platform/web/openapi";
import { natsClientOptions, natsSecurity } from "./platform/nats-options";
import { replCommands } from "./app/repl-commands";
import { frozenCopy, RESILIENT_REDIS_CACHER } from "./platform/resilient-cacher";
import { RequestContextMiddleware } from "./platform/request-context";

const c = config();
type ReplCustomCommands = NonNullable<NonNullable<BrokerOptions["replOptions"]>["customCommands"]>;

/**
 * Loads the OTLP exporter, which registers it with Moleculer, and returns its type name: only
 * when `OTEL_TRACES_EXPORTER=otlp` (it and the OpenTelemetry packages are about 0.2 s of a start).
 */
function otlpExporterType(): string {
	type OtlpModule = typeof import("./platform/tracing/otlp-exporter");
	// eslint-disable-next-line @typescript-eslint/no-require-imports
	const mod = require("./platform/tracing/otlp-exporter") as OtlpModule;
	return mod.OTLP_TRACE_EXPORTER;
}

function tracingExporter(): NonNullable<BrokerOptions["tracing"]> {
	const classic =
		c.tracingExporter === "console"
			? { type: "Console" as const, options: { width: 100 } }
			: c.tracingExporter === "jaeger"
				? {
						type: "Jaeger" as const,
						options: {
							endpoint: c.jaegerEndpoint ?? undefined,
							sampler: { type: "Const", options: { decision: 1 } }
						}
					}
				: null;
	// OTEL_TRACES_EXPORTER=otlp: OTLP/HTTP (platform/tracing/otlp-exporter.ts, docs/tracing.md),
	// alongside TRACING_EXPORTER's exporter when both are set.
	const otlp = c.otlpTracing
		? {
				type: otlpExporterType() as "Console",
				options: {
					url: c.otlpTracing.tracesUrl,
					serviceName: c.otlpTracing.serviceName,
					resourceAttributes: c.otlpTracing.resourceAttributes,
					scheduleDelayMs: c.otlpTracing.scheduleDelayMs
				} as object
			}
		: null;
	const exporters = [classic, otlp].filter(e => e !== null);
	if (exporters.length === 0) return { enabled: false };
	const exporter = exporters.length === 1 ? exporters[0]! : exporters;
	// TRACING_EXPORTER=jaeger would otherwise become `tracing.exporter: "jaeger"` under
	// moleculer-runner: a Jaeger exporter with default options (UDP to 127.0.0.1:6832,
	// JAEGER_ENDPOINT ignored), so no span reached the collector.
	return pinned(
		{
			enabled: true,
			exporter,
			// Spans carry no action params or meta: they would ship passwords (users.login,
			// users.register) and bearer tokens (users.resolveToken) to the collector.
			tags: { action: { params: false, meta: false }, event: { params: false, meta: false } }
		},
		["exporter"]
	);
}

/**
 * Makes `keys` of `obj` ignore assignments. moleculer-runner overwrites every option, nested ones
 * too, whose upper-cased path is set in the environment (runner.js `overwriteFromEnv`), with the
 * bare value: `TRANSPORTER=nats://...` would drop our NATS options, `CACHER=redis://...` our Redis
 * cacher's prefix, TTL and retries. platform/config.ts has already read those variables.
 */
function pinned<T extends object>(obj: T, keys: readonly (keyof T & string)[]): T {
	for (const key of keys) {
		const value = obj[key];
		Object.defineProperty(obj, key, {
			enumerable: true,
			get: () => value,
			set: () => undefined
		});
	}
	return obj;
}

/** ioredis options from a `redis://[:password@]host:port[/db]` URL. */
function redisOptions(url: string): Record<string, unknown> {
	const u = new URL(url);
	return {
		host: u.hostname,
		port: Number(u.port || 6379),
		password: u.password ? decodeURIComponent(u.password) : undefined,
		username: u.username ? decodeURIComponent(u.username) : undefined,
		db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
		tls: u.protocol === "rediss:" ? {} : undefined,
		maxRetriesPerRequest: 1,
		// A Redis that hangs (no answer, no error) fails a command after 500 ms (as the rate
		// limiter's store does), which the cacher turns into a miss, instead of holding every
		// cached call until its request timeout.
		commandTimeout: 500
	};
}

const brokerConfig: BrokerOptions = {
	namespace: "shop",
	nodeID: c.nodeID,

	/** pino: JSON lines in production (LOG_FORMAT), readable ones otherwise (platform/logger.ts). */
	logger: shopLogger(c),
	logLevel: c.logLevel,

	// Servers (one or a cluster's list), credentials (URL or NATS_TOKEN), TLS files (NATS_TLS_*)
	// and the reconnect settings (NATS_RECONNECT) as `nats` options, no URL:
	// platform/nats-options.ts. The JetStream connection of durable events uses the same.
	transporter: c.transporter
		? {
				type: "NATS",
				options: natsClientOptions(c.transporter, natsSecurity(c), {
					randomize: c.natsRandomize,
					name: c.nodeID
				})
			}
		: null,

	// Redis: Moleculer's Redis cacher whose failures degrade to a miss (platform/resilient-cacher.ts):
	// a Redis outage must not fail cached actions.
	cacher: c.cacher
		? {
				// Registered under this name; Moleculer's typings know only the built-in names.
				type: RESILIENT_REDIS_CACHER as "Redis",
				options: { prefix: "shop-cache", ttl: 300, redis: redisOptions(c.cacher) }
			}
		: // Hits shared and frozen, not deep-copied (platform/resilient-cacher.ts `frozenCopy`).
			{ type: "Memory", options: { ttl: 300, clone: frozenCopy } },

	serializer: "JSON",

	/**
	 * One call attempt, in ms; saga steps set their own per call. With the retry policy below a
	 * call that keeps timing out may take up to 4 attempts: actions that are not safe to repeat
	 * (orders.create, users.register, products.create, the gateway's handler) disable retries.
	 */
	requestTimeout: 10_000,

	/** Only transient failures are retried: retryable errors (timeouts, unavailable nodes). */
	retryPolicy: {
		enabled: true,
		retries: 3,
		delay: 100,
		maxDelay: 1_000,
		factor: 2,
		check: (err: Error) => isTransientError(err)
	},

	/**
	 * A node that dies without saying goodbye (SIGKILL, power loss) leaves the registry after
	 * `heartbeatTimeout` s (checked every `heartbeatTimeout` s, on whole seconds: 8 to 16 s).
	 * Callers do not wait for that: a call outstanding for `FAILOVER_PROBE_MS` (500 ms) has its
	 * target probed through NATS, and a killed node (no subscription left) is dropped at once,
	 * its calls retried on a live replica (platform/failover.ts, docs/failover.md). Shorter heartbeats
	 * were measured and rejected there: whole-second checks cannot get under 3 s, and a
	 * CPU-starved but live node would be declared dead.
	 */
	heartbeatInterval: 2,
	heartbeatTimeout: 8,
	contextParamsCloning: false,

	/** Graceful shutdown: wait for in-flight requests before leaving. */
	tracking: { enabled: true, shutdownTimeout: 10_000 },

	/**
	 * Moleculer's balancer, not NATS queue groups: it keeps the per-endpoint circuit breaker,
	 * `preferLocal` and the strategy, and knows each request's target, which the failover probe
	 * needs (docs/failover.md: `disableBalancer: true` alone still lost the calls in flight on
	 * the killed node for the whole timeout).
	 */
	disableBalancer: false,
	/**
	 * A stopping node announces that it has no services (an empty INFO), then takes requests for
	 * `stopDelay` ms more before refusing them (Moleculer: `ServiceNotAvailableError`, "dropped
	 * because broker is stopped"): long enough for busy callers to hear it (the default, 100 ms,
	 * was not, under load: test/cluster/fault-tolerance.test.ts "SIGTERM under load"). Without a
	 * transporter nobody else calls it: Moleculer's default.
	 */
	registry: { strategy: "RoundRobin", preferLocal: true, stopDelay: c.transporter ? 1_000 : 100 },

	/**
	 * Opens per endpoint when half of at least 20 calls in 60 s fail; probes after 10 s. A failure
	 * is a 5xx, except a database outage, which fails every node alike (platform/db/database-unavailable.ts).
	 */
	circuitBreaker: {
		enabled: true,
		threshold: 0.5,
		minRequestCount: 20,
		windowTime: 60,
		halfOpenTime: 10_000,
		check: circuitBreakerFailure
	},

	/** Bulkhead: at most 50 concurrent calls per action on a node, 500 queued. */
	bulkhead: { enabled: true, concurrency: 50, maxQueueSize: 500 },

	validator: true,
	errorRegenerator: new ShopErrorRegenerator(),

	metrics: {
		enabled: c.metricsPort > 0,
		reporter:
			c.metricsPort > 0
				? [{ type: "Prometheus", options: { port: c.metricsPort, path: "/metrics" } }]
				: []
	},

	tracing: tracingExporter(),

	/**
	 * Handlers run with their request id current, for the log lines' `requestId`; this node's
	 * `/health` and `/ready` on HEALTH_PORT (platform/node-health.ts); params' RegExp patterns as
	 * strings, so that they reach the gateway's OpenAPI document from other nodes (platform/web/openapi.ts);
	 * an unreachable database answers 503 SERVICE_UNAVAILABLE (retryable), not the driver's error
	 * as a 500 (platform/db/database-unavailable.ts); a killed node's calls fail over in under a second
	 * (platform/failover.ts); calls that a NATS server's death may have lost are retried when the
	 * connection comes back on another server (platform/nats-reconnect.ts).
	 */
	middlewares: [
		RequestContextMiddleware,
		PortableParamsMiddleware,
		DatabaseUnavailableMiddleware,
		FailoverMiddleware({ probeAfterMs: c.failoverProbeMs }),
		NatsReconnectMiddleware(),
		...(c.healthPort > 0 ? [NodeHealthMiddleware(c.healthPort)] : [])
	],

	replOptions: { customCommands: replCommands as unknown as ReplCustomCommands }
};

pinned(brokerConfig, ["transporter", "cacher"]);

export = brokerConfig;
