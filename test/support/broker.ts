/**
 * A broker per suite (the Moleculer template's habit), with the shop's real services on the
 * test run's real Postgres. Each call isolates its databases with a fresh DATABASE_PREFIX.
 */
import crypto from "node:crypto";
import type { BrokerOptions, ServiceBroker, ServiceSchema } from "moleculer";
import { resetConfig } from "../../platform/config";
import type { AuthUser } from "../../platform/context";

export type ServiceName =
	"api" | "users" | "products" | "inventory" | "payments" | "orders" | "notifications";

export interface TestBroker {
	broker: ServiceBroker;
	/** The DATABASE_PREFIX these services use. */
	prefix: string;
	stop(): Promise<void>;
}

/**
 * Starts a broker (no transporter) holding `services`, each on its own fresh database.
 * @param env - extra environment for this suite (e.g. `{ SAGA_DEADLINE_MS: "2000" }`)
 * @param prefix - reuse the databases of an earlier broker (its `prefix`), e.g. to restart a node
 *   on the same state; default: a fresh prefix
 */
export async function startTestBroker(
	services: ServiceName[],
	opts: {
		env?: Record<string, string>;
		broker?: Partial<BrokerOptions>;
		extra?: object[];
		prefix?: string;
	} = {}
): Promise<TestBroker> {
	const prefix = opts.prefix ?? `t${crypto.randomBytes(4).toString("hex")}_`;
	process.env.DATABASE_PREFIX = prefix;
	process.env.METRICS_PORT = "0";
	process.env.HEALTH_PORT = "0";
	process.env.PORT = process.env.PORT ?? "0";
	process.env.LOGLEVEL = process.env.LOGLEVEL ?? "warn";
	process.env.JWT_SECRET = process.env.JWT_SECRET ?? "test-secret-test-secret-test-secret-0123";
	process.env.ADMIN_PASSWORD = process.env.ADMIN_PASSWORD ?? "admin-password-1";
	for (const [k, v] of Object.entries(opts.env ?? {})) process.env[k] = v;
	resetConfig();
	const brokerConfig = require("../../moleculer.config") as BrokerOptions;
	// The moleculer the config was loaded with (a suite may have reset the module registry since
	// this file was imported): the config registers the shop's cacher type in it.
	const { ServiceBroker: Broker } = require("moleculer") as typeof import("moleculer");
	const broker = new Broker({
		...brokerConfig,
		nodeID: `test-${prefix}`,
		logger: process.env.TEST_LOGS ? brokerConfig.logger : false,
		metrics: { enabled: false },
		skipProcessEventRegistration: true,
		...opts.broker
	});
	for (const name of services) {
		const mod = require(`../../services/${name}/${name}.service`);
		broker.createService(mod.default ?? mod);
	}
	for (const schema of opts.extra ?? []) broker.createService(schema as ServiceSchema);
	await broker.start();
	return { broker, prefix, stop: () => broker.stop() };
}

/** A customer identity for `ctx.meta.user` in direct broker calls. */
export function customer(id: string = crypto.randomUUID()): AuthUser {
	return {
		id,
		email: `c-${id.slice(0, 8)}@example.com`,
		name: "Test Customer",
		role: "customer"
	};
}

export const admin: AuthUser = {
	id: "00000000-0000-4000-8000-000000000001",
	email: "admin@example.com",
	name: "Admin",
	role: "admin"
};

/** Polls `fn` until `until(value)` holds or `timeoutMs` passes; returns the last value. */
export async function waitFor<T>(
	fn: () => Promise<T>,
	until: (v: T) => boolean,
	timeoutMs = 15_000,
	everyMs = 50
): Promise<T> {
	const end = Date.now() + timeoutMs;
	let v = await fn();
	while (!until(v) && Date.now() < end) {
		await new Promise(r => setTimeout(r, everyMs));
		v = await fn();
	}
	return v;
}
