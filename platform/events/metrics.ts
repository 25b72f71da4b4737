/**
 * The events engine's own metrics, labelled by `service` (with METRICS_PORT): the outbox's
 * backlog and publications (platform/events/relay.ts) and the consumers' outcomes
 * (platform/events/inbox.ts, platform/events/dead-letters.ts). The consumers' lag gauges are in
 * the shop's table (platform/metrics.ts: `eventsConsumer*`).
 *
 * Registered once per broker, the way moleculer's own metrics are (`broker.metrics.register`).
 */
import type { ServiceBroker } from "moleculer";

/** The outbox's metrics: rows not yet published, the oldest one's age, rows published. */
export const OUTBOX_METRICS = {
	pending: "shop.outbox.pending",
	lagMs: "shop.outbox.lag.ms",
	published: "shop.outbox.published.total"
} as const;

/** The consumers' counters: events applied, duplicates dropped, retries, dead letters. */
export const INBOX_METRICS = {
	processed: "shop.events.processed.total",
	duplicates: "shop.events.duplicates.total",
	redeliveries: "shop.events.redeliveries.total",
	deadLetters: "shop.events.dead_letters.total"
} as const;

export type InboxMetric = (typeof INBOX_METRICS)[keyof typeof INBOX_METRICS];

function register(
	broker: ServiceBroker,
	type: "gauge" | "counter",
	name: string,
	description: string
): void {
	if (!broker.isMetricsEnabled() || broker.metrics.getMetric(name)) return;
	broker.metrics.register({ type, name, labelNames: ["service"], description } as Parameters<
		ServiceBroker["metrics"]["register"]
	>[0]);
}

/** Registers the outbox's metrics (once per broker). */
export function registerOutboxMetrics(broker: ServiceBroker): void {
	register(broker, "gauge", OUTBOX_METRICS.pending, "Outbox rows not yet published");
	register(
		broker,
		"gauge",
		OUTBOX_METRICS.lagMs,
		"Age of the oldest unpublished outbox row (ms)"
	);
	register(broker, "counter", OUTBOX_METRICS.published, "Outbox rows published");
}

/** Registers the consumers' counters (once per broker). */
export function registerInboxMetrics(broker: ServiceBroker): void {
	register(broker, "counter", INBOX_METRICS.processed, "Durable events applied");
	register(
		broker,
		"counter",
		INBOX_METRICS.duplicates,
		"Redelivered events suppressed by the inbox"
	);
	register(broker, "counter", INBOX_METRICS.redeliveries, "Failed deliveries that were retried");
	register(broker, "counter", INBOX_METRICS.deadLetters, "Events dead-lettered");
}

/** Adds 1 to consumer counter `name` of `service`. */
export function countInboxMetric(broker: ServiceBroker, name: InboxMetric, service: string): void {
	if (broker.isMetricsEnabled()) broker.metrics.increment(name, { service });
}
