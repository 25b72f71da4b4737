/**
 * The shop's configuration: the ONE module that reads `process.env`.
 *
 * Every variable is parsed and validated once, at first use, and the result is frozen
 * (fastify's habit: start-up options validated once and frozen). Services and mixins import
 * `config()` and never touch `process.env` themselves.
 *
 * The variables are declared once, with zod, in platform/config/schema.ts (kind, default,
 * bounds, secret, documentation); docs/CONTRACT.md's environment table is generated from it
 * (tools/config-docs.ts). This file parses the environment through that schema and checks the
 * rules that tie variables together. It knows no service: a service's own database URL is
 * `<SERVICE>_DATABASE_URL` for any service name.
 */
import os from "node:os";
import path from "node:path";
import net from "node:net";
import { z } from "zod";
import { natsConnectionOptions } from "./nats-options";
import { describeWeaknesses, passwordWeaknesses } from "./security/password-policy";
import { placeholderSecret } from "./security/secrets";
import { developmentSecret } from "./config/development-secret";
import { parseFaults, parseOutboxFaults } from "./config/faults";
import { formatIssue } from "./config/fields";
import { ConfigError, type Env } from "./config/parse";
import { ENV_FIELDS, envSchema, SERVICE_DATABASE_URL, type ParsedEnv } from "./config/schema";
import type {
	DatabaseService,
	RetentionConfig,
	OtlpTracingConfig,
	ShopConfig
} from "./config/settings";
import { otlpTracesUrl } from "./tracing/otel-settings";

export { ConfigError } from "./config/parse";
export { RATE_LIMIT_MAX_DEFAULT } from "./config/schema";
export type {
	DatabaseService,
	LogFormat,
	LogLevel,
	RetentionConfig,
	OtlpTracingConfig,
	ShopConfig,
	TracingExporter
} from "./config/settings";

/**
 * The variable of one service's own database (`orders` → `ORDERS_DATABASE_URL`): a full URL,
 * database name included, that overrides `DATABASE_URL` for that service.
 */
export function serviceDatabaseUrlVariable(s: DatabaseService): string {
	return `${s.toUpperCase()}_DATABASE_URL`;
}

/** `env` parsed by `schema`, or a `ConfigError` naming the first variable it refuses. */
function parse<S extends z.ZodType>(schema: S, env: Env): z.output<S> {
	const result = schema.safeParse(env);
	if (!result.success) throw new ConfigError(formatIssue(result.error.issues[0]!));
	return result.data;
}

/**
 * Every `<SERVICE>_DATABASE_URL` set in `env` (the service's name being a lowercase identifier,
 * `[a-z][a-z0-9]*`), validated, by service name.
 */
function serviceDatabaseUrlsOf(env: Env): Record<DatabaseService, string> {
	const urls: Record<DatabaseService, string> = {};
	for (const name of Object.keys(env).sort()) {
		const m = SERVICE_DATABASE_URL.pattern.exec(name);
		if (!m) continue;
		const u = parse(z.object({ [name]: SERVICE_DATABASE_URL.field }), env)[name];
		if (u) urls[m[1]!.toLowerCase()] = u;
	}
	return urls;
}

/**
 * The retention settings (docs/retention.md gives each default's reason). Windows that guard a
 * saga's retries are checked against the saga's own bounds.
 */
function retentionConfig(v: ParsedEnv): RetentionConfig {
	if (v.IDEMPOTENCY_KEY_RETENTION_MS < Math.max(v.SAGA_DEADLINE_MS, v.RESERVATION_TTL_MS))
		throw new ConfigError(
			`IDEMPOTENCY_KEY_RETENTION_MS (${v.IDEMPOTENCY_KEY_RETENTION_MS}) must not be below SAGA_DEADLINE_MS nor RESERVATION_TTL_MS`
		);
	if (v.RESERVATION_RETENTION_MS < v.IDEMPOTENCY_KEY_RETENTION_MS)
		throw new ConfigError(
			`RESERVATION_RETENTION_MS (${v.RESERVATION_RETENTION_MS}) must not be below IDEMPOTENCY_KEY_RETENTION_MS (${v.IDEMPOTENCY_KEY_RETENTION_MS})`
		);
	return Object.freeze({
		intervalMs: v.RETENTION_INTERVAL_MS,
		batchSize: v.RETENTION_BATCH_SIZE,
		batchPauseMs: v.RETENTION_BATCH_PAUSE_MS,
		outboxMs: v.OUTBOX_RETENTION_MS,
		inboxMs: v.INBOX_RETENTION_MS,
		idempotencyKeyMs: v.IDEMPOTENCY_KEY_RETENTION_MS,
		sagaMs: v.SAGA_RETENTION_MS,
		sagaErrorsKeep: v.SAGA_ERRORS_KEEP,
		deadLetterMs: v.DEAD_LETTER_RETENTION_MS,
		reservationMs: v.RESERVATION_RETENTION_MS
	});
}

/**
 * Parses and validates an environment into a frozen config: each variable through the schema
 * (platform/config/schema.ts), then the rules between variables.
 * @param env - the environment (default `process.env`); only the schema's variables and
 *   `<SERVICE>_DATABASE_URL` are read
 * @throws ConfigError whose message names the variable (a URL's credentials redacted)
 */
export function loadConfig(env: Env = process.env): ShopConfig {
	// NODE_ENV first: in production, a secret still holding a placeholder of the deployment files
	// or the docs (platform/security/secrets.ts) is refused, named, before any other check.
	const nodeEnv = parse(z.object({ NODE_ENV: ENV_FIELDS.NODE_ENV }), env).NODE_ENV;
	const production = nodeEnv === "production";
	const serviceDatabaseUrls = serviceDatabaseUrlsOf(env);
	if (production) {
		const placeholder = placeholderSecret(
			env,
			Object.keys(serviceDatabaseUrls).map(serviceDatabaseUrlVariable)
		);
		if (placeholder) throw new ConfigError(placeholder);
	}
	const v = parse(envSchema, env);
	const dataDir = path.resolve(v.DATA_DIR);

	let jwtSecret = v.JWT_SECRET;
	let jwtSecretGenerated = false;
	// Production: only the nodes that sign or verify tokens (users) need it; they read
	// `jwtSecret` (or `requireJwtSecret()`), which throws there (see the getter below).
	if (jwtSecret === null && !production) {
		jwtSecret = developmentSecret(dataDir);
		jwtSecretGenerated = true;
	}

	if (v.TRACING_EXPORTER === "jaeger" && !v.JAEGER_ENDPOINT)
		throw new ConfigError("TRACING_EXPORTER=jaeger needs JAEGER_ENDPOINT");
	// OpenTelemetry's variables (docs/tracing.md): OTLP/HTTP export, besides TRACING_EXPORTER's.
	const otlpTracing: OtlpTracingConfig | null =
		v.OTEL_TRACES_EXPORTER === "otlp"
			? {
					tracesUrl: otlpTracesUrl(
						v.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
						v.OTEL_EXPORTER_OTLP_ENDPOINT
					),
					serviceName: v.OTEL_SERVICE_NAME,
					resourceAttributes: Object.freeze(v.OTEL_RESOURCE_ATTRIBUTES),
					scheduleDelayMs: v.OTEL_BSP_SCHEDULE_DELAY
				}
			: null;

	const adminEmail = v.ADMIN_EMAIL.toLowerCase();
	if (v.ADMIN_PASSWORD !== null) {
		// The administrator's password follows the customers' policy (platform/security/password-policy.ts).
		const weak = passwordWeaknesses(v.ADMIN_PASSWORD, adminEmail);
		if (weak.length > 0)
			throw new ConfigError(
				`ADMIN_PASSWORD: ${describeWeaknesses(weak)} (${weak.join(", ")})`
			);
	}

	const trustedProxies = (v.TRUSTED_PROXIES ?? "")
		.split(",")
		.map(s => s.trim())
		.filter(Boolean);
	for (const ip of trustedProxies)
		if (net.isIP(ip) === 0)
			throw new ConfigError(`TRUSTED_PROXIES must list IP addresses, got "${ip}"`);

	if ((v.NATS_TLS_CERT === null) !== (v.NATS_TLS_KEY === null))
		throw new ConfigError("NATS_TLS_CERT and NATS_TLS_KEY go together");
	if (v.TRANSPORTER) {
		try {
			natsConnectionOptions(v.TRANSPORTER, { token: v.NATS_TOKEN });
		} catch (err) {
			throw new ConfigError(`TRANSPORTER: ${(err as Error).message}`);
		}
	}

	// A reservation must outlive the part of its saga that can still give it up (up to the pivot,
	// bounded by the deadline): a shorter TTL would cancel healthy orders as TIMEOUT.
	if (v.RESERVATION_TTL_MS < v.SAGA_DEADLINE_MS)
		throw new ConfigError(
			`RESERVATION_TTL_MS (${v.RESERVATION_TTL_MS}) must not be below SAGA_DEADLINE_MS (${v.SAGA_DEADLINE_MS})`
		);

	const retention = retentionConfig(v);
	const eventsConsumerLagAlertMs =
		v.EVENTS_CONSUMER_LAG_ALERT_MS ?? Math.floor(v.EVENTS_MAX_AGE_MS / 2);
	if (eventsConsumerLagAlertMs >= v.EVENTS_MAX_AGE_MS)
		throw new ConfigError(
			`EVENTS_CONSUMER_LAG_ALERT_MS (${eventsConsumerLagAlertMs}) must be below EVENTS_MAX_AGE_MS (${v.EVENTS_MAX_AGE_MS})`
		);
	// Deduplication must outlive redelivery: the stream may deliver an event again until it ages out.
	if (retention.inboxMs < v.EVENTS_MAX_AGE_MS)
		throw new ConfigError(
			`INBOX_RETENTION_MS (${retention.inboxMs}) must not be below EVENTS_MAX_AGE_MS (${v.EVENTS_MAX_AGE_MS})`
		);

	return Object.freeze({
		env: nodeEnv,
		production,
		port: v.PORT,
		nodeID: v.NODE_ID,
		transporter: v.TRANSPORTER,
		cacher: v.CACHER,
		databaseUrl: v.DATABASE_URL,
		serviceDatabaseUrls: Object.freeze(serviceDatabaseUrls),
		databasePreparedStatements: v.DATABASE_PREPARED_STATEMENTS,
		databasePrefix: v.DATABASE_PREFIX,
		dataDir,
		embeddedPostgresPort: v.EMBEDDED_POSTGRES_PORT,
		metricsPort: v.METRICS_PORT,
		healthPort: v.HEALTH_PORT,
		failoverProbeMs: v.FAILOVER_PROBE_MS,
		// A getter: in production without JWT_SECRET (a node that neither signs nor verifies
		// tokens) reading it throws ConfigError; the users service reads it when created.
		get jwtSecret(): string {
			if (jwtSecret === null)
				throw new ConfigError(
					"JWT_SECRET is required when NODE_ENV=production on a node that signs or verifies access tokens (the users service)"
				);
			return jwtSecret;
		},
		jwtSecretGenerated,
		jwtExpiresInSeconds: v.JWT_EXPIRES_IN,
		adminEmail,
		adminPassword: v.ADMIN_PASSWORD,
		tracingExporter: v.TRACING_EXPORTER,
		jaegerEndpoint: v.JAEGER_ENDPOINT,
		otlpTracing,
		logLevel: v.LOGLEVEL,
		logFormat: v.LOG_FORMAT ?? (production ? "json" : "pretty"),
		sagaDeadlineMs: v.SAGA_DEADLINE_MS,
		sagaStepTimeoutMs: v.SAGA_STEP_TIMEOUT_MS,
		sagaStepMaxAttempts: v.SAGA_STEP_MAX_ATTEMPTS,
		sagaLeaseMs: v.SAGA_LEASE_MS,
		sagaRecoveryIntervalMs: v.SAGA_RECOVERY_INTERVAL_MS,
		sagaMaxInFlight: v.SAGA_MAX_IN_FLIGHT,
		sagaTargetLatencyMs: v.SAGA_TARGET_LATENCY_MS,
		sagaMinInFlight: v.SAGA_MIN_IN_FLIGHT,
		sagaAdmissionWaitMs: v.SAGA_ADMISSION_WAIT_MS,
		ordersMaxInFlightPerCustomer: v.ORDERS_MAX_IN_FLIGHT_PER_CUSTOMER,
		ordersMaxUnitsReservedPerCustomer: v.ORDERS_MAX_UNITS_RESERVED_PER_CUSTOMER,
		ordersStuckAfterMs: v.ORDERS_STUCK_AFTER_MS ?? v.SAGA_DEADLINE_MS + 60_000,
		ordersStuckCheckIntervalMs: v.ORDERS_STUCK_CHECK_INTERVAL_MS,
		reservationTtlMs: v.RESERVATION_TTL_MS,
		reservationSweepIntervalMs: v.RESERVATION_SWEEP_INTERVAL_MS,
		// The injected faults are ignored (not even parsed) in production.
		sagaFaults: production ? [] : parseFaults(v.SAGA_FAULTS),
		paymentsSimulatedFaults: v.PAYMENTS_SIMULATED_FAULTS ?? !production,
		outboxPollMs: v.OUTBOX_POLL_MS,
		outboxBatchDelayMs: v.OUTBOX_BATCH_DELAY_MS,
		outboxFaults: production ? [] : parseOutboxFaults(v.OUTBOX_FAULTS),
		eventMaxDeliver: v.EVENT_MAX_DELIVER,
		eventAckWaitMs: v.EVENT_ACK_WAIT_MS,
		smtpUrl: v.SMTP_URL,
		smtpFrom: v.SMTP_FROM,
		smtpMaxAttempts: v.SMTP_MAX_ATTEMPTS,
		smtpRetryDelayMs: v.SMTP_RETRY_DELAY_MS,
		bodyLimit: v.BODY_LIMIT,
		corsOrigins: v.CORS_ORIGINS === "*" ? "*" : v.CORS_ORIGINS.split(",").map(s => s.trim()),
		rateLimitMax: v.RATE_LIMIT_MAX,
		rateLimitWindowMs: v.RATE_LIMIT_WINDOW_MS,
		loginMaxFailuresPerAccount: v.LOGIN_MAX_FAILURES_PER_ACCOUNT,
		loginMaxFailuresPerIp: v.LOGIN_MAX_FAILURES_PER_IP,
		orderStreamsMaxPerUser: v.ORDER_STREAMS_MAX_PER_USER,
		orderStreamsMaxPerAddress: v.ORDER_STREAMS_MAX_PER_ADDRESS,
		loginBlockMs: v.LOGIN_BLOCK_MS,
		loginFailureWindowMs: v.LOGIN_FAILURE_WINDOW_MS,
		loginMaxPerAccount: v.LOGIN_MAX_PER_ACCOUNT,
		loginMaxPerIp: v.LOGIN_MAX_PER_IP,
		loginRateWindowMs: v.LOGIN_RATE_WINDOW_MS,
		passwordHashConcurrency:
			v.PASSWORD_HASH_CONCURRENCY ?? Math.max(1, Math.min(os.availableParallelism(), 3)),
		passwordHashMaxQueue: v.PASSWORD_HASH_MAX_QUEUE,
		passwordHashMaxWaitMs: v.PASSWORD_HASH_MAX_WAIT_MS,
		trustedProxies: Object.freeze(trustedProxies),
		natsToken: v.NATS_TOKEN,
		natsTlsCa: v.NATS_TLS_CA,
		natsTlsCert: v.NATS_TLS_CERT,
		natsTlsKey: v.NATS_TLS_KEY,
		natsRandomize: v.NATS_RANDOMIZE,
		jetstreamReplicas: v.JETSTREAM_REPLICAS,
		retention,
		eventsMaxAgeMs: v.EVENTS_MAX_AGE_MS,
		eventsMaxBytes: v.EVENTS_MAX_BYTES,
		eventsConsumerLagAlertMs
	});
}

let current: ShopConfig | null = null;

/** The process's config, loaded from `process.env` on first call. */
export function config(): ShopConfig {
	if (!current) current = loadConfig();
	return current;
}

/**
 * The JWT secret, for the nodes that sign or verify access tokens (the users service): throws
 * `ConfigError` in production when `JWT_SECRET` is unset (other nodes need not have it).
 */
export function requireJwtSecret(): string {
	return config().jwtSecret;
}

/** Replaces the process's config (start-up scripts that set env after import, and tests). */
export function resetConfig(): void {
	current = null;
}

/** A default node id, hostname-pid, as Moleculer would choose. */
export function defaultNodeID(): string {
	return `${os.hostname().toLowerCase()}-${process.pid}`;
}
