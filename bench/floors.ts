/**
 * The floors the benchmark reads the shop's figures against, each run as its own process
 * (`node dist/bench/floors.js <mode> <port> [natsUrl]`), printing `READY` once it listens:
 *
 * - `http`: a bare Node HTTP server answering `{"ok":true}`: what the machine's HTTP stack can do.
 * - `gateway-local`: a moleculer-web gateway (the shop's broker options: validator, bulkhead,
 *   circuit breaker, tracking ...) whose `GET /api/empty` calls an empty action in the same broker.
 * - `gateway-nats`: the same gateway with no local action, over NATS (`natsUrl`) ...
 * - `empty-nats`: ... to a node holding only the empty action.
 */
import http from "node:http";
import { ServiceBroker, type BrokerOptions, type ServiceSchema } from "moleculer";
import ApiGateway from "moleculer-web";

const [mode, portArg, natsUrl] = process.argv.slice(2);
const port = Number(portArg);

function brokerOptions(nodeID: string, transporter: string | null): BrokerOptions {
	const shop = require("../moleculer.config") as BrokerOptions;
	return {
		...shop,
		nodeID,
		namespace: "bench-floor",
		transporter: transporter
			? { type: "NATS", options: { url: transporter, maxReconnectAttempts: -1 } }
			: null,
		cacher: null,
		logger: false,
		metrics: { enabled: false },
		tracing: { enabled: false },
		replOptions: undefined
	};
}

const EmptyService: ServiceSchema = {
	name: "bench",
	actions: {
		/** Does nothing: the cost of a call is all that is measured. */
		empty: { params: {}, handler: () => ({ ok: true }) }
	}
};

const Gateway: ServiceSchema = {
	name: "api",
	mixins: [ApiGateway as unknown as ServiceSchema],
	settings: {
		port,
		ip: "127.0.0.1",
		log4XXResponses: false,
		logRequestParams: null,
		logResponseData: null,
		routes: [
			{
				path: "/api",
				mappingPolicy: "restrict",
				autoAliases: false,
				aliases: { "GET empty": "bench.empty" },
				bodyParsers: { json: true }
			}
		]
	} as ServiceSchema["settings"]
};

async function main(): Promise<void> {
	if (mode === "http") {
		const body = Buffer.from('{"ok":true}');
		const server = http.createServer((_req, res) => {
			res.writeHead(200, {
				"Content-Type": "application/json",
				"Content-Length": body.length
			});
			res.end(body);
		});
		await new Promise<void>(r => server.listen(port, "127.0.0.1", r));
	} else if (mode === "gateway-local") {
		const broker = new ServiceBroker(brokerOptions("floor-local", null));
		broker.createService(EmptyService);
		broker.createService(Gateway);
		await broker.start();
	} else if (mode === "gateway-nats") {
		const broker = new ServiceBroker(brokerOptions("floor-gateway", natsUrl!));
		broker.createService(Gateway);
		await broker.start();
		await broker.waitForServices(["bench"], 30_000);
	} else if (mode === "empty-nats") {
		const broker = new ServiceBroker(brokerOptions("floor-empty", natsUrl!));
		broker.createService(EmptyService);
		await broker.start();
	} else throw new Error(`unknown mode ${mode}`);
	// Exit through process.exit(), so that `node --cpu-prof` writes its profile
	// (bench/read-probe.mjs with PROF=1); a SIGTERM's default action would not.
	for (const signal of ["SIGTERM", "SIGINT"] as const)
		process.once(signal, () => process.exit(0));
	console.log("READY");
}

main().catch(err => {
	console.error(err);
	process.exit(1);
});
