/** Helpers for the order of a service's lifecycle handlers. */
import type { ServiceSchema } from "moleculer";

/**
 * Makes `handler` the schema's last `stopped` handler, so that it runs first: Moleculer runs the
 * `stopped` handlers of a merged schema in reverse order, and DbMixin's (moleculer-db) closes the
 * database. Idempotent: a handler already there is moved, not doubled. Call it from `merged()`.
 * @param handler - a `stopped` handler; `TThis` is the service it runs on
 */
export function runStoppedFirst<TThis>(
	schema: ServiceSchema,
	handler: (this: TThis) => Promise<void>
): void {
	const others = ([] as unknown[]).concat(schema.stopped ?? []).filter(h => h !== handler);
	schema.stopped = [...others, handler] as ServiceSchema["stopped"];
}
