/**
 * The shape of the shop's configuration: every setting platform/config.ts reads from the
 * environment, with its variable, unit and default. The values are the public contract in
 * docs/CONTRACT.md ("Environment"); platform/config.ts parses, validates and freezes them.
 */
/**
 * A service's name, as its database and its `<SERVICE>_DATABASE_URL` are named: any lowercase
 * identifier. platform/ knows no service; the list of them is app/services.ts.
 */
export type DatabaseService = string;

export type TracingExporter = "console" | "jaeger" | null;

/**
 * Export over OTLP/HTTP (`OTEL_TRACES_EXPORTER=otlp`; platform/tracing/otlp-exporter.ts,
 * docs/tracing.md), from the OpenTelemetry specification's variables.
 */
export interface OtlpTracingConfig {
	/** Where spans are POSTed: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `<OTEL_EXPORTER_OTLP_ENDPOINT>/v1/traces`. */
	readonly tracesUrl: string;
	/** `OTEL_SERVICE_NAME`: every span's `service.name`; `null`: the Moleculer service of each span. */
	readonly serviceName: string | null;
	/** `OTEL_RESOURCE_ATTRIBUTES`, decoded (a `service.name` there names every span too). */
	readonly resourceAttributes: Readonly<Record<string, string>>;
	/** `OTEL_BSP_SCHEDULE_DELAY`: the longest a finished span waits before it is sent, in ms. */
	readonly scheduleDelayMs: number;
}
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
	/**
	 * Transporter URL, e.g. `nats://127.0.0.1:4222`, or the servers of a NATS cluster,
	 * comma-separated without spaces (`nats://a:4222,nats://b:4222`); `null` runs in one process.
	 */
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
	/** OTLP export of spans (`OTEL_TRACES_EXPORTER=otlp`), besides TRACING_EXPORTER's; `null`: off. */
	readonly otlpTracing: OtlpTracingConfig | null;
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
	 * The adaptive limit under that ceiling (platform/concurrency-limit.ts, Netflix's Gradient2):
	 * the 202 → CONFIRMED/CANCELLED latency, in ms, an orders node keeps its sagas near by
	 * lowering its limit on sagas in flight when they take longer (`SAGA_TARGET_LATENCY_MS`;
	 * default 400, the value measured in docs/performance.md; `0`: off, the fixed
	 * `SAGA_MAX_IN_FLIGHT` alone), and the floor of that limit
	 * (`SAGA_MIN_IN_FLIGHT`, at most `SAGA_MAX_IN_FLIGHT`).
	 */
	readonly sagaTargetLatencyMs: number;
	readonly sagaMinInFlight: number;
	/**
	 * How long an order that finds that limit reached waits for a slot before its 503, in ms
	 * (`SAGA_ADMISSION_WAIT_MS`, default 100; `0`: refused at once). `Retry-After` counts whole
	 * seconds, so a refused client is gone for one; the wait gives a slot freed meanwhile to
	 * the next order instead of leaving it idle (platform/admission-queue.ts).
	 */
	readonly sagaAdmissionWaitMs: number;
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
	/**
	 * `SMTP_URL` (`smtp://user:pass@host:587`, `smtps://...` for TLS from the start): the
	 * notifications service sends each notification's e-mail there (docs/email.md); `null`: the
	 * record alone.
	 */
	readonly smtpUrl: string | null;
	/** `SMTP_FROM`: the e-mails' From (`Name <address>` or an address); its domain ends each Message-ID. */
	readonly smtpFrom: string;
	/** `SMTP_MAX_ATTEMPTS` (8): sends of one e-mail before it is dead-lettered. */
	readonly smtpMaxAttempts: number;
	/** `SMTP_RETRY_DELAY_MS` (60000): wait before the first retry, doubled for each next one (≤ 1 h). */
	readonly smtpRetryDelayMs: number;
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
	 * `ORDERS_STREAM_LIMIT` with `Retry-After`. 0 = off. services/api/order-streams.ts.
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
	 * Shuffle the `TRANSPORTER` list before connecting (`NATS_RANDOMIZE`, default true: nodes
	 * spread over the servers); false keeps the listed order (platform/nats-options.ts).
	 */
	readonly natsRandomize: boolean;
	/**
	 * Copies of each JetStream stream and durable consumer (`JETSTREAM_REPLICAS`, 1 to 5, default
	 * 1): 3 on a cluster of three servers survives the loss of one (platform/events/jetstream.ts).
	 */
	readonly jetstreamReplicas: number;
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
