/**
 * Operator commands for the Moleculer REPL (`npm run repl`, or `moleculer-runner --repl` on any
 * node): `saga list [--status S]`, `saga show <id>`, `saga redrive <id>`, `stock <productId>`,
 * `orders recent [--limit N]`. Each calls the services' actions, so it works from any node of a
 * cluster.
 */
import type { ServiceBroker } from "moleculer";

interface ReplCommand {
	command: string;
	description: string;
	options?: { option: string; description: string }[];
	allowUnknownOptions?: boolean;
	action: (broker: ServiceBroker, args: Record<string, any>) => Promise<void>;
}

const out = (v: unknown): void => console.log(JSON.stringify(v, null, 2));

async function report(fn: () => Promise<void>): Promise<void> {
	try {
		await fn();
	} catch (err) {
		const e = err as { type?: string; message?: string };
		console.log(`>> ${e.type ?? "ERROR"}: ${e.message ?? String(err)}`);
	}
}

export const replCommands: ReplCommand[] = [
	{
		command: "saga <verb> [id]",
		description: "Sagas: saga list [--status FAILED] | saga show <id> | saga redrive <id>",
		options: [
			{ option: "-s, --status <status>", description: "list: only sagas with this status" }
		],
		async action(broker, args) {
			await report(async () => {
				const verb = String(args.verb);
				if (verb === "list") {
					const status = args.options?.status as string | undefined;
					const page: { rows: Record<string, any>[]; total: number } = await broker.call(
						"orders.listSagas",
						status ? { status: status.toUpperCase(), pageSize: 50 } : { pageSize: 50 }
					);
					console.log(
						`${page.total} saga(s)${status ? ` with status ${status.toUpperCase()}` : ""}, newest first:`
					);
					for (const s of page.rows)
						console.log(
							`${s.id}  ${String(s.status).padEnd(12)} step ${s.currentStepName ?? "-"}  order ${s.orderId ?? "-"}  attempts ${s.attempts}${s.failureReason ? `  reason ${s.failureReason}` : ""}`
						);
				} else if (verb === "show") {
					if (!args.id) throw new Error("usage: saga show <id>");
					out(await broker.call("orders.getSaga", { id: args.id }));
				} else if (verb === "redrive") {
					if (!args.id) throw new Error("usage: saga redrive <id>");
					out(await broker.call("orders.redriveSaga", { id: args.id }));
				} else throw new Error(`unknown verb "${verb}" (list, show, redrive)`);
			});
		}
	},
	{
		command: "stock <productId>",
		description: "Stock of a product: onHand, reserved, available",
		async action(broker, args) {
			await report(async () =>
				out(await broker.call("inventory.get", { productId: args.productId }))
			);
		}
	},
	{
		command: "orders <verb>",
		description: "Orders: orders recent [--limit N]",
		options: [{ option: "-l, --limit <n>", description: "how many (default 10)" }],
		async action(broker, args) {
			await report(async () => {
				if (args.verb !== "recent") throw new Error(`unknown verb "${args.verb}" (recent)`);
				const limit = Number(args.options?.limit ?? 10);
				const rows: Record<string, any>[] = await broker.call("orders.recent", { limit });
				for (const o of rows)
					console.log(
						`${o.id}  ${String(o.status).padEnd(10)} ${(o.total / 100).toFixed(2)} ${o.currency}  ${o.items.length} item(s)  ${o.createdAt}${o.cancellationReason ? `  ${o.cancellationReason}` : ""}`
					);
			});
		}
	}
];
