/**
 * The services the gateway asks about, by name: those whose `readiness` its `GET /ready` requires,
 * and those whose outbox `GET /api/admin/outbox` reports.
 *
 * Why the gateway keeps its own list instead of app/services.ts (the ONE list of the shop's
 * services) or the service registry (issue 17):
 * - it runs alone under moleculer-runner (`dist/services/api/api.service.js`), so it cannot import
 *   app/, which names and loads every service;
 * - the registry knows only the services that are there now. `/ready` promises 503 naming a
 *   service that is missing: a gateway started before the other nodes (test/e2e/startup-storm),
 *   a stopped payments node (`checks.payments: SERVICE_NOT_AVAILABLE`, test/cluster/degradation).
 *   A set learned from the registry would drop the missing service and answer 200.
 * So the set is declared here; it must equal app/services.ts's `DATABASE_SERVICES` (every service
 * with a database has DbMixin's `readiness`).
 */

/** The services whose `readiness` (database reachable and migrated) `GET /ready` requires. */
export const READINESS_SERVICES = [
	"users",
	"products",
	"inventory",
	"orders",
	"payments",
	"notifications"
] as const;

/** The services with a transactional outbox (mixins/events.mixin.ts `outboxStatus`). */
export const OUTBOX_SERVICES = ["orders", "inventory", "payments", "products"] as const;
