/**
 * Starts the whole shop in ONE process (what `npm start`, `npm run repl` and the end-to-end tests
 * use): the embedded Postgres when `DATABASE_URL` is unset, then one broker holding every service.
 */
import path from "node:path";
import { ServiceBroker, type BrokerOptions } from "moleculer";
import { config, resetConfig } from "./config";
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from "./embedded-postgres";

/** Every service of the shop, in start order (the gateway last). */
export const SHOP_SERVICES = [
	"users",
	"products",
	"inventory",
	"payments",
	"orders",
	"notifications",
	"api"
] as const;

export interface RunningShop {
	broker: ServiceBroker;
	/** The embedded Postgres, when this process started one. */
	postgres: EmbeddedPostgresHandle | null;
	/** `http://127.0.0.1:<port>` of the gateway. */
	url: string;
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

/** Starts the shop; resolves when every service has started. */
export async function startShop(opts: StartShopOptions = {}): Promise<RunningShop> {
	const progress = opts.onProgress ?? (() => undefined);
	const postgres = await ensureDatabaseServer(progress);
	try {
		// The broker config reads the (possibly updated) environment: load it now.
		// eslint-disable-next-line @typescript-eslint/no-require-imports
		const brokerConfig = require("../moleculer.config") as BrokerOptions;
		const broker = new ServiceBroker({
			...brokerConfig,
			skipProcessEventRegistration: true,
			...opts.broker,
			// However the broker is stopped (signal, REPL `quit`), the embedded Postgres goes with it.
			stopped: async () => {
				if (postgres) await postgres.stop();
			}
		});
		for (const name of SHOP_SERVICES) {
			// eslint-disable-next-line @typescript-eslint/no-require-imports
			const mod = require(path.join(__dirname, "..", "services", `${name}.service`));
			broker.createService(mod.default ?? mod);
		}
		progress("Starting services (migrations and demo data on first start)...");
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
