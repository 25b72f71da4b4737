/**
 * The outbox relay of one service: publishes what the service committed to its outbox
 * (platform/events/outbox.ts), in `seq` order, to JetStream, or in-process without a transporter.
 *
 * - One relay per service database at a time: each pass holds a transaction-scoped advisory lock.
 * - Each row is published with `Nats-Msg-Id` = the row id, so a re-send after a crash is dropped
 *   by the server's duplicate window; the pass stops at the first failure (order per service,
 *   hence per aggregate, is kept) and marks what was sent. A crash between the publish and the
 *   mark re-sends: at-least-once.
 * - Woken after each commit (`kick`, coalesced with a pass in progress and batched over
 *   `batchDelayMs`) and every `pollIntervalMs`.
 * - After publishing, the event is also emitted as a plain Moleculer event (best effort) for
 *   live, non-durable listeners.
 *
 * Patterns: Polling Publisher (Chris Richardson,
 * microservices.io/patterns/data/polling-publisher.html); the publisher side of eShop
 * (dotnet/eShop src/Ordering.API/Application/IntegrationEvents/OrderingIntegrationEventService.cs
 * `PublishEventsThroughEventBusAsync`: read pending, publish, mark published).
 */
import { withRequestId } from "../request-context";
import { releaseBus, acquireBus, busUrl, deliverLocally } from "./bus";
import type { DomainEvent, EventsHost } from "./domain-event";
import { eventSubject, type JetStreamBus } from "./jetstream";
import { OUTBOX_METRICS } from "./metrics";
import {
	lockPendingRows,
	markPublished,
	outboxBacklog,
	toDomainEvent,
	type OutboxBacklog
} from "./outbox";

/** Faults a failure test injects into the relay. */
export type RelayFault = "crash-before-publish" | "crash-after-publish";

export interface RelayOptions {
	/** Poll interval, in ms. */
	readonly pollIntervalMs: number;
	/** Wait before a woken relay's pass, in ms, batching the commits meanwhile. */
	readonly batchDelayMs: number;
	/** Rows published per relay transaction. */
	readonly batchSize: number;
	/** The relay crashes right before publishing a row, or right after and before marking it. */
	readonly faults: readonly RelayFault[];
	/** What a crash is (the process SIGKILLs itself, by default). */
	readonly crash: () => void;
}

/** The outbox's state as `<service>.outboxStatus` answers it. */
export interface OutboxStatus extends OutboxBacklog {
	/** Rows this node published since it started. */
	published: number;
	/** How many of those JetStream dropped as already stored (re-sends). */
	serverDuplicates: number;
	mode: "jetstream" | "local";
}

const delay = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

/** The relay of one service (see the module comment). */
export class OutboxRelay {
	private stopping = false;
	private run: Promise<void> | null = null;
	private again = false;
	private published = 0;
	private serverDuplicates = 0;
	private bus: JetStreamBus | null = null;
	private busUrl: string | null = null;
	private timer: NodeJS.Timeout | null = null;

	constructor(
		private readonly host: EventsHost,
		private readonly opts: RelayOptions
	) {}

	/** Connects to JetStream (with a transporter) and starts polling. */
	async start(): Promise<void> {
		const url = busUrl();
		if (url) {
			this.bus = await acquireBus(url, `${this.host.broker.nodeID}-events`);
			this.busUrl = url;
		}
		this.timer = setInterval(() => this.kick(), this.opts.pollIntervalMs);
		this.timer.unref?.();
	}

	/** Stops polling; a last pass sends what the service committed while stopping. Idempotent. */
	async stop(): Promise<void> {
		if (this.stopping) return;
		this.stopping = true;
		if (this.timer) clearInterval(this.timer);
		await this.run?.catch(() => undefined);
		await this.relayOnce().catch(() => undefined);
		if (this.busUrl) await releaseBus(this.busUrl);
	}

	/** The backlog and what this node published. */
	async status(): Promise<OutboxStatus> {
		const backlog = await outboxBacklog(this.host.db);
		return {
			...backlog,
			published: this.published,
			serverDuplicates: this.serverDuplicates,
			mode: this.bus ? "jetstream" : "local"
		};
	}

	/** Runs the relay now (coalesced with a run in progress). */
	kick(): void {
		// Not before DbMixin has migrated the database (no outbox table yet on a first start).
		if (this.stopping || this.host.$dbReady === false) return;
		if (this.run) {
			this.again = true;
			return;
		}
		const { batchDelayMs, batchSize } = this.opts;
		// The relay publishes every request's events: it runs outside the request that woke
		// it (each publication runs with its own event's requestId, below).
		this.run = withRequestId(null, async () => {
			try {
				// Commits during this wait are published by the same pass.
				if (batchDelayMs > 0) await delay(batchDelayMs);
				for (;;) {
					this.again = false;
					const sent = await this.relayOnce();
					if (this.stopping) break;
					// A full batch: there is more. Another node holds the lock: try shortly.
					if (sent === batchSize) continue;
					if (sent < 0) {
						await delay(50);
						if ((await this.relayOnce()) === batchSize) continue;
					}
					if (!this.again) break;
				}
			} catch (err) {
				this.host.logger.warn("Outbox relay pass failed; retrying on the next poll", err);
			} finally {
				this.run = null;
			}
		});
	}

	/**
	 * One relay pass under the database's outbox lock.
	 * @returns rows published, or -1 when another node holds the lock
	 */
	async relayOnce(): Promise<number> {
		const { db, broker, name, logger } = this.host;
		const { faults, crash } = this.opts;
		const sent = await db.transaction(async t => {
			const rows = await lockPendingRows(db, t, this.opts.batchSize);
			if (!rows) return -1;
			const published: string[] = [];
			for (const row of rows) {
				const event = toDomainEvent(row, name);
				if (faults.includes("crash-before-publish")) crash();
				const ok = await withRequestId(event.requestId, async () => {
					try {
						await this.publish(event);
						return true;
					} catch (err) {
						logger.warn(`Could not publish ${event.name} ${event.id}; will retry`, err);
						return false;
					}
				});
				if (!ok) break;
				published.push(row.id);
				if (faults.includes("crash-after-publish")) crash();
			}
			if (published.length > 0) await markPublished(db, t, published);
			return published.length;
		});
		if (sent > 0) {
			this.published += sent;
			if (broker.isMetricsEnabled())
				broker.metrics.increment(OUTBOX_METRICS.published, { service: name }, sent);
		}
		if (sent >= 0 && broker.isMetricsEnabled()) {
			const backlog = await outboxBacklog(db);
			broker.metrics.set(OUTBOX_METRICS.pending, backlog.pending, { service: name });
			broker.metrics.set(OUTBOX_METRICS.lagMs, backlog.oldestPendingAgeMs, { service: name });
		}
		return sent;
	}

	/** JetStream publish (acknowledged by the server), or in-process delivery. */
	private async publish(event: DomainEvent): Promise<void> {
		if (this.bus) {
			const ack = await this.bus.js.publish(
				eventSubject(event.name),
				Buffer.from(JSON.stringify(event)),
				{ msgID: event.id, timeout: 5_000 }
			);
			// A re-send after a crash, dropped by the server's duplicate window.
			if (ack.duplicate) this.serverDuplicates++;
		} else {
			await deliverLocally(this.host.broker, event);
		}
		// Live, non-durable listeners (best effort).
		this.host.broker.emit(event.name, event.data).catch(() => undefined);
	}
}
