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
import { natsConnectionOptions, type NatsSecurity } from "../nats-options";

/** Stream holding every domain event. */
export const EVENTS_STREAM = "SHOP_EVENTS";
/** Stream holding dead letters. */
export const DLQ_STREAM = "SHOP_DLQ";
/** How long the server remembers a `Nats-Msg-Id` to drop a re-sent duplicate, in ms. */
export const DUPLICATE_WINDOW_MS = 10 * 60_000;

/** Retention limits of both streams. */
export interface StreamLimits {
	/** Oldest message kept, in ms (at least `DUPLICATE_WINDOW_MS`). */
	readonly maxAgeMs: number;
	/** Largest size of the stream, in bytes. */
	readonly maxBytes: number;
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
 * streams exist. Servers, credentials and TLS are mapped by platform/nats-options.ts exactly as for
 * the transporter, so the server accepts both connections or neither.
 * @param url - `nats://[token@|user:password@]host:port` (the `TRANSPORTER` setting)
 * @param name - connection name shown in the server's monitoring (`/connz`)
 * @param security - `NATS_TOKEN` and the `NATS_TLS_*` files (platform/config.ts)
 * @param limits - the streams' `max_age` and `max_bytes` (created, or updated when they differ)
 */
export async function connectJetStream(
	url: string,
	name: string,
	security: NatsSecurity = {},
	limits: StreamLimits = DEFAULT_STREAM_LIMITS
): Promise<JetStreamBus> {
	const opts = natsConnectionOptions(url, security);
	const nc = await connect({
		...opts,
		name,
		maxReconnectAttempts: -1,
		reconnectTimeWait: 500,
		waitOnFirstConnect: true
	});
	let jsm: JetStreamManager;
	try {
		jsm = await nc.jetstreamManager();
		await ensureStream(jsm, EVENTS_STREAM, ["shop.events.>"], limits);
		await ensureStream(jsm, DLQ_STREAM, ["shop.dlq.>"], limits);
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

async function ensureStream(
	jsm: JetStreamManager,
	stream: string,
	subjects: string[],
	limits: StreamLimits
): Promise<void> {
	const maxAge = nanos(limits.maxAgeMs);
	let existing: StreamInfo | null = null;
	try {
		existing = await jsm.streams.info(stream);
	} catch {
		existing = null;
	}
	if (existing) {
		const c = existing.config;
		if (c.max_age !== maxAge || c.max_bytes !== limits.maxBytes)
			await jsm.streams.update(stream, { ...c, max_age: maxAge, max_bytes: limits.maxBytes });
		return;
	}
	{
		try {
			await jsm.streams.add({
				name: stream,
				subjects,
				storage: StorageType.File,
				duplicate_window: nanos(DUPLICATE_WINDOW_MS),
				max_age: maxAge,
				max_bytes: limits.maxBytes,
				discard: DiscardPolicy.Old
			});
		} catch (err) {
			// Another node created it meanwhile.
			if (!/already in use|exists/i.test(String((err as Error).message))) throw err;
		}
	}
}

/** Options of a durable consumer. */
export interface DurableConsumerOptions {
	/** Deliveries before a message is dead-lettered. */
	readonly maxDeliver: number;
	/** How long the server waits for an ack before redelivering, in ms. */
	readonly ackWaitMs: number;
}

/** Creates (or updates) the durable pull consumer of (service, event). @returns its name */
export async function ensureConsumer(
	jsm: JetStreamManager,
	service: string,
	event: string,
	opts: DurableConsumerOptions
): Promise<string> {
	const durable = consumerName(service, event);
	const cfg: Partial<ConsumerConfig> = {
		durable_name: durable,
		ack_policy: AckPolicy.Explicit,
		deliver_policy: DeliverPolicy.All,
		filter_subject: eventSubject(event),
		// One more than ours: the handler dead-letters on delivery `maxDeliver` itself.
		max_deliver: opts.maxDeliver + 1,
		ack_wait: nanos(opts.ackWaitMs)
	};
	try {
		await jsm.consumers.info(EVENTS_STREAM, durable);
		await jsm.consumers.update(EVENTS_STREAM, durable, {
			max_deliver: cfg.max_deliver,
			ack_wait: cfg.ack_wait
		});
	} catch {
		await jsm.consumers.add(EVENTS_STREAM, cfg).catch(async err => {
			// Created by a replica meanwhile.
			await jsm.consumers.info(EVENTS_STREAM, durable).catch(() => {
				throw err;
			});
		});
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
