/**
 * The config schema: every environment variable the shop reads, declared once with zod 4
 * (platform/config/fields.ts): its kind, default, bounds or choices and whether it is a secret,
 * and, in `ENVIRONMENT_ROWS`, its documentation. platform/config.ts parses `process.env`
 * through `envSchema` and then checks the rules that tie several variables together
 * (RESERVATION_TTL_MS >= SAGA_DEADLINE_MS, NATS_TLS_CERT with NATS_TLS_KEY, placeholder secrets
 * in production, the retention floors ...). tools/config-docs.ts writes docs/CONTRACT.md's
 * environment table from it; test/unit/config-docs.test.ts fails when that table is not what the
 * generator writes, or when the sources read a variable the schema does not declare.
 *
 * `ENV_FIELDS` is in the order the hand-written parser read the variables, so that of two bad
 * values the one named is the one it named (a bad value is now named before a broken rule
 * between values); the table's order is `ENVIRONMENT_ROWS`'.
 */
import { z } from "zod";
import { parseResourceAttributes, parseTracesExporter } from "../tracing/otel-settings";
import { bool, file, int, oneOf, parsed, text, url, urlList } from "./fields";

const DAY_MS = 24 * 3600_000;
const POSTGRES = ["postgres:", "postgresql:"];
const HTTP = ["http:", "https:"];

/**
 * Default of `RATE_LIMIT_MAX`: requests per client address per window (60 s by default), 100 a
 * second on average. Generous on purpose: many clients can share one address (NAT, proxies), and
 * a busy client polling its orders (test/e2e: 50 at once, every 100 ms) makes ~800 a minute.
 */
export const RATE_LIMIT_MAX_DEFAULT = 6000;

/**
 * A service's own database (`<SERVICE>_DATABASE_URL`, e.g. `ORDERS_DATABASE_URL`): a family of
 * variables, one per service name (`[a-z][a-z0-9]*`), each a full URL with the database name.
 */
export const SERVICE_DATABASE_URL = {
	pattern: /^([A-Z][A-Z0-9]*)_DATABASE_URL$/,
	field: url(POSTGRES, { secret: "url" })
} as const;

/** Every variable, by name: its zod schema (its documentation: `describeField`). */
export const ENV_FIELDS = {
	NODE_ENV: oneOf(["development", "production", "test"], "development", {
		message: "development, production or test"
	}),
	DATA_DIR: text(".data", { type: "directory path" }),
	DATABASE_PREFIX: text("", { pattern: /^[a-z0-9_]{0,30}$/, type: "`[a-z0-9_]`, at most 30" }),
	JWT_SECRET: text(null, {
		minLength: 32,
		secret: "value",
		defaultDoc: "generated per data dir in development, with a warning"
	}),
	TRACING_EXPORTER: oneOf(["console", "jaeger"], null, { defaultDoc: "off" }),
	JAEGER_ENDPOINT: url(HTTP),
	OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: url(HTTP, { defaultDoc: "`<base>/v1/traces`" }),
	OTEL_EXPORTER_OTLP_ENDPOINT: url(HTTP, { defaultDoc: "`http://localhost:4318`" }),
	OTEL_SERVICE_NAME: text(null, { defaultDoc: "the span's service" }),
	OTEL_RESOURCE_ATTRIBUTES: parsed(
		parseResourceAttributes,
		"`key=value,...`, percent-encoded",
		"none"
	),
	OTEL_BSP_SCHEDULE_DELAY: int(5_000, 1, 600_000, { ms: true }),
	OTEL_TRACES_EXPORTER: parsed(parseTracesExporter, "one of `otlp`, `none`", "off", [
		"otlp",
		"none"
	]),
	LOGLEVEL: oneOf(["fatal", "error", "warn", "info", "debug", "trace"], "info", {
		message: "a Moleculer log level"
	}),
	LOG_FORMAT: oneOf(["json", "pretty"], null, {
		defaultDoc: "`json` when `NODE_ENV=production`, else `pretty`"
	}),
	ADMIN_EMAIL: text("admin@example.com", { type: "e-mail address" }),
	ADMIN_PASSWORD: text(null, { secret: "value", defaultDoc: "printed at first start" }),
	CORS_ORIGINS: text("*", { type: "`*` or comma-separated origins" }),
	TRUSTED_PROXIES: text(null, {
		type: "comma-separated IP addresses",
		defaultDoc: "none (the TCP peer)"
	}),
	TRANSPORTER: urlList(["nats:", "tls:"], {
		secret: "url",
		defaultDoc: "none (single process)"
	}),
	NATS_TOKEN: text(null, { secret: "value" }),
	NATS_TLS_CA: file(),
	NATS_TLS_CERT: file(),
	NATS_TLS_KEY: file(),
	JETSTREAM_REPLICAS: int(1, 1, 5),
	SAGA_DEADLINE_MS: int(30_000, 1_000, DAY_MS, { ms: true }),
	RESERVATION_TTL_MS: int(120_000, 500, 7 * DAY_MS, { ms: true }),
	IDEMPOTENCY_KEY_RETENTION_MS: int(7 * DAY_MS, 3600_000, 365 * DAY_MS, { ms: true }),
	RESERVATION_RETENTION_MS: int(30 * DAY_MS, 3600_000, 3650 * DAY_MS, { ms: true }),
	RETENTION_INTERVAL_MS: int(3600_000, 1_000, 7 * DAY_MS, { ms: true }),
	RETENTION_BATCH_SIZE: int(500, 1, 100_000),
	RETENTION_BATCH_PAUSE_MS: int(100, 0, 60_000, { ms: true }),
	OUTBOX_RETENTION_MS: int(7 * DAY_MS, 60_000, 3650 * DAY_MS, { ms: true }),
	INBOX_RETENTION_MS: int(8 * DAY_MS, 600_000, 3650 * DAY_MS, { ms: true }),
	SAGA_RETENTION_MS: int(30 * DAY_MS, 3600_000, 3650 * DAY_MS, { ms: true }),
	SAGA_ERRORS_KEEP: int(20, 1, 1_000),
	DEAD_LETTER_RETENTION_MS: int(30 * DAY_MS, 3600_000, 3650 * DAY_MS, { ms: true }),
	EVENTS_MAX_AGE_MS: int(7 * DAY_MS, 600_000, 365 * DAY_MS, { ms: true }),
	EVENTS_CONSUMER_LAG_ALERT_MS: int(null, 1_000, 365 * DAY_MS, {
		ms: true,
		defaultDoc: "half of `EVENTS_MAX_AGE_MS`"
	}),
	SMTP_URL: url(["smtp:", "smtps:"], { secret: "url", defaultDoc: "unset" }),
	SMTP_FROM: text('"Moleculer Shop" <shop@example.com>', {
		pattern: /^(?:[^<>@]*<[^\s<>@]+@[^\s<>@]+>|[^\s<>@]+@[^\s<>@]+)$/,
		patternMessage: 'an address or "Name <address>"',
		type: "`Name <address>` or an address"
	}),
	PORT: int(3000, 0, 65535),
	NODE_ID: text(null, { defaultDoc: "hostname-pid" }),
	CACHER: url(["redis:", "rediss:"], { secret: "url", defaultDoc: "in-memory" }),
	DATABASE_URL: url(POSTGRES, {
		secret: "url",
		defaultDoc: "embedded Postgres under `.data/`"
	}),
	DATABASE_PREPARED_STATEMENTS: bool(true),
	EMBEDDED_POSTGRES_PORT: int(5439, 1, 65535),
	METRICS_PORT: int(3030, 0, 65535),
	HEALTH_PORT: int(3031, 0, 65535),
	FAILOVER_PROBE_MS: int(500, 0, 60_000, { ms: true }),
	JWT_EXPIRES_IN: int(3600, 60, 30 * 24 * 3600, { unit: "seconds" }),
	SAGA_STEP_TIMEOUT_MS: int(5_000, 100, 600_000, { ms: true }),
	SAGA_STEP_MAX_ATTEMPTS: int(100, 1, 100_000),
	SAGA_LEASE_MS: int(15_000, 200, 3600_000, { ms: true }),
	SAGA_RECOVERY_INTERVAL_MS: int(5_000, 50, 3600_000, { ms: true }),
	SAGA_MAX_IN_FLIGHT: int(400, 1, 1_000_000),
	SAGA_TARGET_LATENCY_MS: int(400, 0, 600_000, { ms: true }),
	SAGA_MIN_IN_FLIGHT: int(10, 1, 1_000_000),
	SAGA_ADMISSION_WAIT_MS: int(100, 0, 60_000, { ms: true }),
	ORDERS_MAX_IN_FLIGHT_PER_CUSTOMER: int(20, 0, 1_000_000),
	ORDERS_MAX_UNITS_RESERVED_PER_CUSTOMER: int(1_000, 0, 1_000_000_000),
	ORDERS_STUCK_AFTER_MS: int(null, 1_000, 30 * DAY_MS, {
		ms: true,
		defaultDoc: "`SAGA_DEADLINE_MS` + 60000"
	}),
	ORDERS_STUCK_CHECK_INTERVAL_MS: int(30_000, 0, 3600_000, { ms: true }),
	RESERVATION_SWEEP_INTERVAL_MS: int(5_000, 50, 3600_000, { ms: true }),
	SAGA_FAULTS: text(null, {
		type: "`crash-before:<step>` / `crash-after:<step>`, comma-separated"
	}),
	PAYMENTS_SIMULATED_FAULTS: bool(null, {
		defaultDoc: "`true`, `false` when `NODE_ENV=production`"
	}),
	OUTBOX_POLL_MS: int(1_000, 10, 3600_000, { ms: true }),
	OUTBOX_BATCH_DELAY_MS: int(5, 0, 1_000, { ms: true }),
	OUTBOX_FAULTS: text(null, {
		type: "`crash-before-publish` / `crash-after-publish`, comma-separated"
	}),
	EVENT_MAX_DELIVER: int(5, 1, 1_000),
	EVENT_ACK_WAIT_MS: int(30_000, 1_000, 3600_000, { ms: true }),
	SMTP_MAX_ATTEMPTS: int(8, 1, 100),
	SMTP_RETRY_DELAY_MS: int(60_000, 10, DAY_MS, { ms: true }),
	BODY_LIMIT: text("1mb", { type: "body-parser size (`100kb`, `1mb`)" }),
	RATE_LIMIT_MAX: int(RATE_LIMIT_MAX_DEFAULT, 0, 1_000_000_000),
	RATE_LIMIT_WINDOW_MS: int(60_000, 1_000, DAY_MS, { ms: true }),
	LOGIN_MAX_FAILURES_PER_ACCOUNT: int(10, 0, 1_000_000),
	LOGIN_MAX_FAILURES_PER_IP: int(100, 0, 1_000_000),
	ORDER_STREAMS_MAX_PER_USER: int(5, 0, 1_000_000),
	ORDER_STREAMS_MAX_PER_ADDRESS: int(50, 0, 1_000_000),
	LOGIN_BLOCK_MS: int(15 * 60_000, 1_000, 7 * DAY_MS, { ms: true }),
	LOGIN_FAILURE_WINDOW_MS: int(DAY_MS, 1_000, 90 * DAY_MS, { ms: true }),
	LOGIN_MAX_PER_ACCOUNT: int(30, 0, 1_000_000),
	LOGIN_MAX_PER_IP: int(600, 0, 1_000_000_000),
	LOGIN_RATE_WINDOW_MS: int(60_000, 1_000, DAY_MS, { ms: true }),
	PASSWORD_HASH_CONCURRENCY: int(null, 1, 1_024, {
		defaultDoc: "the available CPUs, at most 3"
	}),
	PASSWORD_HASH_MAX_QUEUE: int(200, 0, 1_000_000),
	PASSWORD_HASH_MAX_WAIT_MS: int(7_000, 1, 600_000, { ms: true }),
	NATS_RANDOMIZE: bool(true),
	EVENTS_MAX_BYTES: int(1024 ** 3, 65_536, 2 ** 50)
};

/** The name of a declared variable. */
export type EnvName = keyof typeof ENV_FIELDS;

/** The environment, parsed: one value per variable, defaults applied (`null`: unset, no default). */
export const envSchema = z.object(ENV_FIELDS);
export type ParsedEnv = z.output<typeof envSchema>;

/**
 * One row of docs/CONTRACT.md's environment table: variables documented together (their
 * meanings separated by ` / ` in the same order), and what they mean. Every variable of
 * `ENV_FIELDS` is in exactly one row; the type and default columns come from the fields.
 */
export interface EnvironmentRow {
	readonly variables: readonly EnvName[];
	readonly meaning: string;
}

/** The environment table, in its order (the texts of CONTRACT.md's hand-written table). */
export const ENVIRONMENT_ROWS: readonly EnvironmentRow[] = [
	{
		variables: ["PORT"],
		meaning: "gateway HTTP port"
	},
	{
		variables: ["NODE_ID"],
		meaning: "Moleculer nodeID"
	},
	{
		variables: ["TRANSPORTER"],
		meaning:
			"e.g. `nats://127.0.0.1:4222`; with credentials `nats://user:password@host:4222` or `nats://<token>@host:4222`; `tls://` requires TLS; a NATS cluster's servers comma-separated (`nats://a:4222,nats://b:4222`, spaces after the commas allowed): credentials and TLS apply to every server, a node fails over to another server when it loses its own (reconnect settings: `platform/nats-options.ts`)"
	},
	{
		variables: ["NATS_RANDOMIZE"],
		meaning:
			"`false`: connect to the `TRANSPORTER` servers in the listed order (the first preferred) instead of a random one"
	},
	{
		variables: ["JETSTREAM_REPLICAS"],
		meaning:
			"copies (1 to 5) of each JetStream stream (`SHOP_EVENTS`, `SHOP_DLQ`) and durable consumer, on that many servers of a NATS cluster (3 on a cluster of three survives the loss of one); existing streams and consumers are raised to it, never lowered (scaling down is an operator's act); a node refuses to start when the servers cannot hold that many"
	},
	{
		variables: ["NATS_TOKEN"],
		meaning:
			"token for a NATS server that requires one (instead of putting it in `TRANSPORTER`)"
	},
	{
		variables: ["NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY"],
		meaning:
			"PEM files: the CA of the NATS server's certificate (else the system's CAs); this node's client certificate and key (both or neither), for a NATS server that verifies clients; any of them makes TLS required"
	},
	{
		variables: ["CACHER"],
		meaning:
			"Redis of the cacher, of the gateway's rate limit counters and of the login throttle's counts, e.g. `redis://127.0.0.1:6379`"
	},
	{
		variables: ["DATABASE_URL"],
		meaning:
			"`postgres://user:pass@host:port`; each service uses its OWN database on that server (`users`, `products`, `inventory`, `orders`, `payments`, `notifications`), created when missing; `<SERVICE>_DATABASE_URL` (a full URL, with the database, e.g. `ORDERS_DATABASE_URL`) overrides one service"
	},
	{
		variables: ["DATA_DIR"],
		meaning:
			"where the embedded Postgres (and any other local state, e.g. the development JWT secret) lives"
	},
	{
		variables: ["EMBEDDED_POSTGRES_PORT"],
		meaning: "port of the embedded Postgres (127.0.0.1 only)"
	},
	{
		variables: ["DATABASE_PREFIX"],
		meaning: "prefix of every database name (tests isolate suites with it)"
	},
	{
		variables: ["DATABASE_PREPARED_STATEMENTS"],
		meaning:
			"run parameterised queries as named prepared statements (parsed once per connection); `false` behind a pooler that drops them"
	},
	{
		variables: ["METRICS_PORT"],
		meaning: "Prometheus `/metrics` port of this node; `0` turns the endpoint off"
	},
	{
		variables: ["HEALTH_PORT"],
		meaning:
			"this node's own `GET /health` (liveness) and `GET /ready` (readiness: broker started, transporter connected, its services' databases reachable and migrated; 503 with the failed checks) port; `0` turns it off"
	},
	{
		variables: ["FAILOVER_PROBE_MS"],
		meaning:
			"a remote call outstanding this long (ms) has its target node probed through NATS; a node with no subscription left (killed) is dropped at once and its calls retried on a live replica (docs/failover.md); `0` = off, heartbeats only"
	},
	{
		variables: ["JWT_SECRET"],
		meaning:
			"HMAC secret for access tokens (32 characters or more); required when `NODE_ENV=production` on the nodes that sign or verify tokens (the users service: `npm start`, a users node); other nodes need not have it"
	},
	{
		variables: ["JWT_EXPIRES_IN"],
		meaning: "access token lifetime (seconds)"
	},
	{
		variables: ["ADMIN_EMAIL", "ADMIN_PASSWORD"],
		meaning:
			"the seeded administrator (the password follows the customers' policy: 10 to 256 characters, not the e-mail, not a common password)"
	},
	{
		variables: ["LOGIN_MAX_FAILURES_PER_ACCOUNT", "LOGIN_MAX_FAILURES_PER_IP"],
		meaning:
			"failed logins, and sign-ups of an already registered e-mail, of one account / from one client address before logins and sign-ups are refused for `LOGIN_BLOCK_MS` (429 `AUTH_LOGIN_THROTTLED`, `Retry-After`); a successful login resets the account's count; `0` = off"
	},
	{
		variables: ["LOGIN_MAX_PER_ACCOUNT", "LOGIN_MAX_PER_IP", "LOGIN_RATE_WINDOW_MS"],
		meaning:
			"successful logins of one account / from one client address (room for an office or a carrier's NAT behind one address) per fixed window (ms, 1000 or more) before further logins are refused until the window ends (429 `AUTH_LOGIN_THROTTLED`, `Retry-After`); `0` = off"
	},
	{
		variables: ["SAGA_DEADLINE_MS"],
		meaning:
			"overall deadline of an order saga (ms); past it, before the pivot, the order ends `CANCELLED`/`TIMEOUT`"
	},
	{
		variables: ["SAGA_STEP_TIMEOUT_MS"],
		meaning: "timeout of one saga step call (ms)"
	},
	{
		variables: ["SAGA_STEP_MAX_ATTEMPTS"],
		meaning:
			"attempts of a saga step on transient failures (backoff with full jitter, 100 ms doubling to at most 2 s); after the pivot the saga is parked when they are spent (100: about 95 s), before it the deadline usually ends them first"
	},
	{
		variables: ["SAGA_LEASE_MS"],
		meaning:
			"how long an orders node's claim on a running saga lasts without renewal (crash recovery)"
	},
	{
		variables: ["SAGA_RECOVERY_INTERVAL_MS"],
		meaning: "how often an orders node resumes sagas whose lease expired"
	},
	{
		variables: ["SAGA_FAULTS"],
		meaning:
			"failure tests only, ignored in production: `crash-before:<step>` / `crash-after:<step>` makes the orders process SIGKILL itself there"
	},
	{
		variables: ["RESERVATION_TTL_MS"],
		meaning:
			"how long a stock reservation holds its units unless committed or released (500 or more; never below `SAGA_DEADLINE_MS`, refused at start-up)"
	},
	{
		variables: ["RESERVATION_SWEEP_INTERVAL_MS"],
		meaning: "how often inventory releases expired reservations"
	},
	{
		variables: [
			"SAGA_MAX_IN_FLIGHT",
			"SAGA_TARGET_LATENCY_MS",
			"SAGA_MIN_IN_FLIGHT",
			"SAGA_ADMISSION_WAIT_MS"
		],
		meaning:
			"backpressure on one orders node: its sagas in flight are kept under an adaptive limit (Netflix concurrency-limits' Gradient2, docs/performance.md) that moves so that its sagas take about `SAGA_TARGET_LATENCY_MS` (ms, 202 → `CONFIRMED`/`CANCELLED`) and stays between `SAGA_MIN_IN_FLIGHT` and the hard ceiling `SAGA_MAX_IN_FLIGHT`; at the limit `POST /api/orders` waits up to `SAGA_ADMISSION_WAIT_MS` (ms, default 100; only as many wait as sagas ended in that span of the last second, at least one) for a saga to end, then answers 503 `ORDERS_OVERLOADED` with `Retry-After` (`data: { inFlight, limit, max }`), nothing stored; `SAGA_ADMISSION_WAIT_MS=0`: refused at once; `SAGA_TARGET_LATENCY_MS=0`: the fixed `SAGA_MAX_IN_FLIGHT` alone (the adaptive limit off)"
	},
	{
		variables: ["ORDERS_MAX_IN_FLIGHT_PER_CUSTOMER", "ORDERS_MAX_UNITS_RESERVED_PER_CUSTOMER"],
		meaning:
			"one customer's orders not yet `CONFIRMED` or `CANCELLED` (parked ones included) / the units in them; an order past either is refused with 429 `ORDERS_CUSTOMER_LIMIT` and `Retry-After`; counted in the order's INSERT under a per-customer lock in the orders database, so the bound holds across all orders nodes; `0` = off"
	},
	{
		variables: ["ORDER_STREAMS_MAX_PER_USER", "ORDER_STREAMS_MAX_PER_ADDRESS"],
		meaning:
			"order streams (`GET /api/orders/:id/events`) one user / one client address may hold on one gateway node, those being authorised included; past either 429 `ORDERS_STREAM_LIMIT` with `Retry-After`; `0` = off"
	},
	{
		variables: ["ORDERS_STUCK_AFTER_MS", "ORDERS_STUCK_CHECK_INTERVAL_MS"],
		meaning:
			"an order still in a non-terminal status (not `CONFIRMED`, `CANCELLED`, `REFUNDED`) this long (ms) after it was placed, or a refund this long after it was asked for, is stuck: counted in `shop_orders_stuck{status}`, listed by `GET /api/admin/orders/stuck` (REPL `orders stuck`, the dashboard) / how often each orders node recounts that gauge (ms); `0` = never"
	},
	{
		variables: ["LOGIN_BLOCK_MS", "LOGIN_FAILURE_WINDOW_MS"],
		meaning:
			"how long a block lasts (whole seconds, 1000 or more) / how long a failure is remembered; the counts live in `CACHER`'s Redis when set, else per users node"
	},
	{
		variables: [
			"PASSWORD_HASH_CONCURRENCY",
			"PASSWORD_HASH_MAX_QUEUE",
			"PASSWORD_HASH_MAX_WAIT_MS"
		],
		meaning:
			"Argon2id hashes (sign-ups, logins) one users node runs at once / that may wait / how long one may wait (ms); past the queue or the wait: 429 `USERS_BUSY` with `Retry-After`"
	},
	{
		variables: ["TRUSTED_PROXIES"],
		meaning:
			"comma-separated IPs of reverse proxies whose `X-Forwarded-For` gives the client's address (rate limit, login throttling)"
	},
	{
		variables: ["BODY_LIMIT"],
		meaning: "largest JSON body"
	},
	{
		variables: ["CORS_ORIGINS"],
		meaning: "`*` or a comma-separated list of origins"
	},
	{
		variables: ["RATE_LIMIT_MAX"],
		meaning:
			"requests per client address per window on `/api` (counted in `CACHER`'s Redis when set, else per gateway); `0` turns the rate limit off"
	},
	{
		variables: ["RATE_LIMIT_WINDOW_MS"],
		meaning: "length of the rate limit's fixed window (1000 or more)"
	},
	{
		variables: ["OUTBOX_POLL_MS"],
		meaning:
			"how often each outbox relay looks for unsent events (it also runs after every commit)"
	},
	{
		variables: ["OUTBOX_BATCH_DELAY_MS"],
		meaning:
			"how long a woken relay waits before its pass, so that commits meanwhile are published together"
	},
	{
		variables: ["EVENT_MAX_DELIVER"],
		meaning: "deliveries of a durable event before its consumer dead-letters it"
	},
	{
		variables: ["EVENT_ACK_WAIT_MS"],
		meaning: "how long JetStream waits for a consumer's ack before redelivering"
	},
	{
		variables: ["OUTBOX_FAULTS"],
		meaning:
			"failure tests only, ignored in production: `crash-before-publish` / `crash-after-publish` makes the relay's process SIGKILL itself there"
	},
	{
		variables: ["RETENTION_INTERVAL_MS", "RETENTION_BATCH_SIZE", "RETENTION_BATCH_PAUSE_MS"],
		meaning:
			"each service's purge job (one node per service at a time): how often it runs, rows per `DELETE`, pause between two (ms); docs/retention.md"
	},
	{
		variables: ["OUTBOX_RETENTION_MS", "INBOX_RETENTION_MS", "IDEMPOTENCY_KEY_RETENTION_MS"],
		meaning:
			"published outbox rows / inbox records (never below `EVENTS_MAX_AGE_MS`) / participants' idempotency keys (never below `SAGA_DEADLINE_MS` nor `RESERVATION_TTL_MS`) are purged this long (ms) after publication / processing / creation"
	},
	{
		variables: ["SAGA_RETENTION_MS", "SAGA_ERRORS_KEEP"],
		meaning:
			"finished sagas (`COMPLETED`, `COMPENSATED`) and their steps are purged this long (ms) after they were created and last changed / entries of a saga's error history kept (the newest)"
	},
	{
		variables: ["DEAD_LETTER_RETENTION_MS", "RESERVATION_RETENTION_MS"],
		meaning:
			"replayed dead letters (pending ones are kept) / reservations in a final status (never `RESERVED` ones; never below `IDEMPOTENCY_KEY_RETENTION_MS`) are purged this long (ms) after their replay / last change"
	},
	{
		variables: ["EVENTS_MAX_AGE_MS", "EVENTS_MAX_BYTES"],
		meaning:
			"limits of each JetStream stream (`SHOP_EVENTS`, `SHOP_DLQ`): oldest message kept (ms, at least 600000) / size (bytes); past them the oldest messages are dropped"
	},
	{
		variables: ["EVENTS_CONSUMER_LAG_ALERT_MS"],
		meaning:
			"a durable consumer whose oldest unacknowledged event is this old (ms), or whose unacknowledged events the stream dropped, is reported behind (`shop_events_consumer_behind`, the `events` detail of readiness)"
	},
	{
		variables: ["SMTP_URL", "SMTP_FROM"],
		meaning:
			"the notifications service sends each notification's e-mail over SMTP there, after the record is committed, at most once (`smtp://user:pass@host:587`; `smtps://` for TLS from the start); unset: the record alone / the e-mails' From (`Name <address>` or an address); docs/email.md"
	},
	{
		variables: ["SMTP_MAX_ATTEMPTS", "SMTP_RETRY_DELAY_MS"],
		meaning:
			"sends of one e-mail the server refuses (4xx, 5xx) or that cannot connect before it is dead-lettered (`notifications.listDeadLetters`) / wait before the first retry (ms), doubled each time, at most 1 h"
	},
	{
		variables: ["TRACING_EXPORTER"],
		meaning: "`console`, `jaeger`, or unset (off)"
	},
	{
		variables: ["JAEGER_ENDPOINT"],
		meaning: "Jaeger collector HTTP endpoint, e.g. `http://127.0.0.1:14268/api/traces`"
	},
	{
		variables: ["OTEL_TRACES_EXPORTER"],
		meaning:
			"`otlp`: every node sends its spans over OTLP/HTTP (JSON), W3C trace ids, alongside `TRACING_EXPORTER`'s exporter if that is set too (docs/tracing.md); `none` or unset: off"
	},
	{
		variables: ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"],
		meaning:
			"the OTLP/HTTP base URL, spans go to `<base>/v1/traces` (e.g. `http://jaeger:4318`) / the traces URL, used as is (wins over the base)"
	},
	{
		variables: ["OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"],
		meaning:
			"`service.name` of every span of the node / more resource attributes, `key=value,...` percent-encoded (a `service.name` there names every span too); without either, each span's `service.name` is the Moleculer service that ran it"
	},
	{
		variables: ["OTEL_BSP_SCHEDULE_DELAY"],
		meaning: "the longest a finished span waits on its node before it is sent, in ms"
	},
	{
		variables: ["PAYMENTS_SIMULATED_FAULTS"],
		meaning:
			"`true`: the simulated processor's fault tokens work (`tok_processorUnavailable`); `false`: they are refused like an unknown token (422 `PAYMENTS_INVALID_METHOD`, the order ends `CANCELLED` with `PAYMENT_METHOD_INVALID`)"
	},
	{
		variables: ["NODE_ENV"],
		meaning:
			"`production`: error bodies carry no internals, `JWT_SECRET` required (where tokens are signed or verified), a secret still holding a placeholder (`CHANGE-ME`, an example value of the docs) refuses start-up naming the variable; everything else (embedded Postgres included) works as in development"
	},
	{
		variables: ["LOGLEVEL"],
		meaning: "Moleculer log level"
	},
	{
		variables: ["LOG_FORMAT"],
		meaning:
			"`json` (one JSON object per line with `level`, `time`, `nodeID`, `svc`, `requestId`, `msg`) or `pretty` (readable lines)"
	}
];
