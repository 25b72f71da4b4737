/**
 * The command line of `npm run cluster` (bin/cluster.ts):
 *
 *   npm run cluster [-- [--nats 1|3|5] [--replicas <n>] [--replicas <service>=<n>[,...]]]
 *
 * - `--nats <n>`: how many nats-servers to start here (default 1). With 3 (or 5) they form a
 *   cluster with JetStream (tools/nats-cluster.ts), the nodes get every server in `TRANSPORTER`
 *   and `JETSTREAM_REPLICAS=<n>` (docs/nats-cluster.md). Refused together with `TRANSPORTER`
 *   (the servers are then someone else's).
 * - `--replicas <n>`: nodes of each service of REPLICATED_SERVICES (default 2: the cluster form
 *   runs every stateful service of an order's path twice, so that their saga leases, outbox
 *   relays and durable consumers are shared); `--replicas <service>=<n>` for one service (any but
 *   the gateway, which listens on PORT). Later arguments win: `--replicas 1 --replicas orders=2`.
 * Both forms also take `--name=value`.
 */
import { SHOP_SERVICES, type ShopService } from "../app/services";
import { NATS_CLUSTER_SIZES } from "./nats-cluster";

export const CLUSTER_USAGE =
	"usage: npm run cluster [-- [--nats 1|3|5] [--replicas <n>] [--replicas <service>=<n>[,<service>=<n>...]]]";

/**
 * The services run twice by default in `npm run cluster` (and in docker-compose.yml and
 * deploy/k8s): the ones an order goes through that hold state other nodes of the service share,
 * i.e. sagas with leases (orders), outbox relays behind one lock per database (orders, inventory,
 * payments) and durable consumers sharing a JetStream consumer (notifications).
 */
export const REPLICATED_SERVICES: readonly ShopService[] = Object.freeze([
	"orders",
	"inventory",
	"payments",
	"notifications"
]);

/** Nodes per replicated service unless `--replicas` says otherwise. */
export const DEFAULT_REPLICAS = 2;

/** A command line `npm run cluster` does not take; its message ends with the usage line. */
export class ClusterUsageError extends Error {}

export interface ClusterArgs {
	/** Nodes per service (services not listed: one). */
	readonly replicas: Partial<Record<ShopService, number>>;
	/** nats-servers to start here: 1, 3 or 5. */
	readonly natsServers: number;
}

/** A replica count 1..9. */
function count(value: string, what: string): number {
	if (!/^[1-9]$/.test(value))
		throw new ClusterUsageError(`bad replica count "${value}" for ${what} (want 1..9)`);
	return Number(value);
}

/**
 * Parses `npm run cluster`'s arguments (see the module comment).
 * @param argv - the arguments after the script's name (`process.argv.slice(2)`)
 * @returns the nodes per service (REPLICATED_SERVICES at DEFAULT_REPLICAS unless told) and the
 *   number of nats-servers
 * @throws ClusterUsageError on an unknown argument or a bad value
 */
export function parseClusterArgs(argv: readonly string[]): ClusterArgs {
	const replicas: Partial<Record<ShopService, number>> = {};
	for (const s of REPLICATED_SERVICES) replicas[s] = DEFAULT_REPLICAS;
	let natsServers = 1;
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i]!;
		const m = /^--(replicas|nats)(?:=(.*))?$/.exec(arg);
		if (!m) throw new ClusterUsageError(`unknown argument "${arg}"\n${CLUSTER_USAGE}`);
		const value = m[2] ?? argv[++i];
		if (!value) throw new ClusterUsageError(`--${m[1]} needs a value\n${CLUSTER_USAGE}`);
		if (m[1] === "nats") {
			if (!(NATS_CLUSTER_SIZES as readonly number[]).map(String).includes(value))
				throw new ClusterUsageError(
					`--nats ${value}: start ${NATS_CLUSTER_SIZES.join(", ")} servers (a JetStream quorum is a majority)\n${CLUSTER_USAGE}`
				);
			natsServers = Number(value);
			continue;
		}
		if (!value.includes("=")) {
			const n = count(value, REPLICATED_SERVICES.join(", "));
			for (const s of REPLICATED_SERVICES) replicas[s] = n;
			continue;
		}
		for (const part of value.split(",")) {
			const [name, n] = part.trim().split("=");
			if (!(SHOP_SERVICES as readonly string[]).includes(name!))
				throw new ClusterUsageError(
					`bad replica count "${part}" (want <service>=1..9; services: ${SHOP_SERVICES.join(", ")})`
				);
			if (name === "api")
				throw new ClusterUsageError("the gateway (api) runs once: it listens on PORT");
			replicas[name as ShopService] = count(n ?? "", name!);
		}
	}
	return { replicas, natsServers };
}
