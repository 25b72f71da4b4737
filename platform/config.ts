/**
 * The shop's configuration: the ONE module that reads `process.env`.
 *
 * Every variable is parsed and validated once, at first use, and the result is frozen
 * (fastify's habit: start-up options validated once and frozen). Services and mixins import
 * `config()` and never touch `process.env` themselves. The variables and their defaults are the
 * public contract in CONTRACT.md ("Environment").
 *
 * This file reads every variable by name (test/unit/deploy.test.ts lists them from its source);
 * its pieces are in platform/config/: the settings' shape (settings.ts), the parsers (parse.ts),
 * the development JWT secret and the injected faults. It knows no service: a service's own
 * database URL is `<SERVICE>_DATABASE_URL` for any service name.
 */
import os from "node:os";
import path from "node:path";
import net from "node:net";
import { natsConnectionOptions } from "./nats-options";
import { describeWeaknesses, passwordWeaknesses } from "./security/password-policy";
import { placeholderSecret } from "./security/secrets";
import { developmentSecret } from "./config/development-secret";
import { parseFaults, parseOutboxFaults } from "./config/faults";
import { bool, ConfigError, int, readableFile, str, url, type Env } from "./config/parse";
import type {
	DatabaseService,
	LogFormat,
	LogLevel,
	RetentionConfig,
	OtlpTracingConfig,
	ShopConfig,
	TracingExporter
} from "./config/settings";
import {
	otlpTracesUrl,
	parseResourceAttributes,
	parseTracesExporter
} from "./tracing/otel-settings";

export { ConfigError } from "./config/parse";
export type {
	DatabaseService,
	LogFormat,
	LogLevel,
	RetentionConfig,
	OtlpTracingConfig,
	ShopConfig,
	TracingExporter
} from "./config/settings";

/** The schemes of an OTLP/HTTP endpoint. */
const HTTP = ["http:", "https:"];

/**
 * Default of `RATE_LIMIT_MAX`: requests per client address per window (60 s by default), 100 a
 * second on average. Generous on purpose: many clients can share one address (NAT, proxies), and
 * a busy client polling its orders (test/e2e: 50 at once, every 100 ms) makes ~800 a minute.
 */
export const RATE_LIMIT_MAX_DEFAULT = 6000;

/**
 * The variable of one service's own database (`orders` → `ORDERS_DATABASE_URL`): a full URL,
 * database name included, that overrides `DATABASE_URL` for that service.
 */
export function serviceDatabaseUrlVariable(s: DatabaseService): string {
	return `${s.toUpperCase()}_DATABASE_URL`;
}

/**
 * Every `<SERVICE>_DATABASE_URL` set in `env` (the service's name being a lowercase identifier,
 * `[a-z][a-z0-9]*`), validated, by service name.
 */
function serviceDatabaseUrlsOf(env: Env): Record<DatabaseService, string> {
	const urls: Record<DatabaseService, string> = {};
	for (const name of Object.keys(env).sort()) {
		const m = /^([A-Z][A-Z0-9]*)_DATABASE_URL$/.exec(name);
		if (!m) continue;
		const s = m[1]!.toLowerCase();
		const u = url(env, serviceDatabaseUrlVariable(s), ["postgres:", "postgresql:"]);
		if (u) urls[s] = u;
	}
	return urls;
}

const DAY_MS = 24 * 3600_000;

/**
 * `TRANSPORTER`: one NATS URL or a comma-separated list of them, one per server of a cluster
 * (`nats://a:4222,nats://b:4222`, spaces after the commas allowed), each `nats:` or `tls:`.
 * @returns the list without spaces or empty entries, or null when unset
 * @throws ConfigError naming the (redacted) entry that is not a NATS URL
 */
function transporterList(env: Env): string | null {
	const raw = str(env, "TRANSPORTER");
	if (raw === null) return null;
	const parts = raw
		.split(",")
		.map(p => p.trim())
		.filter(Boolean);
	if (parts.length === 0) throw new ConfigError("TRANSPORTER lists no NATS server");
	for (const part of parts) url({ TRANSPORTER: part }, "TRANSPORTER", ["nats:", "tls:"]);
	return parts.join(",");
}

/**
 * The retention settings (docs/retention.md gives each default's reason). Windows that guard a
 * saga's retries are checked against the saga's own bounds.
 */
function retentionConfig(
	env: Env,
	sagaDeadlineMs: number,
	reservationTtlMs: number
): RetentionConfig {
	const idempotencyKeyMs = int(
		env,
		"IDEMPOTENCY_KEY_RETENTION_MS",
		7 * DAY_MS,
		3600_000,
		365 * DAY_MS
	);
	if (idempotencyKeyMs < Math.max(sagaDeadlineMs, reservationTtlMs))
		throw new ConfigError(
			`IDEMPOTENCY_KEY_RETENTION_MS (${idempotencyKeyMs}) must not be below SAGA_DEADLINE_MS nor RESERVATION_TTL_MS`
		);
	const reservationMs = int(
		env,
		"RESERVATION_RETENTION_MS",
		30 * DAY_MS,
		3600_000,
		3650 * DAY_MS
	);
	if (reservationMs < idempotencyKeyMs)
		throw new ConfigError(
			`RESERVATION_RETENTION_MS (${reservationMs}) must not be below IDEMPOTENCY_KEY_RETENTION_MS (${idempotencyKeyMs})`
		);
	return Object.freeze({
		intervalMs: int(env, "RETENTION_INTERVAL_MS", 3600_000, 1_000, 7 * DAY_MS),
		batchSize: int(env, "RETENTION_BATCH_SIZE", 500, 1, 100_000),
		batchPauseMs: int(env, "RETENTION_BATCH_PAUSE_MS", 100, 0, 60_000),
		outboxMs: int(env, "OUTBOX_RETENTION_MS", 7 * DAY_MS, 60_000, 3650 * DAY_MS),
		inboxMs: int(env, "INBOX_RETENTION_MS", 8 * DAY_MS, 600_000, 3650 * DAY_MS),
		idempotencyKeyMs,
		sagaMs: int(env, "SAGA_RETENTION_MS", 30 * DAY_MS, 3600_000, 3650 * DAY_MS),
		sagaErrorsKeep: int(env, "SAGA_ERRORS_KEEP", 20, 1, 1_000),
		deadLetterMs: int(env, "DEAD_LETTER_RETENTION_MS", 30 * DAY_MS, 3600_000, 3650 * DAY_MS),
		reservationMs
	});
}

/** Parses and validates an environment into a frozen config. Throws `ConfigError`. */
export function loadConfig(env: Env = process.env): ShopConfig {
	const nodeEnv = str(env, "NODE_ENV") ?? "development";
	if (!["development", "production", "test"].includes(nodeEnv))
		throw new ConfigError(`NODE_ENV must be development, production or test, got "${nodeEnv}"`);
	const production = nodeEnv === "production";
	const dataDir = path.resolve(str(env, "DATA_DIR") ?? ".data");

	const serviceDatabaseUrls = serviceDatabaseUrlsOf(env);

	const prefix = str(env, "DATABASE_PREFIX") ?? "";
	if (!/^[a-z0-9_]{0,30}$/.test(prefix))
		throw new ConfigError(`DATABASE_PREFIX must match [a-z0-9_]{0,30}, got "${prefix}"`);

	// In production no secret may still hold a placeholder of the deployment files or the docs
	// (platform/security/secrets.ts), named in the error.
	if (production) {
		const placeholder = placeholderSecret(
			env,
			Object.keys(serviceDatabaseUrls).map(serviceDatabaseUrlVariable)
		);
		if (placeholder) throw new ConfigError(placeholder);
	}

	let jwtSecret = str(env, "JWT_SECRET");
	let jwtSecretGenerated = false;
	if (jwtSecret === null) {
		// Production: only the nodes that sign or verify tokens (users) need it; they read
		// `jwtSecret` (or `requireJwtSecret()`), which throws there (see the getter below).
		if (!production) {
			jwtSecret = developmentSecret(dataDir);
			jwtSecretGenerated = true;
		}
	} else if (jwtSecret.length < 32) {
		throw new ConfigError("JWT_SECRET must be at least 32 characters");
	}

	const tracing = str(env, "TRACING_EXPORTER");
	if (tracing !== null && !["console", "jaeger"].includes(tracing))
		throw new ConfigError(`TRACING_EXPORTER must be console or jaeger, got "${tracing}"`);
	const jaegerEndpoint = url(env, "JAEGER_ENDPOINT", ["http:", "https:"]);
	if (tracing === "jaeger" && !jaegerEndpoint)
		throw new ConfigError("TRACING_EXPORTER=jaeger needs JAEGER_ENDPOINT");
	// OpenTelemetry's variables (docs/tracing.md): OTLP/HTTP export, besides TRACING_EXPORTER's.
	let otlpTracing: OtlpTracingConfig | null = null;
	try {
		const otlpTracesEndpoint = url(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", HTTP);
		const otlpEndpoint = url(env, "OTEL_EXPORTER_OTLP_ENDPOINT", HTTP);
		const otelServiceName = str(env, "OTEL_SERVICE_NAME");
		const otelResource = parseResourceAttributes(str(env, "OTEL_RESOURCE_ATTRIBUTES"));
		const otelDelay = int(env, "OTEL_BSP_SCHEDULE_DELAY", 5_000, 1, 600_000);
		if (parseTracesExporter(str(env, "OTEL_TRACES_EXPORTER")) === "otlp")
			otlpTracing = {
				tracesUrl: otlpTracesUrl(otlpTracesEndpoint, otlpEndpoint),
				serviceName: otelServiceName,
				resourceAttributes: Object.freeze(otelResource),
				scheduleDelayMs: otelDelay
			};
	} catch (err) {
		throw err instanceof ConfigError ? err : new ConfigError((err as Error).message);
	}

	const logLevel = (str(env, "LOGLEVEL") ?? "info") as LogLevel;
	if (!["fatal", "error", "warn", "info", "debug", "trace"].includes(logLevel))
		throw new ConfigError(`LOGLEVEL must be a Moleculer log level, got "${logLevel}"`);
	const logFormat = (str(env, "LOG_FORMAT") ?? (production ? "json" : "pretty")) as LogFormat;
	if (!["json", "pretty"].includes(logFormat))
		throw new ConfigError(`LOG_FORMAT must be json or pretty, got "${logFormat}"`);

	const adminEmail = (str(env, "ADMIN_EMAIL") ?? "admin@example.com").toLowerCase();
	const adminPassword = str(env, "ADMIN_PASSWORD");
	if (adminPassword !== null) {
		// The administrator's password follows the customers' policy (platform/security/password-policy.ts).
		const weak = passwordWeaknesses(adminPassword, adminEmail);
		if (weak.length > 0)
			throw new ConfigError(
				`ADMIN_PASSWORD: ${describeWeaknesses(weak)} (${weak.join(", ")})`
			);
	}

	const cors = str(env, "CORS_ORIGINS") ?? "*";

	const trustedProxies = (str(env, "TRUSTED_PROXIES") ?? "")
		.split(",")
		.map(s => s.trim())
		.filter(Boolean);
	for (const ip of trustedProxies)
		if (net.isIP(ip) === 0)
			throw new ConfigError(`TRUSTED_PROXIES must list IP addresses, got "${ip}"`);

	const transporter = transporterList(env);
	const natsToken = str(env, "NATS_TOKEN");
	const natsTlsCa = readableFile("NATS_TLS_CA", str(env, "NATS_TLS_CA"));
	const natsTlsCert = readableFile("NATS_TLS_CERT", str(env, "NATS_TLS_CERT"));
	const natsTlsKey = readableFile("NATS_TLS_KEY", str(env, "NATS_TLS_KEY"));
	if ((natsTlsCert === null) !== (natsTlsKey === null))
		throw new ConfigError("NATS_TLS_CERT and NATS_TLS_KEY go together");
	if (transporter) {
		try {
			natsConnectionOptions(transporter, { token: natsToken });
		} catch (err) {
			throw new ConfigError(`TRANSPORTER: ${(err as Error).message}`);
		}
	}

	const jetstreamReplicas = int(env, "JETSTREAM_REPLICAS", 1, 1, 5);

	// A reservation must outlive the part of its saga that can still give it up (up to the pivot,
	// bounded by the deadline): a shorter TTL would cancel healthy orders as TIMEOUT.
	const sagaDeadlineMs = int(env, "SAGA_DEADLINE_MS", 30_000, 1_000, 24 * 3600_000);
	const reservationTtlMs = int(env, "RESERVATION_TTL_MS", 120_000, 500, 7 * 24 * 3600_000);
	if (reservationTtlMs < sagaDeadlineMs)
		throw new ConfigError(
			`RESERVATION_TTL_MS (${reservationTtlMs}) must not be below SAGA_DEADLINE_MS (${sagaDeadlineMs})`
		);

	const retention = retentionConfig(env, sagaDeadlineMs, reservationTtlMs);
	const eventsMaxAgeMs = int(env, "EVENTS_MAX_AGE_MS", 7 * DAY_MS, 600_000, 365 * DAY_MS);
	const eventsConsumerLagAlertMs = int(
		env,
		"EVENTS_CONSUMER_LAG_ALERT_MS",
		Math.floor(eventsMaxAgeMs / 2),
		1_000,
		365 * DAY_MS
	);
	if (eventsConsumerLagAlertMs >= eventsMaxAgeMs)
		throw new ConfigError(
			`EVENTS_CONSUMER_LAG_ALERT_MS (${eventsConsumerLagAlertMs}) must be below EVENTS_MAX_AGE_MS (${eventsMaxAgeMs})`
		);
	// Deduplication must outlive redelivery: the stream may deliver an event again until it ages out.
	if (retention.inboxMs < eventsMaxAgeMs)
		throw new ConfigError(
			`INBOX_RETENTION_MS (${retention.inboxMs}) must not be below EVENTS_MAX_AGE_MS (${eventsMaxAgeMs})`
		);

	// E-mail (services/notifications/mailer.ts, docs/email.md): without SMTP_URL, the record alone.
	const smtpUrl = url(env, "SMTP_URL", ["smtp:", "smtps:"]);
	const smtpFrom = str(env, "SMTP_FROM") ?? '"Moleculer Shop" <shop@example.com>';
	if (!/^(?:[^<>@]*<[^\s<>@]+@[^\s<>@]+>|[^\s<>@]+@[^\s<>@]+)$/.test(smtpFrom))
		throw new ConfigError(
			`SMTP_FROM must be an address or "Name <address>", got "${smtpFrom}"`
		);

	return Object.freeze({
		env: nodeEnv as ShopConfig["env"],
		production,
		port: int(env, "PORT", 3000, 0, 65535),
		nodeID: str(env, "NODE_ID"),
		transporter,
		cacher: url(env, "CACHER", ["redis:", "rediss:"]),
		databaseUrl: url(env, "DATABASE_URL", ["postgres:", "postgresql:"]),
		serviceDatabaseUrls: Object.freeze(serviceDatabaseUrls),
		databasePreparedStatements: bool(env, "DATABASE_PREPARED_STATEMENTS", true),
		databasePrefix: prefix,
		dataDir,
		embeddedPostgresPort: int(env, "EMBEDDED_POSTGRES_PORT", 5439, 1, 65535),
		metricsPort: int(env, "METRICS_PORT", 3030, 0, 65535),
		healthPort: int(env, "HEALTH_PORT", 3031, 0, 65535),
		failoverProbeMs: int(env, "FAILOVER_PROBE_MS", 500, 0, 60_000),
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
		jwtExpiresInSeconds: int(env, "JWT_EXPIRES_IN", 3600, 60, 30 * 24 * 3600),
		adminEmail,
		adminPassword,
		tracingExporter: tracing as TracingExporter,
		jaegerEndpoint,
		otlpTracing,
		logLevel,
		logFormat,
		sagaDeadlineMs,
		sagaStepTimeoutMs: int(env, "SAGA_STEP_TIMEOUT_MS", 5_000, 100, 600_000),
		sagaStepMaxAttempts: int(env, "SAGA_STEP_MAX_ATTEMPTS", 100, 1, 100_000),
		sagaLeaseMs: int(env, "SAGA_LEASE_MS", 15_000, 200, 3600_000),
		sagaRecoveryIntervalMs: int(env, "SAGA_RECOVERY_INTERVAL_MS", 5_000, 50, 3600_000),
		sagaMaxInFlight: int(env, "SAGA_MAX_IN_FLIGHT", 400, 1, 1_000_000),
		sagaTargetLatencyMs: int(env, "SAGA_TARGET_LATENCY_MS", 0, 0, 600_000),
		sagaMinInFlight: int(env, "SAGA_MIN_IN_FLIGHT", 10, 1, 1_000_000),
		ordersMaxInFlightPerCustomer: int(
			env,
			"ORDERS_MAX_IN_FLIGHT_PER_CUSTOMER",
			20,
			0,
			1_000_000
		),
		ordersMaxUnitsReservedPerCustomer: int(
			env,
			"ORDERS_MAX_UNITS_RESERVED_PER_CUSTOMER",
			1_000,
			0,
			1_000_000_000
		),
		ordersStuckAfterMs: int(
			env,
			"ORDERS_STUCK_AFTER_MS",
			sagaDeadlineMs + 60_000,
			1_000,
			30 * DAY_MS
		),
		ordersStuckCheckIntervalMs: int(env, "ORDERS_STUCK_CHECK_INTERVAL_MS", 30_000, 0, 3600_000),
		reservationTtlMs,
		reservationSweepIntervalMs: int(env, "RESERVATION_SWEEP_INTERVAL_MS", 5_000, 50, 3600_000),
		sagaFaults: production ? [] : parseFaults(str(env, "SAGA_FAULTS")),
		paymentsSimulatedFaults: bool(env, "PAYMENTS_SIMULATED_FAULTS", !production),
		outboxPollMs: int(env, "OUTBOX_POLL_MS", 1_000, 10, 3600_000),
		outboxBatchDelayMs: int(env, "OUTBOX_BATCH_DELAY_MS", 5, 0, 1_000),
		outboxFaults: production ? [] : parseOutboxFaults(str(env, "OUTBOX_FAULTS")),
		eventMaxDeliver: int(env, "EVENT_MAX_DELIVER", 5, 1, 1_000),
		eventAckWaitMs: int(env, "EVENT_ACK_WAIT_MS", 30_000, 1_000, 3600_000),
		smtpUrl,
		smtpFrom,
		smtpMaxAttempts: int(env, "SMTP_MAX_ATTEMPTS", 8, 1, 100),
		smtpRetryDelayMs: int(env, "SMTP_RETRY_DELAY_MS", 60_000, 10, 24 * 3600_000),
		bodyLimit: str(env, "BODY_LIMIT") ?? "1mb",
		corsOrigins: cors === "*" ? "*" : cors.split(",").map(s => s.trim()),
		rateLimitMax: int(env, "RATE_LIMIT_MAX", RATE_LIMIT_MAX_DEFAULT, 0, 1_000_000_000),
		rateLimitWindowMs: int(env, "RATE_LIMIT_WINDOW_MS", 60_000, 1_000, 24 * 3600_000),
		loginMaxFailuresPerAccount: int(env, "LOGIN_MAX_FAILURES_PER_ACCOUNT", 10, 0, 1_000_000),
		loginMaxFailuresPerIp: int(env, "LOGIN_MAX_FAILURES_PER_IP", 100, 0, 1_000_000),
		orderStreamsMaxPerUser: int(env, "ORDER_STREAMS_MAX_PER_USER", 5, 0, 1_000_000),
		orderStreamsMaxPerAddress: int(env, "ORDER_STREAMS_MAX_PER_ADDRESS", 50, 0, 1_000_000),
		loginBlockMs: int(env, "LOGIN_BLOCK_MS", 15 * 60_000, 1_000, 7 * 24 * 3600_000),
		loginFailureWindowMs: int(
			env,
			"LOGIN_FAILURE_WINDOW_MS",
			24 * 3600_000,
			1_000,
			90 * 24 * 3600_000
		),
		loginMaxPerAccount: int(env, "LOGIN_MAX_PER_ACCOUNT", 30, 0, 1_000_000),
		loginMaxPerIp: int(env, "LOGIN_MAX_PER_IP", 600, 0, 1_000_000_000),
		loginRateWindowMs: int(env, "LOGIN_RATE_WINDOW_MS", 60_000, 1_000, 24 * 3600_000),
		passwordHashConcurrency: int(
			env,
			"PASSWORD_HASH_CONCURRENCY",
			Math.max(1, Math.min(os.availableParallelism(), 3)),
			1,
			1_024
		),
		passwordHashMaxQueue: int(env, "PASSWORD_HASH_MAX_QUEUE", 200, 0, 1_000_000),
		passwordHashMaxWaitMs: int(env, "PASSWORD_HASH_MAX_WAIT_MS", 7_000, 1, 600_000),
		trustedProxies: Object.freeze(trustedProxies),
		natsToken,
		natsTlsCa,
		natsTlsCert,
		natsTlsKey,
		natsRandomize: bool(env, "NATS_RANDOMIZE", true),
		jetstreamReplicas,
		retention,
		eventsMaxAgeMs,
		eventsMaxBytes: int(env, "EVENTS_MAX_BYTES", 1024 ** 3, 65_536, 2 ** 50),
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
