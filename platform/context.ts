/**
 * Types of what travels with a call: `ctx.meta` as the gateway fills it, and the authenticated
 * caller resolved from the bearer token.
 */
import type { Context, ServiceSchema, ServiceSettingSchema } from "moleculer";

/** The authenticated caller as the gateway resolves it from the JWT. */
export interface AuthUser {
	id: string;
	email: string;
	name: string;
	role: "customer" | "admin";
}

/** `ctx.meta` of the shop's calls. */
export interface ShopMeta {
	/** The authenticated caller; null/undefined for anonymous REST calls and internal calls. */
	user?: AuthUser | null;
	/** Set by an action to make the gateway answer with this HTTP status. */
	$statusCode?: number;
	/** Set by an action to add response headers at the gateway. */
	$responseHeaders?: Record<string, string>;
	/** The client's `Idempotency-Key` header, when sent. */
	idempotencyKey?: string;
	/**
	 * The client's address as the gateway sees it (the TCP peer, or the `X-Forwarded-For` entry
	 * left of the `TRUSTED_PROXIES`); absent for calls from inside the cluster. users.login
	 * throttles failures per address with it.
	 */
	clientIp?: string;
}

/** The context type of the shop's actions. */
export type ShopContext<P = Record<string, unknown>> = Context<P, ShopMeta>;

/** Settings of a shop service: Moleculer's own plus the mixins' (moleculer-db, moleculer-web). */
export type ShopSettings = ServiceSettingSchema & Record<string, unknown>;

/** A service schema whose handlers and methods see `TThis` (the service plus its mixins). */
export type ShopServiceSchema<TThis> = ServiceSchema<
	ShopSettings,
	Record<string, any>,
	Record<string, any>,
	TThis
>;
