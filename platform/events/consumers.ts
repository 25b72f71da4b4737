/**
 * The durable consumers of one service: for each event it handles, a JetStream durable pull
 * consumer shared by the service's nodes (platform/events/jetstream.ts), or, without a
 * transporter, an in-process consumer (platform/events/bus.ts). Each delivery goes through the
 * inbox (platform/events/inbox.ts); the message is acknowledged only after that transaction
 * commits, a failure is redelivered with backoff (`redeliveryDelayMs`) until the inbox
 * dead-letters it, a message that is not a domain event is dead-lettered at once. While the
 * consumer's own database does not answer, the message is held (`working()`), not redelivered:
 * an outage spends none of its deliveries. The consumers' lag against the stream's retention is
 * measured for the `shop_events_consumer_*` gauges and the readiness answer.
 *
 * Pattern: Competing Consumers with explicit acknowledgement (NATS JetStream pull consumers,
 * docs.nats.io/nats-concepts/jetstream/consumers); the subscription side of eShop's `IEventBus`
 * (dotnet/eShop src/EventBus/Abstractions/IEventBus.cs).
 */
import type { JsMsg } from "nats";
import { config } from "../config";
import { isDatabaseUnavailable } from "../db/database-unavailable";
import { registerMetrics, setMetric } from "../metrics";
import { acquireBus, addLocalConsumer, busUrl, releaseBus, removeLocalConsumers } from "./bus";
import type { LocalConsumer } from "./bus";
import { isDomainEvent, type EventsHost } from "./domain-event";
import type { ApplyOutcome, Inbox } from "./inbox";
import {
	EVENTS_STREAM,
	consumerLag,
	ensureConsumer,
	whileJetStreamForms,
	type ConsumerLag,
	type JetStreamBus
} from "./jetstream";

/** How often a consumer's lag is measured for its gauges, in ms (readiness measures it anew). */
const LAG_CHECK_INTERVAL_MS = 30_000;

/**
 * Wait before the `n`th retry of an event held while the consumer's database is away, in ms:
 * 250, 500, 1000, then every 2 s (short enough for `working()` to keep the message).
 */
export function holdDelayMs(n: number): number {
	return Math.min(250 * 2 ** Math.max(0, n - 1), 2_000);
}

/** Redelivery backoff after `deliveries` failed deliveries, in ms: 200, 400, 800 ... ≤ 10 s. */
export function redeliveryDelayMs(deliveries: number): number {
	return Math.min(200 * 2 ** Math.max(0, deliveries - 1), 10_000);
}

const delay = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

export interface ConsumerOptions {
	/** Deliveries before dead-lettering. */
	readonly maxDeliver: number;
	/** JetStream ack wait, in ms. */
	readonly ackWaitMs: number;
}

/** The `events` detail of a readiness answer. */
export interface EventsReadiness {
	mode: "jetstream" | "local";
	/** The consumers behind their stream's retention. */
	behind: string[];
	consumers?: ConsumerLag[];
	/** JetStream did not answer. */
	error?: string;
}

/** The durable consumers of one service (see the module comment). */
export class DurableConsumers {
	private stopping = false;
	private readonly subs: { stop(): void }[] = [];
	private readonly loops: Promise<void>[] = [];
	private readonly inFlight = new Set<Promise<unknown>>();
	private readonly local: LocalConsumer[] = [];
	private busUrl: string | null = null;
	private readonly durables: string[] = [];
	private bus: JetStreamBus | null = null;
	private lagTimer: NodeJS.Timeout | null = null;

	constructor(
		private readonly host: EventsHost,
		private readonly inbox: Inbox,
		private readonly opts: ConsumerOptions
	) {}

	/** Subscribes a consumer to each of `events` (their names). */
	async start(events: readonly string[]): Promise<void> {
		const { broker, name, logger } = this.host;
		const url = busUrl();
		if (!url) {
			for (const event of events) {
				const local = this.localConsumer(`${name}.${event}`);
				addLocalConsumer(broker, event, local);
				this.local.push(local);
			}
			return;
		}
		const bus = await acquireBus(url, `${broker.nodeID}-events`);
		this.busUrl = url;
		for (const event of events) {
			const durable = await whileJetStreamForms(() =>
				ensureConsumer(bus.jsm, name, event, this.opts)
			);
			this.durables.push(durable);
			const consumer = await bus.js.consumers.get(EVENTS_STREAM, durable);
			const messages = await consumer.consume({
				max_messages: 64,
				// Each pull lasts 5 s (the client's default: 30 s). When the consumer's leader is
				// lost with a NATS server, the client re-pulls after a missed heartbeat or backs
				// off for `expires` before asking again: 5 to 10 s without deliveries, not 30 to
				// 60 s (test/cluster/nats-cluster.test.ts measured 32 s with the default).
				expires: 5_000
			});
			this.subs.push(messages);
			this.loops.push(
				(async () => {
					for await (const m of messages) {
						if (this.stopping) {
							m.nak();
							continue;
						}
						await this.track(this.onMessage(durable, m, bus));
					}
				})().catch((err: unknown) => {
					if (!this.stopping) logger.error(`Consumer ${durable} stopped`, err);
				})
			);
		}
		this.bus = bus;
		registerMetrics(broker, [
			"eventsConsumerBehind",
			"eventsConsumerPending",
			"eventsConsumerOldestPendingAge"
		]);
		this.lagTimer = setInterval(
			() => void this.checkLag().catch(() => undefined),
			LAG_CHECK_INTERVAL_MS
		);
		this.lagTimer.unref?.();
	}

	/** Stops consuming and waits for the deliveries in progress. Idempotent. */
	async stop(): Promise<void> {
		if (this.stopping) return;
		this.stopping = true;
		removeLocalConsumers(this.host.broker, this.local);
		if (this.lagTimer) clearInterval(this.lagTimer);
		for (const sub of this.subs) sub.stop();
		await Promise.allSettled([...this.inFlight]);
		await Promise.allSettled(this.loops);
		if (this.busUrl) await releaseBus(this.busUrl);
	}

	/**
	 * Where each of this node's durable consumers stands against the stream's retention
	 * (platform/events/jetstream.ts `consumerLag`); sets the `shop_events_consumer_*` gauges and logs
	 * an error for each consumer behind. @returns one ConsumerLag per consumer ([] locally)
	 */
	async checkLag(): Promise<ConsumerLag[]> {
		const bus = this.bus;
		if (!bus) return [];
		const { broker, name, logger } = this.host;
		const alertMs = config().eventsConsumerLagAlertMs;
		const lags = await Promise.all(this.durables.map(d => consumerLag(bus.jsm, d, alertMs)));
		for (const l of lags) {
			const labels = { service: name, consumer: l.consumer };
			setMetric(broker, "eventsConsumerBehind", l.behind ? 1 : 0, labels);
			setMetric(broker, "eventsConsumerPending", l.pending, labels);
			setMetric(broker, "eventsConsumerOldestPendingAge", l.oldestPendingAgeMs, labels);
			if (l.behind)
				logger.error(
					`${l.consumer} is behind its stream's retention: ${l.pending} events pending, the oldest ${l.oldestPendingAgeMs} ms old${l.lost ? "; the stream dropped events it had not acknowledged" : ""}`
				);
		}
		return lags;
	}

	/**
	 * The `events` detail of the readiness answer.
	 * @returns `{ mode: "jetstream" | "local", behind: string[], consumers: ConsumerLag[] }`;
	 *   with `error` instead of consumers when JetStream did not answer
	 */
	async readiness(): Promise<EventsReadiness> {
		if (!this.bus) return { mode: "local", behind: [], consumers: [] };
		try {
			const consumers = await this.checkLag();
			return {
				mode: "jetstream",
				behind: consumers.filter(c => c.behind).map(c => c.consumer),
				consumers
			};
		} catch (err) {
			return {
				mode: "jetstream",
				behind: [],
				error: err instanceof Error ? err.message : String(err)
			};
		}
	}

	/** An in-process consumer: retries with backoff, holds while the database is away. */
	private localConsumer(consumer: string): LocalConsumer {
		return {
			consumer,
			deliver: async e => {
				for (let n = 1, held = 0; ;) {
					if (this.stopping) throw new Error(`${consumer} is stopping`);
					const outcome = await this.track(this.inbox.apply(consumer, e, n, null));
					// The database is away: wait for it without spending a delivery.
					if (outcome === "unavailable") {
						await delay(holdDelayMs(++held));
						continue;
					}
					if (outcome !== "failed") return;
					await delay(redeliveryDelayMs(n++));
				}
			}
		};
	}

	private track<T>(p: Promise<T>): Promise<T> {
		this.inFlight.add(p);
		return p.finally(() => this.inFlight.delete(p));
	}

	/** A JetStream delivery: apply, then ack (after the commit) / nak with backoff / term. */
	private async onMessage(durable: string, m: JsMsg, bus: JetStreamBus): Promise<void> {
		const { logger } = this.host;
		const delivery = m.info.redeliveryCount;
		let event: unknown;
		try {
			event = JSON.parse(Buffer.from(m.data).toString("utf8"));
		} catch {
			event = undefined;
		}
		if (!isDomainEvent(event)) {
			// Poison: no retry can fix it.
			const raw = Buffer.from(m.data).toString("utf8").slice(0, 10_000);
			await this.inbox.deadLetter(
				durable,
				`stream-seq:${m.info.streamSequence}`,
				m.subject.replace(/^shop\.events\./, ""),
				{ raw },
				new Error("The message is not a domain event"),
				delivery,
				bus
			);
			m.term();
			return;
		}
		let outcome: ApplyOutcome;
		for (let held = 0; ;) {
			try {
				outcome = await this.inbox.apply(durable, event, delivery, bus);
			} catch (err) {
				if (!isDatabaseUnavailable(err)) {
					// Dead-lettering itself failed: let JetStream redeliver.
					logger.warn(`${durable}: could not settle ${event.id}`, err);
					m.nak(redeliveryDelayMs(delivery));
					return;
				}
				outcome = "unavailable";
			}
			if (outcome !== "unavailable") break;
			// The database is away. A nak would spend one of the message's `max_deliver`
			// deliveries per try, and an outage longer than their backoffs would
			// dead-letter the event, or lose it when dead-lettering fails too. Keep the
			// message instead (`working()` restarts the server's ack wait) and try again
			// when the database answers; the messages behind it wait, as they would fail.
			if (this.stopping) {
				m.nak();
				return;
			}
			if (held++ % 20 === 0)
				logger.warn(
					`${durable}: the database does not answer; holding ${event.name} ${event.id} until it does`
				);
			m.working();
			await delay(holdDelayMs(held));
		}
		if (outcome === "failed") m.nak(redeliveryDelayMs(delivery));
		else await m.ackAck().catch(() => undefined);
	}
}
