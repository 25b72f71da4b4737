/**
 * Where durable events travel: NATS JetStream (platform/events/jetstream.ts) when a NATS
 * transporter is configured, one connection per process and URL shared by every service of the
 * process; or, in one process without a transporter, straight to the broker's in-process
 * consumers, with the same at-least-once semantics.
 *
 * Pattern: eShop's `IEventBus` (dotnet/eShop src/EventBus/Abstractions/IEventBus.cs) with one
 * implementation per transport, here chosen by the `TRANSPORTER` setting.
 */
import type { ServiceBroker } from "moleculer";
import { config } from "../config";
import { natsSecurity } from "../nats-options";
import { connectJetStream, type JetStreamBus } from "./jetstream";
import type { DomainEvent } from "./domain-event";

const buses = new Map<string, { bus: Promise<JetStreamBus>; users: number }>();

/** Whether this node carries durable events over JetStream: the NATS URL, or null. */
export function busUrl(): string | null {
	return config().transporter;
}

/** The process's JetStream connection to `url` (connected on first use; counted per user). */
export async function acquireBus(url: string, name: string): Promise<JetStreamBus> {
	let entry = buses.get(url);
	if (!entry) {
		const c = config();
		entry = {
			bus: connectJetStream(
				url,
				name,
				natsSecurity(c),
				{
					maxAgeMs: c.eventsMaxAgeMs,
					maxBytes: c.eventsMaxBytes,
					replicas: c.jetstreamReplicas
				},
				{ randomize: c.natsRandomize }
			),
			users: 0
		};
		buses.set(url, entry);
		entry.bus.catch(() => buses.delete(url));
	}
	entry.users++;
	return entry.bus;
}

/** Gives back a connection taken with `acquireBus`; the last user closes it. */
export async function releaseBus(url: string): Promise<void> {
	const entry = buses.get(url);
	if (!entry) return;
	if (--entry.users > 0) return;
	buses.delete(url);
	await (await entry.bus).close().catch(() => undefined);
}

/** One process, no transporter: a consumer of an event in this broker. */
export interface LocalConsumer {
	readonly consumer: string;
	/** Processes (with retries, then dead-letters); rejects only while the consumer stops. */
	deliver(event: DomainEvent): Promise<void>;
}

const localConsumers = new WeakMap<ServiceBroker, Map<string, LocalConsumer[]>>();

function localRegistry(broker: ServiceBroker): Map<string, LocalConsumer[]> {
	let m = localConsumers.get(broker);
	if (!m) {
		m = new Map();
		localConsumers.set(broker, m);
	}
	return m;
}

/** Adds an in-process consumer of event `name` to `broker`. */
export function addLocalConsumer(broker: ServiceBroker, name: string, c: LocalConsumer): void {
	const list = localRegistry(broker).get(name) ?? [];
	localRegistry(broker).set(name, [...list, c]);
}

/** Removes the in-process consumers `gone` from `broker`. */
export function removeLocalConsumers(broker: ServiceBroker, gone: readonly LocalConsumer[]): void {
	for (const [event, list] of localRegistry(broker))
		localRegistry(broker).set(
			event,
			list.filter(c => !gone.includes(c))
		);
}

/**
 * Delivers `event` to this broker's in-process durable consumers (the relay's path without a
 * transporter; tests use it to deliver an event, or the same event twice). Resolves when every
 * consumer has applied it, found it a duplicate, or dead-lettered it.
 */
export async function deliverLocally(broker: ServiceBroker, event: DomainEvent): Promise<void> {
	for (const c of localRegistry(broker).get(event.name) ?? []) await c.deliver(event);
}
