/**
 * The domain event as it travels between services (the JetStream message body, the outbox row,
 * the inbox key), and what the events engine needs of the service that hosts it.
 *
 * Pattern: eShop's `IntegrationEvent` (dotnet/eShop src/EventBus/Events/IntegrationEvent.cs: an
 * id and a creation date on every event), with the emitting service, the aggregate and the
 * request that caused it added for ordering and correlation.
 */
import type { ServiceBroker } from "moleculer";
import type { ShopDatabase } from "../db/pool";

/** A domain event as it travels (the JetStream message body). */
export interface DomainEvent<T = unknown> {
	/** UUID: the outbox row id, the `Nats-Msg-Id`, the inbox key. */
	id: string;
	/** `<entity>.<pastTenseVerb>`, the emitting service's name for it. */
	name: string;
	/** The emitting service. */
	source: string;
	/** The entity the event is about (an order id, a product id); order is kept per aggregate. */
	aggregateId: string;
	/** ISO 8601, when the state change committed (the outbox row's time). */
	occurredAt: string;
	/** The request that caused it (X-Request-ID), for correlation. */
	requestId: string | null;
	data: T;
}

/** Whether `x` has the shape of a DomainEvent (a message that does not is poison). */
export function isDomainEvent(x: unknown): x is DomainEvent {
	const e = x as DomainEvent;
	return (
		typeof e === "object" &&
		e !== null &&
		typeof e.id === "string" &&
		e.id.length > 0 &&
		e.id.length <= 200 &&
		typeof e.name === "string" &&
		typeof e.aggregateId === "string" &&
		typeof e.data === "object" &&
		e.data !== null
	);
}

/**
 * The service side the engines need (`this` of a service with DbMixin): its name, broker, logger
 * and database.
 */
export interface EventsHost {
	readonly name: string;
	readonly broker: ServiceBroker;
	readonly logger: {
		info(...a: unknown[]): void;
		warn(...a: unknown[]): void;
		error(...a: unknown[]): void;
	};
	readonly db: ShopDatabase;
	/** DbMixin's flag: migrated and connected (false until then). */
	readonly $dbReady?: boolean;
}
