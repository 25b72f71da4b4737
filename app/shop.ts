/**
 * Starts the whole shop in ONE process (what `npm start`, `npm run repl` and the end-to-end tests
 * use): the embedded Postgres when `DATABASE_URL` is unset, then one broker holding every service.
 */
import path from "node:path";
import {
	ServiceBroker,
	type BrokerOptions,
	type Middleware,
	type Service,
	type ServiceSchema
} from "moleculer";
import { config, resetConfig } from "../platform/config";
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from "../tools/embedded-postgres";
import { SHOP_SERVICES } from "./services";

export interface RunningShop {
	broker: ServiceBroker;
	/** The embedded Postgres, when this process started one. */
	postgres: EmbeddedPostgresHandle | null;
	/** `http://127.0.0.1:<port>` of the gateway. */
	url: string;
	/**
	 * The administrator this start created with a generated password (the first start without
	 * `ADMIN_PASSWORD`): shown once by the start script, never logged. `null` otherwise.
	 */
	adminCredentials: { email: string; password: string } | null;
	/** Stops the broker (draining in-flight work), then the embedded Postgres. */
	stop(): Promise<void>;
}

export interface StartShopOptions {
	/** Broker option overrides (tests: `logger: false`). */
	broker?: Partial<BrokerOptions>;
	/** Progress lines for the operator. */
	onProgress?: (message: string) => void;
}

/**
 * Starts the embedded Postgres if no database is configured and publishes its URL as
 * `DATABASE_URL` for the rest of the process.
 */
export async function ensureDatabaseServer(
	onProgress?: (m: string) => void
): Promise<EmbeddedPostgresHandle | null> {
	const c = config();
	if (c.databaseUrl) return null;
	const pg = await startEmbeddedPostgres({
		dataDir: c.dataDir,
		port: c.embeddedPostgresPort,
		onProgress
	});
	process.env.DATABASE_URL = pg.url;
	resetConfig();
	return pg;
}

/**
 * A broker middleware reporting the services' start-up (migrations, seeding): a line as each
 * service has started, with how long it took and how many migrations it applied, and every 5 s
 * the services still starting.
 */
function startProgress(progress: (m: string) => void, total: number): Middleware {
	const starting = new Map<string, number>();
	let done = 0;
	let timer: NodeJS.Timeout | null = null;
	const t0 = Date.now();
	const stopTimer = (): void => {
		if (timer) clearInterval(timer);
		timer = null;
	};
	return {
		name: "StartProgress",
		serviceStarting(svc: Service): void {
			if (svc.name.startsWith("$")) return;
			starting.set(svc.name, Date.now());
			timer ??= setInterval(() => {
				if (starting.size > 0)
					progress(
						`  still starting after ${Math.round((Date.now() - t0) / 1000)} s: ${[...starting.keys()].join(", ")}`
					);
			}, 5_000).unref();
		},
		serviceStarted(svc: Service): void {
			const since = starting.get(svc.name);
			if (since === undefined) return;
			starting.delete(svc.name);
			done++;
			const applied = (svc as unknown as { $migrationsApplied?: number }).$migrationsApplied;
			const migrations = applied
				? `, ${applied} migration${applied === 1 ? "" : "s"} applied`
				: "";
			progress(
				`  ${svc.name} started (${done}/${total}, ${((Date.now() - since) / 1000).toFixed(1)} s${migrations})`
			);
			if (starting.size === 0) stopTimer();
		},
		started: stopTimer,
		stopped: stopTimer
	} as unknown as Middleware;
}

/**
 * The services' schemas (their modules' default exports), loaded one per event-loop turn so that
 * a Postgres start in progress gets on meanwhile.
 */
async function loadServiceSchemas(): Promise<unknown[]> {
	const schemas: unknown[] = [];
	for (const name of SHOP_SERVICES) {
		await new Promise(resolve => setImmediate(resolve));
		// eslint-disable-next-line @typescript-eslint/no-require-imports
		const mod = require(path.join(__dirname, "..", "services", name, `${name}.service`));
		schemas.push(mod.default ?? mod);
	}
	return schemas;
}

/** Starts the shop; resolves when every service has started. */
export async function startShop(opts: StartShopOptions = {}): Promise<RunningShop> {
	const progress = opts.onProgress ?? (() => undefined);
	// The embedded Postgres boots in its own process while this one loads the services' code (no
	// service module reads the configuration when loaded; moleculer.config.ts does: loaded after).
	const postgresStarting = ensureDatabaseServer(progress);
	postgresStarting.catch(() => undefined); // awaited below; not an unhandled rejection meanwhile
	let schemas: unknown[];
	try {
		schemas = await loadServiceSchemas();
	} catch (err) {
		const started = await postgresStarting.catch(() => null);
		if (started) await started.stop();
		throw err;
	}
	const postgres = await postgresStarting;
	let adminCredentials: RunningShop["adminCredentials"] = null;
	try {
		// The broker config reads the (possibly updated) environment: load it now.
		// eslint-disable-next-line @typescript-eslint/no-require-imports
		const brokerConfig = require("../moleculer.config") as BrokerOptions;
		const middlewares = opts.broker?.middlewares ?? brokerConfig.middlewares ?? [];
		const broker = new ServiceBroker({
			...brokerConfig,
			skipProcessEventRegistration: true,
			...opts.broker,
			middlewares: [...middlewares, startProgress(progress, SHOP_SERVICES.length)],
			// users.service.ts hands a generated administrator password over instead of logging it.
			onAdministratorCreated: (admin: { email: string; password: string }) => {
				adminCredentials = admin;
			},
			// However the broker is stopped (signal, REPL `quit`), the embedded Postgres goes with it.
			stopped: async () => {
				if (postgres) await postgres.stop();
			}
		} as BrokerOptions);
		for (const schema of schemas) broker.createService(schema as ServiceSchema);
		progress(
			`Starting ${SHOP_SERVICES.length} services (migrations and demo data on first start)...`
		);
		await broker.start();
		const port =
			(
				broker.getLocalService("api") as unknown as {
					server?: { address(): { port: number } };
				}
			)?.server?.address()?.port ?? config().port;
		return {
			broker,
			postgres,
			url: `http://127.0.0.1:${port}`,
			adminCredentials,
			async stop() {
				await broker.stop();
				if (postgres) await postgres.stop();
			}
		};
	} catch (err) {
		if (postgres) await postgres.stop();
		throw err;
	}
}
