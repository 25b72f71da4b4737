/**
 * The gateway's own admin actions (routes in services/api/routes.ts): the cluster's nodes
 * (`api.nodes`, moved out of mixins/web.mixin.ts) and the outbox lag of every emitting service
 * (`api.outbox`). `api.orderRate` is with the order streams (services/api/order-streams.ts), which
 * see the same order events.
 */
import type { ActionSchema, Context } from "moleculer";
import { OUTBOX_SERVICES } from "./cluster-services";

/** The gateway's admin actions, merged into its `actions`. */
export const ADMIN_ACTIONS: Record<"nodes" | "outbox", ActionSchema> = {
	/**
	 * The nodes of the cluster with their services and health (admin, `GET /api/admin/nodes`).
	 * @returns `{ nodes: [{ id, available, local, hostname, client, cpu, lastHeartbeatTime,
	 *   services: string[], health: { cpuLoad1, cpuUtilization, memFree, memTotal,
	 *   processUptime, processRss, heapUsed } | { error } | null }] }`
	 */
	nodes: {
		visibility: "published",
		params: {},
		async handler(ctx: Context): Promise<{ nodes: unknown[] }> {
			const nodes = (await ctx.call("$node.list", {
				onlyAvailable: false,
				withServices: false
			})) as {
				id: string;
				available: boolean;
				local: boolean;
				hostname: string | null;
				client: { type?: string; version?: string; langVersion?: string };
				cpu: number | null;
				lastHeartbeatTime: number;
			}[];
			const services = (await ctx.call("$node.services", {
				onlyLocal: false,
				skipInternal: true,
				withActions: false,
				withEvents: false,
				onlyAvailable: false,
				grouping: true
			})) as { fullName: string; nodes: string[] }[];
			const out = await Promise.all(
				nodes.map(async n => {
					let health: Record<string, unknown> | null = null;
					if (n.available) {
						try {
							const h = (await ctx.call(
								"$node.health",
								{},
								{ nodeID: n.id, timeout: 3_000, retries: 0 }
							)) as {
								cpu: { load1: number; utilization: number | null };
								mem: { free: number; total: number };
								process: {
									uptime: number;
									memory: { rss: number; heapUsed: number };
								};
							};
							health = {
								cpuLoad1: h.cpu.load1,
								cpuUtilization: h.cpu.utilization,
								memFree: h.mem.free,
								memTotal: h.mem.total,
								processUptime: Math.round(h.process.uptime),
								processRss: h.process.memory.rss,
								heapUsed: h.process.memory.heapUsed
							};
						} catch (err) {
							health = {
								error: (err as { type?: string }).type ?? "UNAVAILABLE"
							};
						}
					}
					return {
						id: n.id,
						available: n.available,
						local: n.local,
						hostname: n.hostname,
						client: {
							type: n.client?.type,
							version: n.client?.version,
							langVersion: n.client?.langVersion
						},
						cpu: n.cpu,
						lastHeartbeatTime: n.lastHeartbeatTime,
						services: services
							.filter(s => s.nodes.includes(n.id))
							.map(s => s.fullName)
							.sort(),
						health
					};
				})
			);
			out.sort((a, b) => a.id.localeCompare(b.id));
			return { nodes: out };
		}
	},

	/**
	 * Outbox lag of every emitting service (admin, `GET /api/admin/outbox`).
	 * @returns `{ [service]: { pending, oldestPendingAgeMs, published, serverDuplicates, mode }
	 *   | { error: type } }` (pending rows, age of the oldest in ms)
	 */
	outbox: {
		visibility: "published",
		params: {},
		async handler(ctx: Context): Promise<Record<string, unknown>> {
			const out: Record<string, unknown> = {};
			await Promise.all(
				OUTBOX_SERVICES.map(async name => {
					out[name] = await ctx
						.call(`${name}.outboxStatus`, {}, { timeout: 5_000 })
						.catch((err: { type?: string }) => ({
							error: err.type ?? "SERVICE_UNAVAILABLE"
						}));
				})
			);
			return out;
		}
	}
};
