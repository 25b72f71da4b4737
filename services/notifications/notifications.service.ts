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
import type { Service } from "moleculer";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import { pageParams, toPage, type Page } from "../../platform/paging";
import { notificationsMigrations } from "./migrations";
import { DbMixin, type DbMixinMethods } from "../../mixins/db.mixin";
import { InboxMixin, inboxMigrations, type DomainEvent } from "../../mixins/events.mixin";
import type { Order } from "../orders/orders.model";
import type { Notification, NotificationCreated, NotificationKind } from "./notifications.model";
import { NotificationsRepo } from "./notifications.repo";
import { renderEmail } from "./order-email";
import type { Transaction } from "../../platform/db/fast-query";

/** The payload of `order.confirmed` / `order.cancelled` / `order.refunded` (with `refund`). */
interface OrderEvent {
	order: Order & { customerEmail: string };
	/** `order.refunded` only: what was refunded, integer minor units. */
	refund?: { amount: number; currency: string; restock: boolean };
}

/** The service's own methods. */
interface NotificationsMethods {
	record(kind: NotificationKind, e: OrderEvent, t?: Transaction): Promise<void>;
}
type NotificationsThis = Service &
	DbMixinMethods &
	NotificationsMethods & {
		/** The notifications database's statements. */
		repo: NotificationsRepo;
	};

const NotificationsService: ShopServiceSchema<NotificationsThis> = {
	name: "notifications",
	mixins: [
		DbMixin({
			service: "notifications",
			migrations: [...notificationsMigrations, ...inboxMigrations]
		}),
		InboxMixin()
	],

	created(this: NotificationsThis): void {
		this.repo = new NotificationsRepo(this.db);
	},

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
				...pageParams,
				orderId: { type: "uuid", optional: true }
			},
			async handler(
				this: NotificationsThis,
				ctx: ShopContext<{ page: number; pageSize: number; orderId?: string }>
			): Promise<Page<Notification>> {
				const user = ctx.meta.user;
				if (!user) throw shopError("AUTH_TOKEN_MISSING");
				const { orderId, ...q } = ctx.params;
				const { rows, total } = await this.repo.listForUser(user.id, orderId ?? null, q);
				return toPage(rows, total, q);
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
			const created = await this.repo.insertOnce(
				{
					userId: order.userId,
					orderId: order.id,
					kind,
					recipient: order.customerEmail,
					subject,
					body
				},
				t
			);
			if (!created) return;
			// A live, best-effort event, once the record is committed.
			const emit = (): void =>
				void this.broker
					.emit("notification.created", {
						id: created,
						orderId: order.id,
						kind
					} satisfies NotificationCreated)
					.catch(() => undefined);
			if (t) t.afterCommit(emit);
			else emit();
		}
	}
};

export default NotificationsService;
