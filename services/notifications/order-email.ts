/**
 * The e-mail the shop would send for an order event: its subject and body, amounts written in
 * the currency's own minor unit (`formatMoney`, platform/money.ts: 2 decimals for USD, none for
 * JPY, 3 for KWD), from integer minor units.
 */
import { formatMoney as money } from "../../platform/money";
import type { Order } from "../orders/orders.model";
import type { NotificationKind } from "./notifications.model";

/**
 * The e-mail's subject and body for an order event.
 * @param refund - `ORDER_REFUNDED`: what was refunded (integer minor units); default the total
 */
export function renderEmail(
	kind: NotificationKind,
	order: Order,
	refund?: { amount: number; currency: string; restock: boolean }
): { subject: string; body: string } {
	const lines = order.items
		.map(i => `  ${i.quantity} x ${i.name} (${i.sku}) ${money(i.lineTotal, order.currency)}`)
		.join("\n");
	if (kind === "ORDER_CONFIRMED")
		return {
			subject: `Order ${order.id.slice(0, 8)} confirmed`,
			body: `Thank you for your order.\n\n${lines}\n\nTotal: ${money(order.total, order.currency)}\n`
		};
	if (kind === "ORDER_REFUNDED")
		return {
			subject: `Order ${order.id.slice(0, 8)} refunded`,
			body: `Your order was refunded: ${money(refund?.amount ?? order.total, refund?.currency ?? order.currency)} goes back to the card it was paid with.\n\n${lines}\n`
		};
	return {
		subject: `Order ${order.id.slice(0, 8)} cancelled`,
		body: `Your order was cancelled (${order.cancellationReason ?? "CANCELLED"}). Nothing was charged, or the charge was refunded.\n\n${lines}\n`
	};
}
