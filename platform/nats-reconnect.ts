/**
 * Calls in flight when a NATS server of a cluster dies cost their callers a retry, not a timeout.
 *
 * When a server goes (SIGKILL, a dead host), its clients reconnect to another server of the
 * cluster within milliseconds (platform/nats-options.ts `NATS_RECONNECT`) and their subscriptions
 * follow them. But core NATS is at-most-once, and Moleculer's packets are lost in three places:
 * - in that server's buffers at that moment, in both directions: a response to a node connected
 *   to the dead server (its `RES.<nodeID>` subscription was there), a request to a node
 *   connected to it (the failover probe, platform/failover.ts, cannot help: the target
 *   reconnects before it is probed and answers the probe);
 * - in the client's own buffer while it is disconnected: the `nats` client (2.29) takes
 *   publishes while it redials, but empties its outbound buffer at every dial attempt
 *   (`ProtocolHandler.prepare()` → `resetOutbound()`), so whatever a node sent between the drop
 *   and the dial that succeeded is never sent. Moleculer's NATS transporter does not watch the
 *   connection's status, so it keeps publishing into that buffer.
 * Each such caller waits for its whole request timeout (10 s at the gateway). Measured on three
 * servers (test/cluster/nats-cluster.test.ts) before this middleware: a `POST /api/orders`
 * answered 504 after 10.2 s, `orders.get` and saga steps timed out. While it rejected only the
 * calls sent before the drop, a request the gateway took about 70 ms after the kill of its own
 * server still answered after 10.2 s (CI, 2026-12-02: timed out, then retried);
 * test/cluster/nats-reconnect.test.ts reproduces that case.
 *
 * So each node, when its own NATS connection comes back (`reconnect` status of the `nats`
 * client):
 * 1. rejects every remote call it still has pending, with Moleculer's `RequestRejectedError`
 *    (retryable, 503): those sent before the drop and those sent while it was disconnected, either
 *    of which may be lost. The broker's retry policy sends the calls that are safe to repeat again
 *    at once, saga steps are retried by the saga with the same idempotency key, and calls that
 *    are not retried (`orders.create`) answer 503 at once instead of 504 after 10 s (the client
 *    repeats it with its `Idempotency-Key`, docs/failover.md);
 * 2. tells every other node, on subject `MOL-<namespace>.NATS-RECONNECTED`, which reject their
 *    pending calls to it the same way (their requests, or its responses to them, may have been
 *    lost with its connection), and ask it for its INFO again if the failover probe had dropped
 *    it from their registry meanwhile.
 * A call that was not lost (sent in the moment between the reconnect and this node hearing of
 * it) is rejected too and repeated: the price of a rare event, paid once per reconnect. The
 * rejections are what Moleculer itself does to the calls pending on a node that leaves
 * (`transit.removePendingRequestByNodeID`).
 */
import { Errors, type Middleware, type ServiceBroker } from "moleculer";

/** The parts of Moleculer's NATS transporter (0.15, nats.js 2.x) this middleware uses. */
interface NatsTransporter {
	readonly prefix: string;
	readonly client: {
		status(): AsyncIterable<{ type: string; data?: unknown }>;
		subscribe(
			subject: string,
			opts: { callback: (err: unknown, msg: { data: Uint8Array }) => void }
		): { unsubscribe(): void };
		publish(subject: string, data: Uint8Array): void;
	} | null;
}

/** A call of this node waiting for its response (Moleculer's `transit.pendingRequests`). */
export interface PendingRequest {
	readonly nodeID?: string | null;
	readonly action?: { readonly name?: string };
	reject(err: Error): void;
}

/** The parts of Moleculer's transit this middleware uses. */
export interface Transit {
	readonly tx?: Partial<NatsTransporter>;
	readonly pendingRequests: Map<string, PendingRequest>;
	removePendingRequest(id: string): void;
	discoverNode(nodeID: string): unknown;
}

/** The subject a reconnected node announces itself on (`<prefix>` is `MOL-<namespace>`). */
export function reconnectedSubject(prefix: string): string {
	return `${prefix}.NATS-RECONNECTED`;
}

function natsOf(broker: ServiceBroker): { transit: Transit; tx: NatsTransporter } | null {
	const transit = broker.transit as unknown as Transit | undefined;
	const tx = transit?.tx;
	if (!transit || !tx || typeof tx.prefix !== "string" || !tx.client) return null;
	if (typeof tx.client.status !== "function") return null;
	return { transit, tx: tx as NatsTransporter };
}

/**
 * Rejects the pending calls `which` selects (by the call's context id and request) with
 * Moleculer's `RequestRejectedError` (retryable, 503), as Moleculer does to the calls pending on a
 * node that left (`transit.removePendingRequestByNodeID`).
 * @returns how many were rejected
 */
export function rejectPending(
	transit: Transit,
	which: (id: string, req: PendingRequest) => boolean
): number {
	const chosen = [...transit.pendingRequests].filter(([id, req]) => which(id, req));
	for (const [id, req] of chosen) {
		transit.removePendingRequest(id);
		req.reject(
			new Errors.RequestRejectedError({
				action: req.action?.name ?? "?",
				nodeID: req.nodeID ?? "?"
			})
		);
	}
	return chosen.length;
}

/**
 * `NatsReconnectMiddleware()`: on this node's NATS reconnect, rejects its pending remote calls and
 * announces the reconnect; on another node's announcement, rejects the calls pending on it (see
 * the module comment). Does nothing without a NATS transporter. Logs a warning per reconnect.
 */
export function NatsReconnectMiddleware(): Middleware {
	let broker: ServiceBroker | null = null;
	let sub: { unsubscribe(): void } | null = null;
	let stopped = false;

	return {
		name: "NatsReconnect",

		created(b: ServiceBroker) {
			broker = b;
		},

		started() {
			const b = broker;
			const nats = b && natsOf(b);
			if (!b || !nats) return;
			const { transit, tx } = nats;
			const client = tx.client!;
			const subject = reconnectedSubject(tx.prefix);
			sub = client.subscribe(subject, {
				callback: (_err, msg) => {
					let nodeID: unknown;
					try {
						nodeID = (
							JSON.parse(Buffer.from(msg.data).toString("utf8")) as {
								nodeID?: unknown;
							}
						).nodeID;
					} catch {
						return;
					}
					if (typeof nodeID !== "string" || nodeID === b.nodeID) return;
					const n = rejectPending(transit, (_id, req) => req.nodeID === nodeID);
					if (n > 0)
						b.logger.warn(
							`Node '${nodeID}' reconnected to NATS: its ${n} pending call(s) may be lost, rejected to be retried.`
						);
					if (!b.registry.nodes.get(nodeID)?.available) transit.discoverNode(nodeID);
				}
			});
			void (async () => {
				for await (const s of client.status()) {
					if (stopped) break;
					if (s.type !== "reconnect") continue;
					// Sent before the drop, or into the buffer the client emptied when it dialled:
					// every call still pending may be lost.
					const n = rejectPending(transit, () => true);
					b.logger.warn(
						`Reconnected to NATS (${String(s.data)}): ${n} pending call(s) rejected to be retried; telling the other nodes.`
					);
					client.publish(
						subject,
						Buffer.from(JSON.stringify({ nodeID: b.nodeID }), "utf8")
					);
				}
			})().catch(() => undefined);
		},

		stopped() {
			stopped = true;
			try {
				sub?.unsubscribe();
			} catch {
				// The connection is already closed.
			}
			sub = null;
		}
	} as unknown as Middleware;
}
