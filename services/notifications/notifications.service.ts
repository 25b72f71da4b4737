/**
 * `notifications`: records the e-mail the shop would send when an order is confirmed, cancelled
 * or refunded (no mail is sent: the record is the outbox a mailer would read). One record per
 * order and kind, enforced by a unique index, so a repeated event has no second effect. Amounts
 * are written in the currency's own minor unit (`formatMoney`: 2 decimals for USD, none for JPY,
 * 3 for KWD), from integer minor units.
 *
 * Consumes, durably (InboxMixin, mixins/events.mixin.ts: a JetStream durable consumer shared by
 * the service's nodes, acknowledged after the transaction commits, an inbox against redelivery,
 * dead letters after `EVENT_MAX_DELIVER` failed deliveries): `order.confirmed`, `order.cancelled`,
 * `order.refunded`.
 * Admin actions from the mixin: `listDeadLetters`, `replayDeadLetter`, `inboxStatus`.
 * Events emitted: `notification.created` with the notification.
 */
import crypto from "node:crypto";
import type { Service } from "moleculer";
import {
	DataTypes,
	QueryTypes,
	type Model,
	type ModelStatic,
	type Sequelize,
	type Transaction
} from "sequelize";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import { notificationsMigrations } from "./migrations";
import { DbMixin, type DbMixinMethods } from "../../mixins/db.mixin";
import { InboxMixin, inboxMigrations, type DomainEvent } from "../../mixins/events.mixin";
import type { Order } from "../orders/orders.service";
import { fastQuery } from "../../platform/db/fast-query";
import { formatMoney } from "../../platform/money";

export type NotificationKind = "ORDER_CONFIRMED" | "ORDER_CANCELLED" | "ORDER_REFUNDED";

/** A notification as the API shows it. */
export interface Notification {
	id: string;
	orderId: string;
	kind: NotificationKind;
	recipient: string;
	subject: string;
	body: string;
	createdAt: string;
}

interface NotificationRow {
	id: string;
	user_id: string;
	order_id: string;
	kind: NotificationKind;
	recipient: string;
	subject: string;
	body: string;
	created_at: Date;
}

/** The payload of `order.confirmed` / `order.cancelled` / `order.refunded` (with `refund`). */
interface OrderEvent {
	order: Order & { customerEmail: string };
	/** `order.refunded` only: what was refunded, integer minor units. */
	refund?: { amount: number; currency: string; restock: boolean };
}

function defineModels(sequelize: Sequelize): { Notification: ModelStatic<Model> } {
	const Notification = sequelize.define(
		"Notification",
		{
			id: { type: DataTypes.UUID, primaryKey: true },
			userId: { type: DataTypes.UUID, allowNull: false },
			orderId: { type: DataTypes.UUID, allowNull: false },
			kind: { type: DataTypes.TEXT, allowNull: false }
		},
		{ tableName: "notifications" }
	);
	return { Notification };
}
type Models = ReturnType<typeof defineModels>;
type NotificationsThis = Service &
	DbMixinMethods<Models> & {
		record(kind: NotificationKind, e: OrderEvent, t?: Transaction): Promise<void>;
	};

const money = formatMoney;

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

const NotificationsService: ShopServiceSchema<NotificationsThis> = {
	name: "notifications",
	mixins: [
		DbMixin({
			service: "notifications",
			migrations: [...notificationsMigrations, ...inboxMigrations],
			models: defineModels,
			mainModel: "Notification"
		}),
		InboxMixin()
	],

	/**
	 * Durable consumers (InboxMixin: JetStream, acknowledged after this transaction commits; the
	 * inbox drops redeliveries): one e-mail record per confirmed, cancelled or refunded order.
	 */
	durableEvents: {
		async "order.confirmed"(
			this: NotificationsThis,
			event: DomainEvent<OrderEvent>,
			t: Transaction
		): Promise<void> {
			await this.record("ORDER_CONFIRMED", event.data, t);
		},
		async "order.cancelled"(
			this: NotificationsThis,
			event: DomainEvent<OrderEvent>,
			t: Transaction
		): Promise<void> {
			await this.record("ORDER_CANCELLED", event.data, t);
		},
		async "order.refunded"(
			this: NotificationsThis,
			event: DomainEvent<OrderEvent>,
			t: Transaction
		): Promise<void> {
			await this.record("ORDER_REFUNDED", event.data, t);
		}
	},

	actions: {
		/**
		 * The caller's notifications, newest first.
		 * @returns `{ rows: [{ id, orderId, kind, recipient, subject, body, createdAt }], total, page, pageSize, totalPages }`
		 * @throws AUTH_TOKEN_MISSING (401)
		 */
		list: {
			params: {
				$$strict: true,
				page: {
					type: "number",
					integer: true,
					min: 1,
					max: 100_000,
					convert: true,
					default: 1
				},
				pageSize: {
					type: "number",
					integer: true,
					min: 1,
					max: 100,
					convert: true,
					default: 20
				},
				orderId: { type: "uuid", optional: true }
			},
			async handler(
				this: NotificationsThis,
				ctx: ShopContext<{ page: number; pageSize: number; orderId?: string }>
			): Promise<{
				rows: Notification[];
				total: number;
				page: number;
				pageSize: number;
				totalPages: number;
			}> {
				const user = ctx.meta.user;
				if (!user) throw shopError("AUTH_TOKEN_MISSING");
				const { page, pageSize, orderId } = ctx.params;
				const where = "user_id = $1 AND ($2::uuid IS NULL OR order_id = $2)";
				// The page and the total from ONE statement (one snapshot): two queries could
				// count a notification written between them that the page did not show.
				const found = (await fastQuery(
					this.sequelize,
					`SELECT t.total, n.* FROM (SELECT count(*)::int AS total FROM notifications WHERE ${where}) t
					 LEFT JOIN LATERAL (
						SELECT * FROM notifications WHERE ${where} ORDER BY created_at DESC, id LIMIT $3 OFFSET $4
					 ) n ON true`,
					{
						bind: [user.id, orderId ?? null, pageSize, (page - 1) * pageSize],
						type: QueryTypes.SELECT
					}
				)) as (NotificationRow & { total: number })[];
				const total = found[0]?.total ?? 0;
				// No notification on the page: one row of nulls beside the total.
				const rows = found.filter(r => r.id !== null);
				return {
					rows: rows.map(r => ({
						id: r.id,
						orderId: r.order_id,
						kind: r.kind,
						recipient: r.recipient,
						subject: r.subject,
						body: r.body,
						createdAt: new Date(r.created_at).toISOString()
					})),
					total,
					page,
					pageSize,
					totalPages: Math.ceil(total / pageSize)
				};
			}
		}
	},

	methods: {
		/** Inserts the notification once per (order, kind); a repeat is ignored. */
		async record(
			this: NotificationsThis,
			kind: NotificationKind,
			e: OrderEvent,
			t?: Transaction
		): Promise<void> {
			const order = e.order;
			if (!order || typeof order.id !== "string" || typeof order.userId !== "string")
				throw new Error(`Malformed order event: ${JSON.stringify(e).slice(0, 200)}`);
			const { subject, body } = renderEmail(kind, order, e.refund);
			const rows = (await fastQuery(
				this.sequelize,
				`INSERT INTO notifications (id, user_id, order_id, kind, recipient, subject, body)
				 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id, kind) DO NOTHING RETURNING id`,
				{
					bind: [
						crypto.randomUUID(),
						order.userId,
						order.id,
						kind,
						order.customerEmail,
						subject,
						body
					],
					type: QueryTypes.SELECT,
					transaction: t
				}
			)) as { id: string }[];
			const created = rows[0];
			if (!created) return;
			// A live, best-effort event, once the record is committed.
			const emit = (): void =>
				void this.broker
					.emit("notification.created", { id: created.id, orderId: order.id, kind })
					.catch(() => undefined);
			if (t) t.afterCommit(emit);
			else emit();
		}
	}
};

export default NotificationsService;
