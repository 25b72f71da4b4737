/**
 * `notifications`: records the e-mail the shop sends when an order is confirmed, cancelled or
 * refunded, and with `SMTP_URL` sends it over SMTP (nodemailer; email-sender.ts, mailer.ts,
 * docs/email.md): after the record is committed, at most once, retried with backoff while the
 * server refuses it, dead-lettered after `SMTP_MAX_ATTEMPTS` sends or when its outcome is unknown.
 * Without `SMTP_URL`, the record alone. One record per order and kind, enforced by a unique
 * index, so a repeated event has no second effect (and no second e-mail). Amounts
 * are written in the currency's own minor unit (`formatMoney`: 2 decimals for USD, none for JPY,
 * 3 for KWD), from integer minor units.
 *
 * Consumes, durably (InboxMixin, mixins/events.mixin.ts: a JetStream durable consumer shared by
 * the service's nodes, acknowledged after the transaction commits, an inbox against redelivery,
 * dead letters after `EVENT_MAX_DELIVER` failed deliveries): `order.confirmed`, `order.cancelled`,
 * `order.refunded`.
 * Admin actions from the mixin: `listDeadLetters`, `replayDeadLetter` (an e-mail's dead letter,
 * consumer `notifications.email`: queues the e-mail again), `inboxStatus`.
 * Events emitted: `notification.created` with the notification.
 */
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import { pageParams, toPage, type Page } from "../../platform/paging";
import { notificationsMigrations } from "./migrations";
import { replayDeadLetter } from "../../platform/events/dead-letters";
import { DbMixin, type DbMixinMethods } from "../../mixins/db.mixin";
import { InboxMixin, inboxMigrations, type DomainEvent } from "../../mixins/events.mixin";
import type { Order } from "../orders/orders.model";
import type { Notification, NotificationCreated, NotificationKind } from "./notifications.model";
import { NotificationsRepo } from "./notifications.repo";
import { renderEmail } from "./order-email";
import type { Transaction } from "../../platform/db/fast-query";
import { config } from "../../platform/config";
import { runStoppedFirst } from "../../platform/lifecycle";
import { SmtpMailer } from "./mailer";
import { EMAIL_CONSUMER, EmailSender } from "./email-sender";
import type { Service, ServiceSchema } from "moleculer";

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
		/** The e-mail sender; null without `SMTP_URL` (the record alone). */
		$email: EmailSender | null;
	};

/** Stops the e-mail sender before DbMixin closes the database. */
async function stopEmail(this: NotificationsThis): Promise<void> {
	await this.$email?.stop();
}

const NotificationsService: ShopServiceSchema<NotificationsThis> = {
	name: "notifications",
	mixins: [
		DbMixin({
			service: "notifications",
			migrations: [...notificationsMigrations, ...inboxMigrations]
		}),
		InboxMixin()
	],

	merged(schema: ServiceSchema): void {
		runStoppedFirst(schema, stopEmail);
	},

	created(this: NotificationsThis): void {
		this.repo = new NotificationsRepo(this.db);
		const c = config();
		this.$email = c.smtpUrl
			? new EmailSender(this, this.repo, new SmtpMailer(c.smtpUrl, c.smtpFrom, this.logger), {
					maxAttempts: c.smtpMaxAttempts,
					retryDelayMs: c.smtpRetryDelayMs
				})
			: null;
	},

	started(this: NotificationsThis): void {
		this.$email?.start();
	},

	stopped: stopEmail,

	hooks: {
		before: {
			/**
			 * An e-mail's dead letter (consumer `notifications.email`): the replay queues the
			 * e-mail again (PENDING, attempts from 0) and marks the letter replayed; the mixin's
			 * handler then answers it as replayed. Other letters, and callers who are not admins
			 * (the mixin's handler refuses them), pass through untouched.
			 */
			async replayDeadLetter(
				this: NotificationsThis,
				ctx: ShopContext<{ id: string }>
			): Promise<void> {
				if (ctx.meta.user && ctx.meta.user.role !== "admin") return;
				if ((await this.repo.deadLetterConsumer(ctx.params.id)) !== EMAIL_CONSUMER) return;
				await replayDeadLetter(this.db, ctx.params.id, async (_consumer, event) => {
					if (!(await this.repo.requeueEmail(event.aggregateId)))
						throw new Error(`No notification ${event.aggregateId}`);
				});
				this.$email?.kick();
			}
		}
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
					body,
					sendEmail: this.$email !== null
				},
				t,
				// The delivery's last statement: the inbox's transaction commits with it.
				{ commit: true }
			);
			if (!created) return;
			// A live, best-effort event and the e-mail's send, once the record is committed.
			const emit = (): void => {
				void this.broker
					.emit("notification.created", {
						id: created,
						orderId: order.id,
						kind
					} satisfies NotificationCreated)
					.catch(() => undefined);
				this.$email?.kick();
			};
			if (t) t.afterCommit(emit);
			else emit();
		}
	}
};

export default NotificationsService;
