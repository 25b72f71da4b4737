/**
 * A call sent while the caller's NATS connection is down (platform/nats-reconnect.ts).
 *
 * Two clustered `nats-server` processes; the caller's broker knows only the first
 * (`ignoreClusterUpdates`, so it cannot fail over to the second), the service's broker only the
 * second. The first server is SIGKILLed and the caller calls the service while it redials: the
 * `nats` client takes the request into its outbound buffer and empties that buffer at its next
 * dial attempt. The server comes back 1.5 s later. With the middleware the call is rejected when
 * the connection comes back and the retry policy sends it again: it answers well before the
 * request timeout (8 s here), where without it the call waits for the whole timeout.
 */
import { ServiceBroker } from "moleculer";
import { isTransientError } from "../../platform/errors";
import { NatsReconnectMiddleware } from "../../platform/nats-reconnect";
import { startNatsCluster, type NatsCluster, type NatsClusterServer } from "../support/nats";

const REQUEST_TIMEOUT_MS = 8_000;
/** How long the caller's only server stays dead, in ms. */
const OUTAGE_MS = 1_500;

const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

function brokerOn(server: NatsClusterServer, nodeID: string): ServiceBroker {
	return new ServiceBroker({
		namespace: "reconnect-test",
		nodeID,
		logger: false,
		transporter: {
			type: "NATS",
			options: {
				servers: [server.url],
				noRandomize: true,
				ignoreClusterUpdates: true,
				maxReconnectAttempts: -1,
				reconnectTimeWait: 200
			}
		},
		requestTimeout: REQUEST_TIMEOUT_MS,
		retryPolicy: { enabled: true, retries: 3, delay: 100, check: isTransientError },
		middlewares: [NatsReconnectMiddleware()]
	});
}

describe("a call sent while the caller's NATS connection is down", () => {
	let nats: NatsCluster;
	let caller: ServiceBroker;
	let service: ServiceBroker;
	let served = 0;

	beforeAll(async () => {
		nats = await startNatsCluster({ size: 2 });
		const [first, second] = nats.servers;
		caller = brokerOn(first!, "caller");
		service = brokerOn(second!, "service");
		service.createService({
			name: "echo",
			actions: {
				say(ctx: { params: { text: string } }) {
					served++;
					return { text: ctx.params.text };
				}
			}
		});
		await Promise.all([caller.start(), service.start()]);
		await caller.waitForServices("echo", 10_000);
		expect(await caller.call("echo.say", { text: "before" })).toEqual({ text: "before" });
	}, 60_000);

	afterAll(async () => {
		await Promise.allSettled([caller?.stop(), service?.stop()]);
		await nats?.stop();
	}, 30_000);

	it("is rejected when the connection comes back and sent again: answered before the request timeout", async () => {
		const first = nats.servers[0]!;
		await first.kill();
		await sleep(100); // the caller's client is redialling its only server
		const before = served;
		const t0 = Date.now();
		const answer = caller.call("echo.say", { text: "during" }).then(
			r => ({ r, ms: Date.now() - t0 }),
			(err: Error) => ({ err, ms: Date.now() - t0 })
		);
		await sleep(OUTAGE_MS);
		await first.restart();
		const got = await answer;
		expect(got).toMatchObject({ r: { text: "during" } });
		// Sent once, after the reconnect: the copy sent into the emptied buffer never arrived.
		expect(served - before).toBe(1);
		expect(got.ms).toBeGreaterThanOrEqual(OUTAGE_MS);
		expect(got.ms).toBeLessThan(REQUEST_TIMEOUT_MS);
	}, 30_000);
});
