/**
 * The shop's configuration: the ONE module that reads `process.env`.
 *
 * Every variable is parsed and validated once, at first use, and the result is frozen
 * (fastify's habit: start-up options validated once and frozen). Services and mixins import
 * `config()` and never touch `process.env` themselves. The variables and their defaults are the
 * public contract in CONTRACT.md ("Environment").
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import net from "node:net";
import { natsConnectionOptions, redactUrl } from "./nats-options";
import { describeWeaknesses, passwordWeaknesses } from "./security/password-policy";
import { placeholderSecret } from "./security/secrets";

/** The services that own a database, each its own database on one Postgres server. */
export const DATABASE_SERVICES = [
	"users",
	"products",
	"inventory",
	"orders",
	"payments",
	"notifications"
] as const;
export type DatabaseService = (typeof DATABASE_SERVICES)[number];

/**
 * Default of `RATE_LIMIT_MAX`: requests per client address per window (60 s by default), 100 a
 * second on average. Generous on purpose: many clients can share one address (NAT, proxies), and
 * a busy client polling its orders (test/e2e: 50 at once, every 100 ms) makes ~800 a minute.
 */
export const RATE_LIMIT_MAX_DEFAULT = 6000;

export type TracingExporter = "console" | "jaeger" | null;
export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace";
/** `json`: one JSON object per line (production); `pretty`: readable lines (development). */
export type LogFormat = "json" | "pretty";

export interface ShopConfig {
	/**
	 * `development` or `production`; production hides error internals, refuses placeholder
	 * secrets (platform/security/secrets.ts) and requires JWT_SECRET where tokens are signed or verified.
	 */
	readonly env: "development" | "production" | "test";
	readonly production: boolean;
	/** Gateway HTTP port. */
	readonly port: number;
	/** Moleculer nodeID; `null` lets Moleculer use hostname-pid. */
	readonly nodeID: string | null;
	/** Transporter URL, e.g. `nats://127.0.0.1:4222`; `null` runs in one process. */
	readonly transporter: string | null;
	/** Redis URL for the cacher; `null` uses the in-memory cacher. */
	readonly cacher: string | null;
	/** Postgres server URL without a database name; `null` means the embedded Postgres. */
	readonly databaseUrl: string | null;
	/**
	 * `DATABASE_PREPARED_STATEMENTS` (true): run parameterised queries as named prepared
	 * statements (parsed once per connection, plans reused). Set false behind a connection pooler
	 * that does not keep prepared statements across transactions.
	 */
	readonly databasePreparedStatements: boolean;
	/** Per-service overrides (`<SERVICE>_DATABASE_URL`), full URLs including the database name. */
	readonly serviceDatabaseUrls: Readonly<Partial<Record<DatabaseService, string>>>;
	/** Prefix of every database name (tests use it to isolate runs on one server). */
	readonly databasePrefix: string;
	/** Directory of local state: the embedded Postgres, the development JWT secret. */
	readonly dataDir: string;
	/** Port of the embedded Postgres. */
	readonly embeddedPostgresPort: number;
	/** Prometheus `/metrics` port of this node; 0 = off. */
	readonly metricsPort: number;
	/** This node's `/health` and `/ready` port (platform/node-health.ts); 0 = off. */
	readonly healthPort: number;
	/**
	 * `FAILOVER_PROBE_MS` (500): a remote call outstanding this long makes its target node be
	 * probed through NATS; a node with no subscription left (killed) is dropped at once and its
	 * calls retried elsewhere (platform/failover.ts, docs/failover.md). 0 = off (heartbeats only).
	 */
	readonly failoverProbeMs: number;
	/** HMAC secret of access tokens. */
	readonly jwtSecret: string;
	/** Whether `jwtSecret` was generated for this data dir (development only). */
	readonly jwtSecretGenerated: boolean;
	/** Lifetime of an access token, in seconds. */
	readonly jwtExpiresInSeconds: number;
	readonly adminEmail: string;
	/** `null`: generated and printed when the administrator is first seeded. */
	readonly adminPassword: string | null;
	readonly tracingExporter: TracingExporter;
	readonly jaegerEndpoint: string | null;
	readonly logLevel: LogLevel;
	/** Log line format (`LOG_FORMAT`); default `json` in production, `pretty` otherwise. */
	readonly logFormat: LogFormat;
	/** Overall deadline of one order saga, in ms. */
	readonly sagaDeadlineMs: number;
	/** Timeout of one saga step call, in ms. */
	readonly sagaStepTimeoutMs: number;
	/**
	 * Attempts of a saga step on transient failures, the first included (`SAGA_STEP_MAX_ATTEMPTS`):
	 * after the pivot, the retry budget before the saga is parked (100: about 95 s of backoff);
	 * before it, the deadline usually ends the retries first.
	 */
	readonly sagaStepMaxAttempts: number;
	/** How long a node's claim on a running saga lasts without renewal, in ms (crash recovery). */
	readonly sagaLeaseMs: number;
	/** How often an orders node looks for sagas whose lease expired, in ms. */
	readonly sagaRecoveryIntervalMs: number;
	/**
	 * Backpressure: sagas one orders node runs at once (`SAGA_MAX_IN_FLIGHT`); past it new orders
	 * are refused with 503 ORDERS_OVERLOADED and `Retry-After` instead of queueing without bound.
	 */
	readonly sagaMaxInFlight: number;
	/**
	 * Per-customer bounds on `orders.create` (issue 16, item 6): a customer's orders in flight (not
	 * yet CONFIRMED or CANCELLED, parked ones included: `ORDERS_MAX_IN_FLIGHT_PER_CUSTOMER`, 20)
	 * and the units they hold (`ORDERS_MAX_UNITS_RESERVED_PER_CUSTOMER`, 1000). Past either,
	 * 429 `ORDERS_CUSTOMER_LIMIT` with `Retry-After`. Counted in the order's own INSERT under a
	 * per-customer lock in the orders database: exact across every orders node. `0` = off.
	 */
	readonly ordersMaxInFlightPerCustomer: number;
	readonly ordersMaxUnitsReservedPerCustomer: number;
	/**
	 * Operator visibility: an order still in a non-terminal status (not CONFIRMED, CANCELLED or
	 * REFUNDED) this long (ms) after it was placed, or a refund this long after it was asked for,
	 * is stuck (`ORDERS_STUCK_AFTER_MS`, default `SAGA_DEADLINE_MS` + 60 000): counted in the
	 * `shop_orders_stuck{status}` gauge, listed by `orders.stuck` (REPL `orders stuck`, the
	 * dashboard). `ORDERS_STUCK_CHECK_INTERVAL_MS` (30 000): how often each orders node recounts
	 * the gauge; `0` = never (the action still answers).
	 */
	readonly ordersStuckAfterMs: number;
	readonly ordersStuckCheckIntervalMs: number;
	/**
	 * Time-to-live of a stock reservation that is neither committed nor released, in ms; never
	 * below `sagaDeadlineMs` (refused at start-up). Counted on the database's clock.
	 */
	readonly reservationTtlMs: number;
	/** How often inventory releases expired reservations, in ms. */
	readonly reservationSweepIntervalMs: number;
	/**
	 * Injected faults for failure tests (ignored when NODE_ENV=production), from `SAGA_FAULTS`:
	 * comma-separated `crash-before:<step>` / `crash-after:<step>` (the process SIGKILLs itself
	 * right before invoking, or right after recording the outcome of, that saga step).
	 */
	readonly sagaFaults: readonly { kind: "crash-before" | "crash-after"; step: string }[];
	/**
	 * `PAYMENTS_SIMULATED_FAULTS`: whether the simulated processor's fault tokens and switches
	 * work (`tok_processorUnavailable`, `payments.simulateOutage`); default on, except with
	 * NODE_ENV=production, where such a token is refused as `PAYMENTS_INVALID_METHOD` unless
	 * this is set to true (services/payments/payments.service.ts).
	 */
	readonly paymentsSimulatedFaults: boolean;
	/** How often each emitting service's outbox relay looks for unsent events, in ms. */
	/**
	 * `OUTBOX_BATCH_DELAY_MS` (5): how long a woken outbox relay waits before its pass, so that
	 * the events of transactions committing meanwhile go in the same pass (0: at once).
	 */
	readonly outboxBatchDelayMs: number;
	readonly outboxPollMs: number;
	/**
	 * Injected outbox faults for failure tests (ignored when NODE_ENV=production), from
	 * `OUTBOX_FAULTS`: `crash-before-publish` / `crash-after-publish` (the relay's process
	 * SIGKILLs itself right before publishing an event, or after publishing and before marking it).
	 */
	readonly outboxFaults: readonly ("crash-before-publish" | "crash-after-publish")[];
	/** Deliveries of a durable event before its consumer dead-letters it. */
	readonly eventMaxDeliver: number;
	/** How long JetStream waits for a consumer's ack before redelivering, in ms. */
	readonly eventAckWaitMs: number;
	/** Largest accepted JSON body, as a body-parser limit string. */
	readonly bodyLimit: string;
	/** CORS allowed origins (`*` or a comma-separated list). */
	readonly corsOrigins: string | string[];
	/**
	 * Requests one client address may make to `/api` per rate limit window (`RATE_LIMIT_MAX`);
	 * 0 turns the rate limiter off. Counted in Redis (`cacher`'s URL, shared by every gateway)
	 * when `CACHER` is set, else in the gateway's memory.
	 */
	readonly rateLimitMax: number;
	/** Length of the rate limiter's fixed window, in ms (`RATE_LIMIT_WINDOW_MS`). */
	readonly rateLimitWindowMs: number;
	/**
	 * Failed logins of one account (from any address) before its logins are refused for
	 * `loginBlockMs` (`LOGIN_MAX_FAILURES_PER_ACCOUNT`); 0 = not counted. services/users/login-throttle.ts.
	 */
	readonly loginMaxFailuresPerAccount: number;
	/**
	 * Failed logins from one client address (any accounts) before its logins are refused for
	 * `loginBlockMs` (`LOGIN_MAX_FAILURES_PER_IP`); 0 = not counted.
	 */
	readonly loginMaxFailuresPerIp: number;
	/**
	 * Order streams (`GET /api/orders/:id/events`) one user may hold open on one gateway node,
	 * those still being authorised included (`ORDER_STREAMS_MAX_PER_USER`, 5); past it 429
	 * `ORDERS_STREAM_LIMIT` with `Retry-After`. 0 = off. mixins/web.mixin.ts.
	 */
	readonly orderStreamsMaxPerUser: number;
	/** The same bound per client address (`ORDER_STREAMS_MAX_PER_ADDRESS`, 50); 0 = off. */
	readonly orderStreamsMaxPerAddress: number;
	/** How long a login block lasts, in ms (`LOGIN_BLOCK_MS`). */
	readonly loginBlockMs: number;
	/** How long a failed login is remembered, in ms (`LOGIN_FAILURE_WINDOW_MS`). */
	readonly loginFailureWindowMs: number;
	/**
	 * Successful logins of one account (from any address) per `loginRateWindowMs` before its
	 * further logins are refused until the window ends (`LOGIN_MAX_PER_ACCOUNT`, 30); 0 = not
	 * counted. Each login costs a password hash; a person logs in a few times a day.
	 */
	readonly loginMaxPerAccount: number;
	/**
	 * Successful logins from one client address (any accounts) per `loginRateWindowMs`
	 * (`LOGIN_MAX_PER_IP`, 600): room for an office or a carrier's NAT; 0 = not counted.
	 */
	readonly loginMaxPerIp: number;
	/** The fixed window of the successful-login counts, in ms (`LOGIN_RATE_WINDOW_MS`, 60000). */
	readonly loginRateWindowMs: number;
	/**
	 * Password hashes and verifications one users node runs at once (`PASSWORD_HASH_CONCURRENCY`);
	 * default: the CPUs available to the process, at most 3 (argon2 runs on libuv's thread pool
	 * of 4, which file I/O and DNS lookups share). services/users/password-hasher.ts.
	 */
	readonly passwordHashConcurrency: number;
	/**
	 * Hashes that may wait for a slot (`PASSWORD_HASH_MAX_QUEUE`); past it a sign-up or login is
	 * refused at once with 429 `USERS_BUSY` and `Retry-After`.
	 */
	readonly passwordHashMaxQueue: number;
	/**
	 * Longest wait of a hash for a slot, in ms (`PASSWORD_HASH_MAX_WAIT_MS`, 7000); a request
	 * still waiting then is refused with 429 `USERS_BUSY`, leaving 3 s of the gateway's 10 s
	 * timeout for the hash itself and the database.
	 */
	readonly passwordHashMaxWaitMs: number;
	/**
	 * Addresses of reverse proxies whose `X-Forwarded-For` the gateway believes (`TRUSTED_PROXIES`,
	 * comma-separated IPs); empty: the client address is always the TCP peer.
	 */
	readonly trustedProxies: readonly string[];
	/** Token for the NATS server (`NATS_TOKEN`); a token or user:password may also be in the URL. */
	readonly natsToken: string | null;
	/** PEM file of the CA of the NATS server's certificate (`NATS_TLS_CA`); makes TLS required. */
	readonly natsTlsCa: string | null;
	/** PEM file of this node's client certificate for NATS (`NATS_TLS_CERT`, with the key). */
	readonly natsTlsCert: string | null;
	/** PEM file of this node's client key for NATS (`NATS_TLS_KEY`, with the certificate). */
	readonly natsTlsKey: string | null;
	/**
	 * Retention (platform/retention.ts, docs/retention.md): what each service's purge job deletes, and
	 * how. Every window is in ms and compared with the database's clock.
	 */
	readonly retention: RetentionConfig;
	/**
	 * The JetStream streams' limits (platform/events/jetstream.ts): `EVENTS_MAX_AGE_MS` (7 d, at least the
	 * 10-minute duplicate window), `EVENTS_MAX_BYTES` (1 GiB) per stream, and
	 * `EVENTS_CONSUMER_LAG_ALERT_MS` (half the max age): a durable consumer whose oldest
	 * unacknowledged event is this old is reported behind (metric, readiness detail).
	 */
	readonly eventsMaxAgeMs: number;
	readonly eventsMaxBytes: number;
	readonly eventsConsumerLagAlertMs: number;
}

/** Retention settings (`RETENTION_*` and one window per table; defaults in docs/retention.md). */
export interface RetentionConfig {
	/** How often each service's purge job runs (`RETENTION_INTERVAL_MS`, 1 h). */
	readonly intervalMs: number;
	/** Rows deleted per statement (`RETENTION_BATCH_SIZE`, 500). */
	readonly batchSize: number;
	/** Pause between two batches (`RETENTION_BATCH_PAUSE_MS`, 100). */
	readonly batchPauseMs: number;
	/** Published outbox rows are kept this long after publication (`OUTBOX_RETENTION_MS`, 7 d). */
	readonly outboxMs: number;
	/**
	 * Inbox records (consumer, event id) are kept this long after processing
	 * (`INBOX_RETENTION_MS`, 8 d); never below `EVENTS_MAX_AGE_MS`, so deduplication outlives
	 * any redelivery of the event by the stream.
	 */
	readonly inboxMs: number;
	/**
	 * Idempotency keys of participants (`IDEMPOTENCY_KEY_RETENTION_MS`, 7 d); never below
	 * `SAGA_DEADLINE_MS` nor `RESERVATION_TTL_MS`.
	 */
	readonly idempotencyKeyMs: number;
	/** Finished sagas (COMPLETED, COMPENSATED) and their steps (`SAGA_RETENTION_MS`, 30 d). */
	readonly sagaMs: number;
	/** Entries of `sagas.errors` kept, the newest (`SAGA_ERRORS_KEEP`, 20). */
	readonly sagaErrorsKeep: number;
	/** Dead letters already replayed (`DEAD_LETTER_RETENTION_MS`, 30 d); pending ones are kept. */
	readonly deadLetterMs: number;
	/**
	 * Reservations in a final status (COMMITTED, RELEASED, REJECTED, EXPIRED) after their last
	 * change (`RESERVATION_RETENTION_MS`, 30 d); never below `IDEMPOTENCY_KEY_RETENTION_MS`.
	 * RESERVED ones (also those kept past the pivot, `expires_at` NULL) are never purged.
	 */
	readonly reservationMs: number;
}

/** Thrown at start-up when the environment is invalid; the process should exit. */
export class ConfigError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "ConfigError";
	}
}

type Env = Record<string, string | undefined>;

function str(env: Env, name: string): string | null {
	const v = env[name];
	return v === undefined || v.trim() === "" ? null : v.trim();
}

function int(env: Env, name: string, def: number, min: number, max: number): number {
	const raw = str(env, name);
	if (raw === null) return def;
	if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be an integer, got "${raw}"`);
	const n = Number(raw);
	if (n < min || n > max) throw new ConfigError(`${name} must be in [${min}, ${max}], got ${n}`);
	return n;
}

function bool(env: Env, name: string, def: boolean): boolean {
	const raw = str(env, name);
	if (raw === null) return def;
	if (raw === "true" || raw === "1") return true;
	if (raw === "false" || raw === "0") return false;
	throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

function url(env: Env, name: string, protocols: string[]): string | null {
	const raw = str(env, name);
	if (raw === null) return null;
	let parsed: URL;
	try {
		parsed = new URL(raw);
	} catch {
		// Redacted: a URL may carry a password (DATABASE_URL, TRANSPORTER, CACHER).
		throw new ConfigError(`${name} is not a URL: "${redactUrl(raw)}"`);
	}
	if (!protocols.includes(parsed.protocol))
		throw new ConfigError(
			`${name} must use ${protocols.join(" or ")}, got "${parsed.protocol}"`
		);
	return raw;
}

/** A file path setting `name` (its value `raw`): `null` when unset; the file must be readable. */
function readableFile(name: string, raw: string | null): string | null {
	if (raw === null) return null;
	const file = path.resolve(raw);
	try {
		fs.accessSync(file, fs.constants.R_OK);
	} catch {
		throw new ConfigError(`${name}: cannot read "${file}"`);
	}
	return file;
}

/**
 * The development JWT secret: generated once per data dir and kept in `<DATA_DIR>/jwt-secret`,
 * so every node started on this machine with the same DATA_DIR agrees on it.
 */
function developmentSecret(dataDir: string): string {
	const file = path.join(dataDir, "jwt-secret");
	try {
		return fs.readFileSync(file, "utf8").trim();
	} catch {
		fs.mkdirSync(dataDir, { recursive: true });
		const secret = crypto.randomBytes(48).toString("base64url");
		try {
			fs.writeFileSync(file, secret + "\n", { mode: 0o600, flag: "wx" });
			return secret;
		} catch {
			// Another process wrote it first: use theirs.
			return fs.readFileSync(file, "utf8").trim();
		}
	}
}

function parseOutboxFaults(raw: string | null): ShopConfig["outboxFaults"] {
	if (!raw) return [];
	return Object.freeze(
		raw.split(",").map(part => {
			const f = part.trim();
			if (f !== "crash-before-publish" && f !== "crash-after-publish")
				throw new ConfigError(
					`OUTBOX_FAULTS: bad entry "${part}" (want crash-before-publish or crash-after-publish)`
				);
			return f;
		})
	);
}

function parseFaults(raw: string | null): ShopConfig["sagaFaults"] {
	if (!raw) return [];
	return Object.freeze(
		raw.split(",").map(part => {
			const m = /^(crash-before|crash-after):([A-Za-z0-9_]+)$/.exec(part.trim());
			if (!m)
				throw new ConfigError(
					`SAGA_FAULTS: bad entry "${part}" (want crash-before:<step> or crash-after:<step>)`
				);
			return Object.freeze({ kind: m[1] as "crash-before" | "crash-after", step: m[2]! });
		})
	);
}

const DAY_MS = 24 * 3600_000;

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

	const serviceDatabaseUrls: Partial<Record<DatabaseService, string>> = {};
	for (const s of DATABASE_SERVICES) {
		const u = url(env, `${s.toUpperCase()}_DATABASE_URL`, ["postgres:", "postgresql:"]);
		if (u) serviceDatabaseUrls[s] = u;
	}

	const prefix = str(env, "DATABASE_PREFIX") ?? "";
	if (!/^[a-z0-9_]{0,30}$/.test(prefix))
		throw new ConfigError(`DATABASE_PREFIX must match [a-z0-9_]{0,30}, got "${prefix}"`);

	// In production no secret may still hold a placeholder of the deployment files or the docs
	// (platform/security/secrets.ts), named in the error.
	if (production) {
		const placeholder = placeholderSecret(
			env,
			DATABASE_SERVICES.map(s => `${s.toUpperCase()}_DATABASE_URL`)
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

	const transporter = url(env, "TRANSPORTER", ["nats:", "tls:"]);
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
		logLevel,
		logFormat,
		sagaDeadlineMs,
		sagaStepTimeoutMs: int(env, "SAGA_STEP_TIMEOUT_MS", 5_000, 100, 600_000),
		sagaStepMaxAttempts: int(env, "SAGA_STEP_MAX_ATTEMPTS", 100, 1, 100_000),
		sagaLeaseMs: int(env, "SAGA_LEASE_MS", 15_000, 200, 3600_000),
		sagaRecoveryIntervalMs: int(env, "SAGA_RECOVERY_INTERVAL_MS", 5_000, 50, 3600_000),
		sagaMaxInFlight: int(env, "SAGA_MAX_IN_FLIGHT", 400, 1, 1_000_000),
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
