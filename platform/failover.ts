/**
 * Fast failover: a node that died without a goodbye (SIGKILL, OOM kill) costs its callers well
 * under a second, not a request timeout plus a heartbeat timeout.
 *
 * Moleculer forgets a silent node only when its heartbeat is `heartbeatTimeout` s late (8 to 16 s
 * here: the check runs every `heartbeatTimeout` s on whole seconds); until then the balancer keeps
 * sending it requests, each of which waits for its whole timeout (10 s at the gateway) before the
 * retry policy sends it elsewhere. NATS itself knows sooner: the kernel closes a killed process's
 * sockets, the NATS server drops its connection and its subscriptions at once, and a NATS request
 * to a subject nobody subscribes to is answered "503 no responders" (NATS 2.2+, ADR-2 headers) in
 * one round trip.
 *
 * So: every remote call this node makes is noted with its target node. Every `checkEveryMs`, a
 * target holding a call for longer than `probeAfterMs` is probed: a NATS request, carrying a
 * Moleculer PING packet, to that node's own PING subject (`MOL-<namespace>.PING.<nodeID>`, which
 * every live node subscribes to). "No responders" means the node's connection is gone: it is
 * dropped from the registry as an unexpected disconnect (`registry.nodes.disconnected`), which is
 * what the heartbeat check would do later: its endpoints leave the balancer, its pending requests
 * are rejected with `RequestRejectedError` (retryable), and the broker's retry policy sends calls
 * that are safe to repeat to a live replica. A live node, however slow, keeps its subscription:
 * its probe times out or is answered with a PONG, and nothing happens. No answer at all (our own
 * NATS connection is down) proves nothing either.
 *
 * Costs: nothing on calls that answer within `probeAfterMs`; one small NATS message per slow
 * target per `probeAfterMs`. Calls that are not retried (`orders.create`, `users.register`,
 * `products.create`, saga steps at broker level) fail fast with the retryable 503 instead of
 * timing out; the saga retries its step with the same idempotency key. A node lost with its
 * machine (no TCP close) is noticed when the NATS server's own ping gives up (`ping_interval` x
 * `ping_max`), or by the heartbeat check, whichever comes first. Measured figures and the
 * alternatives: docs/failover.md.
 */
import type { Context, Middleware, ServiceBroker } from "moleculer";

export interface FailoverOptions {
	/** A call outstanding this long (ms) makes its target node be probed. */
	readonly probeAfterMs: number;
	/** How often outstanding calls are looked at, in ms (default: `probeAfterMs / 4`, >= 25). */
	readonly checkEveryMs?: number;
	/** How long a probe waits for NATS to say "no responders", in ms (default 1 000). */
	readonly probeTimeoutMs?: number;
}

/** The parts of Moleculer's NATS transporter (0.15, nats.js 2.x) the probe uses. */
interface NatsTransporter {
	readonly prefix: string;
	readonly connected: boolean;
	readonly client: {
		request(subject: string, data: Uint8Array, opts: { timeout: number }): Promise<unknown>;
	} | null;
	serialize(packet: { type: string; payload: Record<string, unknown> }): Uint8Array;
}

/** nats.js `ErrorCode.NoResponders`. */
const NO_RESPONDERS = "503";

/** The broker's NATS transporter, or null (no transporter, or another kind). */
function natsTransporter(broker: ServiceBroker): NatsTransporter | null {
	const tx = (broker.transit as unknown as { tx?: Partial<NatsTransporter> } | undefined)?.tx;
	if (!tx || typeof tx.prefix !== "string" || typeof tx.serialize !== "function") return null;
	const client = tx.client as NatsTransporter["client"] | undefined;
	if (!client || typeof client.request !== "function") return null;
	return tx as NatsTransporter;
}

/**
 * `FailoverMiddleware({ probeAfterMs })`: probes the target of a call outstanding longer than
 * `probeAfterMs` and drops it from the registry when NATS has no subscriber for it (see above).
 * Does nothing without a NATS transporter, or for calls sent without a target node
 * (`disableBalancer`). Logs a warning per node dropped.
 */
export function FailoverMiddleware(opts: FailoverOptions): Middleware {
	const checkEveryMs = opts.checkEveryMs ?? Math.max(25, Math.floor(opts.probeAfterMs / 4));
	const probeTimeoutMs = opts.probeTimeoutMs ?? 1_000;
	/** Outstanding remote calls per target nodeID: their start times (ms). */
	const outstanding = new Map<string, Set<{ start: number }>>();
	/** Targets with a probe in flight, or probed less than `probeAfterMs` ago: when. */
	const probed = new Map<string, number>();
	let broker: ServiceBroker | null = null;
	let timer: NodeJS.Timeout | null = null;

	async function probe(nodeID: string): Promise<void> {
		const tx = broker && natsTransporter(broker);
		if (!broker || !tx?.connected || !tx.client) return;
		const packet = tx.serialize({
			type: "PING",
			payload: { time: Date.now(), id: `failover-${broker.generateUid()}` }
		});
		try {
			await tx.client.request(`${tx.prefix}.PING.${nodeID}`, packet, {
				timeout: probeTimeoutMs
			});
		} catch (err) {
			if ((err as { code?: unknown }).code !== NO_RESPONDERS) return; // alive, or unknown
			const node = broker.registry.nodes.get(nodeID);
			if (!node?.available || node.local) return;
			broker.logger.warn(
				`Node '${nodeID}' has no NATS subscription (its connection is gone): dropped, ` +
					`its pending calls are retried elsewhere.`
			);
			broker.registry.nodes.disconnected(nodeID, true);
		}
	}

	function check(): void {
		const now = Date.now();
		for (const [nodeID, calls] of outstanding) {
			const last = probed.get(nodeID);
			if (last !== undefined && now - last < opts.probeAfterMs) continue;
			let oldest = now;
			for (const c of calls) if (c.start < oldest) oldest = c.start;
			if (now - oldest < opts.probeAfterMs) continue;
			probed.set(nodeID, now);
			void probe(nodeID).finally(() => probed.set(nodeID, Date.now()));
		}
	}

	return {
		name: "Failover",

		created(b: ServiceBroker) {
			broker = b;
		},

		started() {
			if (!broker || !natsTransporter(broker) || opts.probeAfterMs <= 0) return;
			timer = setInterval(check, checkEveryMs);
			timer.unref();
		},

		stopped() {
			if (timer) clearInterval(timer);
			timer = null;
		},

		remoteAction(next: (ctx: Context) => Promise<unknown>) {
			if (opts.probeAfterMs <= 0) return next;
			return (ctx: Context): Promise<unknown> => {
				const nodeID = ctx.nodeID;
				if (!nodeID) return next(ctx);
				const call = { start: Date.now() };
				let calls = outstanding.get(nodeID);
				if (!calls) outstanding.set(nodeID, (calls = new Set()));
				calls.add(call);
				const done = (): void => {
					calls.delete(call);
					if (calls.size === 0 && outstanding.get(nodeID) === calls) {
						outstanding.delete(nodeID);
						probed.delete(nodeID);
					}
				};
				return next(ctx).finally(done);
			};
		}
	} as unknown as Middleware;
}
