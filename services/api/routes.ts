/**
 * The gateway's REST table (docs/CONTRACT.md, prefix `/api`): which action each route calls and
 * who may call it. Only these are reachable (`mappingPolicy: "restrict"` in
 * services/api/api.service.ts). docs/security.md's "who can call what" table is checked against
 * it (test/unit/security-doc.test.ts), and test/support/hostile.ts reads it from this file.
 */
import type { ServerResponse } from "node:http";
import type { GatewayRequest } from "../../mixins/web.mixin";
import type { OrderStreamMethods } from "./order-streams";

/** Who may call an alias: anyone (absent), any signed-in user, or admins. */
export type AliasAuth = "customer" | "admin";
const alias = (action: string, auth?: AliasAuth): { action: string; auth?: AliasAuth } =>
	auth ? { action, auth } : { action };

/** The REST table of CONTRACT.md (prefix `/api`). */
export const API_ALIASES: Record<string, { action: string; auth?: AliasAuth }> = {
	"POST users/register": alias("users.register"),
	"POST users/login": alias("users.login"),
	"GET users/me": alias("users.me", "customer"),
	"GET products": alias("products.list"),
	"GET products/:id": alias("products.get"),
	"POST products": alias("products.create", "admin"),
	"PATCH products/:id": alias("products.update", "admin"),
	"GET inventory/:productId": alias("inventory.get"),
	"PUT inventory/:productId": alias("inventory.setStock", "admin"),
	"POST orders": alias("orders.create", "customer"),
	"GET orders": alias("orders.list", "customer"),
	"GET orders/:id": alias("orders.get", "customer"),
	"POST orders/:id/cancel": alias("orders.cancel", "customer"),
	"GET notifications": alias("notifications.list", "customer"),
	"GET admin/sagas": alias("orders.listSagas", "admin"),
	"GET admin/sagas/:id": alias("orders.getSaga", "admin"),
	"GET admin/nodes": alias("api.nodes", "admin"),
	"GET admin/orders/rate": alias("api.orderRate", "admin"),
	"GET admin/orders/stuck": alias("orders.stuck", "admin"),
	"GET admin/orders/:id": alias("orders.adminGet", "admin"),
	"POST admin/orders/:id/refund": alias("orders.refund", "admin"),
	"POST admin/sagas/:id/redrive": alias("orders.redriveSaga", "admin"),
	"POST admin/sagas/:id/refund-and-cancel": alias("orders.refundAndCancelSaga", "admin"),
	"GET admin/dead-letters": alias("notifications.listDeadLetters", "admin"),
	"POST admin/dead-letters/:id/replay": alias("notifications.replayDeadLetter", "admin"),
	"GET admin/outbox": alias("api.outbox", "admin"),
	// The API's documentation (mixins/api-docs.mixin.ts): OpenAPI 3.1 and Swagger UI.
	"GET openapi.json": alias("api.openapi"),
	"GET docs": alias("api.docs"),
	"GET docs/:file": alias("api.docsAsset")
};

/**
 * The actions that honour an `Idempotency-Key` (a repeat answers the first outcome): the gateway
 * checks the header (400 `REQUEST_INVALID_ID` when malformed) and passes it on
 * (`ctx.meta.idempotencyKey`) for these only, and the OpenAPI document declares it on them;
 * every other route ignores the header (docs/api.md).
 */
export const IDEMPOTENCY_KEY_ACTIONS: ReadonlySet<string> = new Set(["orders.create"]);

/**
 * Server-Sent Events routes of `/api` (handlers in services/api/order-streams.ts), under the same
 * authentication, authorization (`auth`) and rate limit as every alias.
 */
export const STREAM_ALIASES = {
	"GET orders/:id/events": {
		auth: "customer" as AliasAuth,
		handler(
			this: OrderStreamMethods,
			req: GatewayRequest,
			res: ServerResponse,
			next: (err?: unknown) => void
		): void {
			this.streamOrderEvents(req, res).catch(next);
		}
	}
};
