/**
 * The shop's durable event bus on NATS JetStream (the `nats` 2.x client): one stream of domain
 * events, one dead-letter stream, durable pull consumers per (service, event).
 *
 * - Stream `SHOP_EVENTS`, subjects `shop.events.<event name>`, file storage, a duplicate window
 *   (`Nats-Msg-Id` = the outbox row id), so a relay that re-sends after a crash is deduplicated by
 *   the server. Limits (`StreamLimits`: `EVENTS_MAX_AGE_MS`, 7 d; `EVENTS_MAX_BYTES`, 1 GiB, for
 *   each stream): past either the server drops the OLDEST messages, read or not, so a consumer
 *   that falls behind loses events; `consumerLag` tells (the consumers' metric and readiness
 *   detail, platform/events/consumers.ts). Limits are applied to existing streams too.
 * - Stream `SHOP_DLQ`, subjects `shop.dlq.<consumer>`: messages a consumer gave up on after
 *   `maxDeliver` deliveries, with the error in headers.
 * - Consumers: durable, explicit ack, `max_deliver`, `ack_wait`; acknowledged by the caller only
 *   after its handler's transaction has committed (at-least-once; the inbox makes it effectively
 *   once).
 * - Replicas (`JETSTREAM_REPLICAS`, `StreamLimits.replicas`): both streams and every durable
 *   consumer are kept on that many servers of a NATS cluster (`num_replicas`; raised on existing
 *   ones, which NATS scales up in place; never lowered: a node started with fewer, e.g. without
 *   the setting, leaves a replicated stream as it is). With 3 on a cluster of three, the loss of any one
 *   server loses nothing: a new stream leader is elected in a few seconds; meanwhile the relay's
 *   publishes fail and are retried with the same `Nats-Msg-Id`, which the new leader, holding the
 *   replicated duplicate window, drops if the first attempt was stored after all. At start-up a
 *   setting the servers cannot hold (not clustered, or fewer JetStream servers than replicas)
 *   fails with a `ConfigError` that says so.
 *
 * Start-up on a cluster that is still forming (its JetStream meta leader not elected yet, or a
 * loaded machine): the JetStream API's requests time out or answer 10008 "JetStream system
 * temporarily unavailable". Those answers are retried (`whileJetStreamForms`: 250 ms doubling to
 * 2 s, for up to `JETSTREAM_FORMING_MS`, 30 s) instead of failing the node's start; a node that
 * exited there would be restarted by its supervisor anyway, only later and with a crash logged.
 *
 * Durability of acknowledged writes on power loss needs the server's `sync_interval: always`
 * (deploy/nats/nats.conf, nats-server >= 2.10); see docs in README "Durable events".
 */
import {
	AckPolicy,
	DeliverPolicy,
	StorageType,
	connect,
	headers as natsHeaders,
	nanos,
	type ConsumerConfig,
	type JetStreamClient,
	type JetStreamManager,
	type NatsConnection,
	type StreamInfo,
	DiscardPolicy
} from "nats";
import { ConfigError } from "../config/parse";
import { natsClientOptions, type NatsSecurity } from "../nats-options";

/** Stream holding every domain event. */
export const EVENTS_STREAM = "SHOP_EVENTS";
/** Stream holding dead letters. */
export const DLQ_STREAM = "SHOP_DLQ";
/** How long the server remembers a `Nats-Msg-Id` to drop a re-sent duplicate, in ms. */
export const DUPLICATE_WINDOW_MS = 10 * 60_000;

/** Retention limits and replication of both streams. */
export interface StreamLimits {
	/** Oldest message kept, in ms (at least `DUPLICATE_WINDOW_MS`). */
	readonly maxAgeMs: number;
	/** Largest size of the stream, in bytes. */
	readonly maxBytes: number;
	/** Servers holding a copy of each stream and consumer (`JETSTREAM_REPLICAS`, 1 to 5; 1 by default). */
	readonly replicas?: number;
}

/** The limits when none are given: 7 days, 1 GiB (platform/config.ts's defaults). */
export const DEFAULT_STREAM_LIMITS: StreamLimits = {
	maxAgeMs: 7 * 24 * 3600_000,
	maxBytes: 1024 ** 3
};

/** The subject of domain event `name`: `shop.events.<name>`. */
export function eventSubject(name: string): string {
	return `shop.events.${name}`;
}

/** A durable consumer's name for (service, event): JetStream names allow no dots. */
export function consumerName(service: string, event: string): string {
	return `${service}__${event}`.replace(/[^A-Za-z0-9_-]/g, "_");
}

/** The dead-letter subject of a consumer. */
export function deadLetterSubject(consumer: string): string {
	return `shop.dlq.${consumer}`;
}

/** One NATS connection with its JetStream client and manager. */
export interface JetStreamBus {
	readonly nc: NatsConnection;
	readonly js: JetStreamClient;
	readonly jsm: JetStreamManager;
	close(): Promise<void>;
}

/**
 * Connects to NATS (reconnecting forever, like the Moleculer transporter) and makes sure both
 * streams exist. Servers, credentials, TLS and the reconnect settings are mapped by
 * platform/nats-options.ts (`natsClientOptions`) exactly as for the transporter, so the server
 * accepts both connections or neither, and both fail over alike.
 * @param url - `nats://[token@|user:password@]host:port`, or a comma-separated list of a
 *   cluster's servers (the `TRANSPORTER` setting)
 * @param name - connection name shown in the server's monitoring (`/connz`)
 * @param security - `NATS_TOKEN` and the `NATS_TLS_*` files (platform/config.ts)
 * @param limits - the streams' `max_age`, `max_bytes` and `num_replicas` (created, or updated
 *   when they differ; `num_replicas` only upwards)
 * @param connection.randomize - shuffle the servers (`NATS_RANDOMIZE`, default true)
 * @throws ConfigError when the servers cannot hold `limits.replicas` copies (not clustered, or
 *   fewer JetStream servers); Error when JetStream is off
 */
export async function connectJetStream(
	url: string,
	name: string,
	security: NatsSecurity = {},
	limits: StreamLimits = DEFAULT_STREAM_LIMITS,
	connection: { randomize?: boolean } = {}
): Promise<JetStreamBus> {
	const opts = natsClientOptions(url, security, { randomize: connection.randomize, name });
	// Opened after the transporter connected: a server that does not answer now is retried.
	const nc = await connect({ ...opts, waitOnFirstConnect: true });
	let jsm: JetStreamManager;
	try {
		const replicas = limits.replicas ?? 1;
		// The server's INFO names its cluster only when it is in one.
		if (replicas > 1 && !nc.info?.cluster)
			throw new ConfigError(
				`JETSTREAM_REPLICAS=${replicas} needs a NATS cluster of at least ${replicas} servers with JetStream, but the server at ${nc.getServer()} is not clustered: run nats-server with --cluster and --routes (docs/nats-cluster.md), or set JETSTREAM_REPLICAS=1`
			);
		jsm = await whileJetStreamForms(() => nc.jetstreamManager());
		await whileJetStreamForms(() =>
			ensureStream(jsm, EVENTS_STREAM, ["shop.events.>"], limits)
		);
		await whileJetStreamForms(() => ensureStream(jsm, DLQ_STREAM, ["shop.dlq.>"], limits));
	} catch (err) {
		await nc.close().catch(() => undefined);
		if (String((err as { code?: unknown }).code) === "503")
			throw new Error(
				`JetStream is not enabled on the NATS server at ${opts.servers.join(",")}: start nats-server with -js (or a jetstream {} block, see deploy/nats/nats.conf)`
			);
		throw err;
	}
	return {
		nc,
		js: nc.jetstream(),
		jsm,
		close: async () => {
			if (!nc.isClosed()) await nc.drain().catch(() => nc.close());
		}
	};
}

/** How long start-up retries a JetStream API that is not answering yet, in ms. */
export const JETSTREAM_FORMING_MS = 30_000;

/**
 * Whether `err` is the JetStream API not answering YET: the request timed out, or 10008
 * "JetStream system temporarily unavailable" (a cluster electing its meta leader).
 */
export function isJetStreamForming(err: unknown): boolean {
	const e = err as { code?: unknown; api_error?: { err_code?: number } };
	return String(e?.code) === "TIMEOUT" || e?.api_error?.err_code === 10008;
}

/**
 * Runs `op` (a start-up JetStream API call, idempotent), again while it fails because the API
 * is not answering yet (`isJetStreamForming`): after 250 ms, doubling to 2 s, until `formingMs`
 * has passed; then its last error is raised. Any other error is raised at once.
 */
export async function whileJetStreamForms<T>(
	op: () => Promise<T>,
	formingMs = JETSTREAM_FORMING_MS
): Promise<T> {
	const until = Date.now() + formingMs;
	for (let pause = 250; ; pause = Math.min(2 * pause, 2_000)) {
		try {
			return await op();
		} catch (err) {
			if (!isJetStreamForming(err) || Date.now() + pause > until) throw err;
			await new Promise(r => setTimeout(r, pause));
		}
	}
}

/**
 * The JetStream API's answers to replicas it cannot place: 10005 "no suitable peers for
 * placement", 10023 "insufficient resources", 10074 "replicas > 1 not supported in
 * non-clustered mode".
 */
const REPLICAS_NOT_PLACEABLE = new Set([10005, 10023, 10074]);

/** `err` as the ConfigError of replicas the servers cannot hold, or `err` itself. */
function replicasError(err: unknown, stream: string, replicas: number): unknown {
	const api = (err as { api_error?: { err_code?: number; description?: string } }).api_error;
	if (!api?.err_code || !REPLICAS_NOT_PLACEABLE.has(api.err_code)) return err;
	return new ConfigError(
		`JETSTREAM_REPLICAS=${replicas}: the NATS servers cannot hold ${replicas} replicas of stream ${stream} (${api.description ?? api.err_code}): the cluster needs at least ${replicas} servers with JetStream, all up; add servers or lower JETSTREAM_REPLICAS`
	);
}

async function ensureStream(
	jsm: JetStreamManager,
	stream: string,
	subjects: string[],
	limits: StreamLimits
): Promise<void> {
	const maxAge = nanos(limits.maxAgeMs);
	const replicas = limits.replicas ?? 1;
	let existing: StreamInfo | null = null;
	try {
		existing = await jsm.streams.info(stream);
	} catch {
		existing = null;
	}
	try {
		if (existing) {
			const c = existing.config;
			// Copies are added, never taken away: a node started without JETSTREAM_REPLICAS (1)
			// must not shrink a replicated stream (scaling down is an operator's act).
			const copies = Math.max(c.num_replicas || 1, replicas);
			if (
				c.max_age !== maxAge ||
				c.max_bytes !== limits.maxBytes ||
				(c.num_replicas || 1) !== copies
			)
				await jsm.streams.update(stream, {
					...c,
					max_age: maxAge,
					max_bytes: limits.maxBytes,
					num_replicas: copies
				});
			return;
		}
		try {
			await jsm.streams.add({
				name: stream,
				subjects,
				storage: StorageType.File,
				duplicate_window: nanos(DUPLICATE_WINDOW_MS),
				max_age: maxAge,
				max_bytes: limits.maxBytes,
				discard: DiscardPolicy.Old,
				num_replicas: replicas
			});
		} catch (err) {
			// Another node created it meanwhile.
			if (!/already in use|exists/i.test(String((err as Error).message))) throw err;
		}
	} catch (err) {
		throw replicasError(err, stream, replicas);
	}
}

/** Options of a durable consumer. */
export interface DurableConsumerOptions {
	/** Deliveries before a message is dead-lettered. */
	readonly maxDeliver: number;
	/** How long the server waits for an ack before redelivering, in ms. */
	readonly ackWaitMs: number;
	/** Servers holding the consumer's state (default: the stream's `num_replicas`). */
	readonly replicas?: number;
}

/**
 * Creates (or updates: `max_deliver`, `ack_wait`, `num_replicas`) the durable pull consumer of
 * (service, event) on `SHOP_EVENTS`, with `opts.replicas` copies (default: as many as the
 * stream has, JETSTREAM_REPLICAS).
 * @returns its name
 * @throws ConfigError when the servers cannot hold the replicas; the JetStream API's error else
 */
export async function ensureConsumer(
	jsm: JetStreamManager,
	service: string,
	event: string,
	opts: DurableConsumerOptions
): Promise<string> {
	const durable = consumerName(service, event);
	const replicas =
		opts.replicas ?? ((await jsm.streams.info(EVENTS_STREAM)).config.num_replicas || 1);
	const cfg: Partial<ConsumerConfig> = {
		durable_name: durable,
		ack_policy: AckPolicy.Explicit,
		deliver_policy: DeliverPolicy.All,
		filter_subject: eventSubject(event),
		// One more than ours: the handler dead-letters on delivery `maxDeliver` itself.
		max_deliver: opts.maxDeliver + 1,
		ack_wait: nanos(opts.ackWaitMs),
		num_replicas: replicas
	};
	const existing = await jsm.consumers.info(EVENTS_STREAM, durable).catch(() => null);
	try {
		if (existing) {
			const c = existing.config;
			// As for the streams: copies are added, never taken away.
			const copies = Math.max(c.num_replicas || 1, replicas);
			if (
				c.max_deliver !== cfg.max_deliver ||
				c.ack_wait !== cfg.ack_wait ||
				(c.num_replicas || 1) !== copies
			)
				await jsm.consumers.update(EVENTS_STREAM, durable, {
					max_deliver: cfg.max_deliver,
					ack_wait: cfg.ack_wait,
					num_replicas: copies
				});
			return durable;
		}
		await jsm.consumers.add(EVENTS_STREAM, cfg).catch(async err => {
			// Created by a replica meanwhile.
			await jsm.consumers.info(EVENTS_STREAM, durable).catch(() => {
				throw err;
			});
		});
	} catch (err) {
		throw replicasError(err, `${EVENTS_STREAM} (consumer ${durable})`, replicas);
	}
	return durable;
}

/** NATS message headers from a plain object. */
export function toHeaders(values: Record<string, string>): ReturnType<typeof natsHeaders> {
	const h = natsHeaders();
	for (const [k, v] of Object.entries(values)) h.set(k, v);
	return h;
}

/** How far a durable consumer is behind its stream (`consumerLag`). */
export interface ConsumerLag {
	/** The durable consumer's name. */
	readonly consumer: string;
	/** Its events not yet acknowledged (not yet delivered + delivered and unacknowledged). */
	readonly pending: number;
	/** Age of the oldest of them, in ms (0 when none). */
	readonly oldestPendingAgeMs: number;
	/**
	 * The stream's first sequence is past the consumer's ack floor while it has events pending:
	 * the server dropped messages (age or size limit) the consumer had not acknowledged, some of
	 * which may have been its own. A heuristic: a consumer created after the stream dropped
	 * messages reads as `lost` until it acknowledged its first event.
	 */
	readonly lost: boolean;
	/** `lost`, or the oldest pending event is at least `alertMs` old: an operator must look. */
	readonly behind: boolean;
}

/**
 * Where durable consumer `durable` of `SHOP_EVENTS` stands against the stream's retention.
 * @param alertMs - pending events this old make it `behind` (`EVENTS_CONSUMER_LAG_ALERT_MS`)
 */
export async function consumerLag(
	jsm: JetStreamManager,
	durable: string,
	alertMs: number
): Promise<ConsumerLag> {
	const [ci, si] = await Promise.all([
		jsm.consumers.info(EVENTS_STREAM, durable),
		jsm.streams.info(EVENTS_STREAM)
	]);
	const pending = ci.num_pending + ci.num_ack_pending;
	const floor = ci.ack_floor.stream_seq;
	let oldestPendingAgeMs = 0;
	if (pending > 0) {
		try {
			// The server's STREAM.MSG.GET takes `next_by_subj` (the first message on the subject
			// at or after `seq`); the client's types only list it for direct gets.
			const next = { seq: floor + 1, next_by_subj: ci.config.filter_subject ?? ">" };
			const m = await jsm.streams.getMessage(
				EVENTS_STREAM,
				next as unknown as Parameters<JetStreamManager["streams"]["getMessage"]>[1]
			);
			oldestPendingAgeMs = Math.max(0, Date.now() - m.time.getTime());
		} catch {
			// Acknowledged or dropped meanwhile.
		}
	}
	const lost = pending > 0 && si.state.first_seq > floor + 1;
	return {
		consumer: durable,
		pending,
		oldestPendingAgeMs,
		lost,
		behind: lost || (pending > 0 && oldestPendingAgeMs >= alertMs)
	};
}
