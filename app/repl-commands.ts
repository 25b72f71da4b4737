/**
 * Operator commands for the Moleculer REPL (`npm run repl`, or `moleculer-runner --repl` on any
 * node): `saga list [--status S]`, `saga show <id>`, `saga redrive <id> [--note TEXT]`,
 * `saga refund-cancel <id> [--note TEXT]`, `stock <productId>`, `orders recent [--limit N]`,
 * `orders stuck [--limit N]`, `orders show <id>`, `orders refund <id> [--restock] [--note TEXT]`.
 * Each calls the services' actions, so it works from any node of a cluster. The operator actions
 * (redrive, refund and cancel, refund) are audited with `repl:<OS user>@<host>` as who
 * (`replOperator()`).
 */
import os from "node:os";
import type { ServiceBroker } from "moleculer";
import { formatMoney } from "../platform/money";
import type { Order, StuckOrders } from "../services/orders/orders.model";

interface ReplCommand {
	command: string;
	description: string;
	options?: { option: string; description: string }[];
	allowUnknownOptions?: boolean;
	action: (broker: ServiceBroker, args: ReplArgs) => Promise<void>;
}

/** What moleculer-repl (vorpal) hands a command: its positional arguments and `--options`. */
interface ReplArgs {
	verb?: string;
	id?: string;
	productId?: string;
	options?: Record<string, unknown>;
	[arg: string]: unknown;
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

/** Who runs this REPL, for the audit of operator actions: `repl:<OS user>@<host>`. */
export function replOperator(): string {
	let user = process.env.USER ?? "unknown";
	try {
		user = os.userInfo().username;
	} catch {
		// no passwd entry for this uid (a container): keep $USER
	}
	return `repl:${user}@${os.hostname()}`;
}

export const replCommands: ReplCommand[] = [
	{
		command: "saga <verb> [id]",
		description:
			"Sagas: saga list [--status FAILED] | saga show <id> | saga redrive <id> | saga refund-cancel <id> (a saga parked after its pivot: refund, release, order CANCELLED)",
		options: [
			{ option: "-s, --status <status>", description: "list: only sagas with this status" },
			{
				option: "-n, --note <text>",
				description: "redrive, refund-cancel: a note kept with the audit record"
			}
		],
		async action(broker, args) {
			await report(async () => {
				const verb = String(args.verb);
				if (verb === "list") {
					const status = args.options?.status as string | undefined;
					const page: { rows: Record<string, unknown>[]; total: number } =
						await broker.call(
							"orders.listSagas",
							status
								? { status: status.toUpperCase(), pageSize: 50 }
								: { pageSize: 50 }
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
				} else if (verb === "redrive" || verb === "refund-cancel") {
					if (!args.id) throw new Error(`usage: saga ${verb} <id> [--note TEXT]`);
					const note = args.options?.note as string | undefined;
					out(
						await broker.call(
							verb === "redrive"
								? "orders.redriveSaga"
								: "orders.refundAndCancelSaga",
							{ id: args.id, ...(note ? { note } : {}) },
							{ meta: { operator: replOperator() } }
						)
					);
				} else
					throw new Error(`unknown verb "${verb}" (list, show, redrive, refund-cancel)`);
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
		command: "orders <verb> [id]",
		description:
			"Orders: orders recent [--limit N] | orders stuck [--limit N] (not finished past ORDERS_STUCK_AFTER_MS, with the saga to redrive) | orders show <id> (payments, ledger, sagas) | orders refund <id> [--restock] [--note TEXT] (refund a CONFIRMED order)",
		options: [
			{ option: "-l, --limit <n>", description: "recent, stuck: how many (default 10 / 50)" },
			{ option: "-r, --restock", description: "refund: put the order's units back on hand" },
			{
				option: "-n, --note <text>",
				description: "refund: a note kept with the audit record"
			}
		],
		async action(broker, args) {
			await report(async () => {
				const verb = String(args.verb);
				if (verb === "recent") {
					const limit = Number(args.options?.limit ?? 10);
					const rows: Order[] = await broker.call("orders.recent", {
						limit
					});
					for (const o of rows)
						console.log(
							`${o.id}  ${String(o.status).padEnd(10)} ${formatMoney(o.total, o.currency)}  ${o.items.length} item(s)  ${o.createdAt}${o.cancellationReason ? `  ${o.cancellationReason}` : ""}`
						);
				} else if (verb === "stuck") {
					const limit = Number(args.options?.limit ?? 50);
					const s: StuckOrders = await broker.call("orders.stuck", { limit });
					console.log(
						`${s.total} order(s) not finished after ${s.thresholdMs} ms: ${Object.entries(
							s.counts
						)
							.map(([status, n]) => `${status} ${n}`)
							.join(", ")}`
					);
					for (const o of s.rows)
						console.log(
							`${o.id}  ${String(o.status).padEnd(10)} ${Math.round(o.ageMs / 1000)} s  ${formatMoney(o.total, o.currency)}  saga ${o.sagaId ?? "-"} ${o.sagaName ?? ""} ${o.sagaStatus ?? ""}`
						);
				} else if (verb === "show") {
					if (!args.id) throw new Error("usage: orders show <id>");
					out(await broker.call("orders.adminGet", { id: args.id }));
				} else if (verb === "refund") {
					if (!args.id)
						throw new Error("usage: orders refund <id> [--restock] [--note TEXT]");
					const note = args.options?.note as string | undefined;
					out(
						await broker.call(
							"orders.refund",
							{
								id: args.id,
								restock: args.options?.restock === true,
								...(note ? { note } : {})
							},
							{ meta: { operator: replOperator() } }
						)
					);
				} else throw new Error(`unknown verb "${verb}" (recent, stuck, show, refund)`);
			});
		}
	}
];
