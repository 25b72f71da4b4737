/**
 * Every node's own health endpoint, for compose healthchecks and Kubernetes probes: a small HTTP
 * server on `HEALTH_PORT` (3031 by default, 0 = off), started when the broker starts (before its
 * services, so a node that cannot finish starting still answers why) and closed after it stops.
 *
 * - `GET /health`, liveness: 200 `{ status: "ok", nodeID, uptime }` while the process's event
 *   loop answers.
 * - `GET /ready`, readiness: 200 `{ status: "ready", nodeID, checks }` when the broker has started
 *   and is not stopping, the transporter (if any) is connected, and every local service that has
 *   a `readiness` action (DbMixin's: database reachable, migrations applied) answers it within
 *   2 s; else 503 `{ status: "unavailable", nodeID, checks }` where each failed check says why,
 *   e.g. `"payments": "SERVICE_UNAVAILABLE: Database unreachable (connect ECONNREFUSED ...)"`.
 *
 * The gateway's own `/health` and `/ready` (services/api/api.service.ts, on PORT) remain: its `/ready`
 * asks every service of the cluster (`clusterReadiness`); this one answers for this node only.
 *
 * Probes are unauthenticated and unlimited, so both `/ready`s are computed at most once a second
 * per node (`cachedFor`, `READINESS_CACHE_MS`): concurrent probes share the one computation in
 * flight, and probes within a second of it get its result (the gateway's body says when it was
 * taken: `checkedAt`).
 * 2,000 concurrent probes cost one round of readiness calls, not 12,000 (test/e2e/ready-flood).
 * On the gateway's `/ready`, each service's `events` detail (its consumers' lag,
 * mixins/events.mixin.ts) is passed through in the body as `events`; it never makes a node
 * unready.
 */
import http from "node:http";
import type { Middleware, Service, ServiceBroker } from "moleculer";

/** The paths the node health server answers (deploy checks use them). */
export const NODE_HEALTH_PATHS = ["/health", "/ready"] as const;

/** How long one service's readiness action may take, in ms. */
const READINESS_TIMEOUT_MS = 2_000;

/** How long a readiness result is served before it is computed again, in ms. */
export const READINESS_CACHE_MS = 1_000;

export interface NodeReadiness {
	ready: boolean;
	checks: Record<string, string>;
	/** Each service's `events` detail (consumer lag), when its readiness answer has one. */
	events: Record<string, unknown>;
	/** When the checks were taken (ISO 8601). */
	checkedAt: string;
}

/**
 * `compute`, shared and reused: callers while it runs share that one promise (single flight),
 * and callers within `ttlMs` after it settled get its outcome; the next call after that starts
 * a new computation. So `compute` starts at most once per `ttlMs` (plus its own duration),
 * however many callers there are.
 * @param ttlMs - how long a settled outcome is reused, in ms
 * @param now - the clock (tests)
 */
export function cachedFor<T>(
	ttlMs: number,
	compute: () => Promise<T>,
	now: () => number = Date.now
): () => Promise<T> {
	let current: Promise<T> | null = null;
	let settledAt = -Infinity;
	let running = false;
	return () => {
		if (current && (running || now() - settledAt < ttlMs)) return current;
		running = true;
		const p = (async () => compute())();
		current = p;
		const settle = (): void => {
			if (current !== p) return;
			running = false;
			settledAt = now();
		};
		p.then(settle, settle);
		return p;
	};
}

/** What a failed readiness call says: `TYPE: message (cause)`. */
function reason(err: unknown): string {
	const e = (err ?? {}) as { type?: unknown; message?: unknown; data?: { cause?: unknown } };
	const type = typeof e.type === "string" && e.type ? e.type : "ERROR";
	const cause = typeof e.data?.cause === "string" ? ` (${e.data.cause})` : "";
	return `${type}: ${String(e.message ?? err)}${cause}`;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
	let timer: NodeJS.Timeout | undefined;
	return Promise.race([
		p,
		new Promise<never>((_, reject) => {
			timer = setTimeout(
				() =>
					reject(Object.assign(new Error(`no answer in ${ms} ms`), { type: "TIMEOUT" })),
				ms
			);
		})
	]).finally(() => clearTimeout(timer));
}

/** The readiness of this node: broker state, transporter, each local service's `readiness`. */
export async function nodeReadiness(broker: ServiceBroker): Promise<NodeReadiness> {
	const b = broker as ServiceBroker & {
		started?: boolean;
		stopping?: boolean;
		transit?: { connected: boolean };
	};
	const checkedAt = new Date().toISOString();
	const checks: Record<string, string> = {};
	const events: Record<string, unknown> = {};
	checks.broker = b.stopping ? "stopping" : b.started ? "ok" : "starting";
	if (b.transit) checks.transporter = b.transit.connected ? "ok" : "disconnected";
	const services = (broker.services as Service[]).filter(s => !s.name.startsWith("$"));
	await Promise.all(
		services.map(async svc => {
			const readiness = (svc.actions as Record<string, unknown> | undefined)?.readiness;
			if (typeof readiness !== "function") {
				checks[svc.fullName] = checks.broker === "ok" ? "ok" : checks.broker!;
				return;
			}
			try {
				const answer = await withTimeout(
					Promise.resolve(
						(readiness as (p: object, o: object) => Promise<unknown>)(
							{},
							{ timeout: READINESS_TIMEOUT_MS, retries: 0 }
						)
					),
					READINESS_TIMEOUT_MS
				);
				checks[svc.fullName] = "ok";
				const detail = eventsDetail(answer);
				if (detail !== undefined) events[svc.fullName] = detail;
			} catch (err) {
				checks[svc.fullName] = reason(err);
			}
		})
	);
	return { ready: Object.values(checks).every(v => v === "ok"), checks, events, checkedAt };
}

/** The `events` detail of a readiness answer (mixins/events.mixin.ts), if it has one. */
function eventsDetail(answer: unknown): unknown {
	return answer !== null && typeof answer === "object" && "events" in answer
		? (answer as { events: unknown }).events
		: undefined;
}

/**
 * The gateway's readiness (services/api/api.service.ts `GET /ready`): this broker's state, the
 * transporter (if any), and each of `services`' `readiness` action wherever it runs (2 s each, no
 * retries); a failed check is the error's `type` (`SERVICE_NOT_AVAILABLE` for a service with no
 * node, `REQUEST_TIMEOUT`, `SERVICE_UNAVAILABLE` for a database down). The calls are made from
 * the broker, not from a request's context: the gateway serves the result to every probe for
 * `READINESS_CACHE_MS` (`cachedFor`).
 */
export async function clusterReadiness(
	broker: ServiceBroker,
	services: readonly string[]
): Promise<NodeReadiness> {
	const checkedAt = new Date().toISOString();
	const checks: Record<string, string> = {};
	const events: Record<string, unknown> = {};
	const state = broker as unknown as {
		started: boolean;
		stopping?: boolean;
		transit?: { connected: boolean };
	};
	if (state.stopping) checks.broker = "stopping";
	else if (!state.started) checks.broker = "starting";
	if (state.transit) checks.transporter = state.transit.connected ? "ok" : "disconnected";
	await Promise.all(
		services.map(async s => {
			try {
				const answer = await broker.call(
					`${s}.readiness`,
					{},
					{ timeout: READINESS_TIMEOUT_MS, retries: 0 }
				);
				checks[s] = "ok";
				const detail = eventsDetail(answer);
				if (detail !== undefined) events[s] = detail;
			} catch (err) {
				checks[s] = String((err as { type?: string }).type ?? "UNAVAILABLE");
			}
		})
	);
	return { ready: Object.values(checks).every(v => v === "ok"), checks, events, checkedAt };
}

/**
 * The local services (not Moleculer's internal `$` ones, not `except`, a full name) whose
 * `started` has not finished: Moleculer registers a local service only once it has started.
 */
export function localServicesStarting(broker: ServiceBroker, except?: string): string[] {
	const registry = (
		broker as unknown as {
			registry: { services: { has(fullName: string, nodeID: string): boolean } };
		}
	).registry;
	return (broker.services as Service[])
		.filter(s => !s.name.startsWith("$") && s.fullName !== except)
		.filter(s => !registry.services.has(s.fullName, broker.nodeID))
		.map(s => s.fullName);
}

/**
 * Resolves once every local service but `except` has started: checked now and on each
 * `$services.changed` (Moleculer emits it as it registers a service), so it costs no polling.
 * A service that fails to start never registers: the wait then ends only when `signal` aborts
 * (the waiting service's `stopped`), rejecting with its reason.
 * @param except - the waiting service's full name
 */
export function waitForLocalServices(
	broker: ServiceBroker,
	except: string,
	signal: AbortSignal
): Promise<void> {
	const bus = (broker as unknown as { localBus: NodeJS.EventEmitter }).localBus;
	return new Promise<void>((resolve, reject) => {
		const done = (err?: unknown): void => {
			bus.off("$services.changed", check);
			signal.removeEventListener("abort", abort);
			if (err) reject(err);
			else resolve();
		};
		const check = (): void => {
			if (localServicesStarting(broker, except).length === 0) done();
		};
		const abort = (): void => done(signal.reason);
		if (signal.aborted) return abort();
		bus.on("$services.changed", check);
		signal.addEventListener("abort", abort);
		check();
	});
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
	res.statusCode = status;
	res.setHeader("Content-Type", "application/json; charset=utf-8");
	res.setHeader("Cache-Control", "no-store");
	res.end(JSON.stringify(body));
}

/**
 * The broker middleware serving `/health` and `/ready` on `port` (see the file's comment). A port
 * that cannot be bound is logged as an error; the node runs on without the endpoint (its probes
 * then fail, which is how an orchestrator notices).
 */
export function NodeHealthMiddleware(port: number): Middleware {
	// One server per broker (a process may hold several brokers sharing this config).
	const servers = new WeakMap<ServiceBroker, http.Server>();
	return {
		name: "NodeHealth",
		async starting(broker: ServiceBroker): Promise<void> {
			const logger = broker.getLogger("node-health");
			const readiness = cachedFor(READINESS_CACHE_MS, () => nodeReadiness(broker));
			const server = http.createServer((req, res) => {
				const path = (req.url ?? "").split("?")[0];
				if (req.method !== "GET" && req.method !== "HEAD")
					return send(res, 405, { status: "method not allowed" });
				if (path === "/health")
					return send(res, 200, {
						status: "ok",
						nodeID: broker.nodeID,
						uptime: Math.round(process.uptime())
					});
				if (path === "/ready") {
					readiness().then(
						r =>
							send(res, r.ready ? 200 : 503, {
								status: r.ready ? "ready" : "unavailable",
								nodeID: broker.nodeID,
								checks: r.checks
							}),
						err => send(res, 503, { status: "unavailable", error: String(err) })
					);
					return;
				}
				send(res, 404, { status: "not found", paths: NODE_HEALTH_PATHS });
			});
			server.keepAliveTimeout = 5_000;
			await new Promise<void>(resolve => {
				server.once("error", (err: Error) => {
					logger.error(`Node health endpoint: cannot listen on port ${port}`, err);
					resolve();
				});
				server.listen(port, "0.0.0.0", () => {
					servers.set(broker, server);
					logger.info(`Node health on http://0.0.0.0:${port}/health and /ready`);
					resolve();
				});
			});
		},
		async stopped(broker: ServiceBroker): Promise<void> {
			const server = servers.get(broker);
			if (!server) return;
			servers.delete(broker);
			server.closeAllConnections();
			await new Promise<void>(resolve => server.close(() => resolve()));
		}
	} as unknown as Middleware;
}
