import crypto from "node:crypto";
import type { ServiceBroker } from "moleculer";
import type { AuthUser } from "../../platform/context";
import { deliverLocally, type DomainEvent } from "../../mixins/events.mixin";
import type { Notification } from "../../services/notifications/notifications.model";
import type { Order } from "../../services/orders/orders.model";
import { admin, customer, startTestBroker, waitFor, type TestBroker } from "../support/broker";
import { fastQuery, QueryTypes } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";

interface NotificationPage {
	rows: Notification[];
	total: number;
	page: number;
	pageSize: number;
	totalPages: number;
}

/** An order view as `orders` puts it in `order.confirmed` / `order.cancelled`, plus customerEmail. */
function orderEvent(
	user: AuthUser,
	over: Partial<Order> = {}
): { order: Order & { customerEmail: string } } {
	const now = new Date().toISOString();
	return {
		order: {
			id: crypto.randomUUID(),
			userId: user.id,
			status: "CONFIRMED",
			items: [
				{
					productId: crypto.randomUUID(),
					sku: "KB-MECH-87",
					name: "Tenkeyless Mechanical Keyboard",
					quantity: 2,
					unitPrice: 8999,
					lineTotal: 17998
				},
				{
					productId: crypto.randomUUID(),
					sku: "CB-USBC-2M",
					name: "USB-C Cable 2 m",
					quantity: 1,
					unitPrice: 1499,
					lineTotal: 1499
				}
			],
			total: 19497,
			currency: "USD",
			paymentMethod: "tok_visa",
			cancellationReason: null,
			cancelRequested: false,
			createdAt: now,
			updatedAt: now,
			...over,
			customerEmail: user.email
		}
	};
}

/** A durable event as the orders outbox relay would publish it. */
function domainEvent(
	name: "order.confirmed" | "order.cancelled",
	data: { order: Order & { customerEmail: string } }
): DomainEvent {
	return {
		id: crypto.randomUUID(),
		name,
		source: "orders",
		aggregateId: data.order.id,
		occurredAt: new Date().toISOString(),
		requestId: null,
		data
	};
}

describe("notifications", () => {
	let t: TestBroker;
	let broker: ServiceBroker;
	/** `notification.created` events seen, by order id. */
	const created: { id: string; orderId: string; kind: string }[] = [];

	beforeAll(async () => {
		t = await startTestBroker(["notifications"], {
			env: { EVENT_MAX_DELIVER: "3" },
			extra: [
				{
					name: "notifications-listener",
					events: {
						"notification.created"(ctx: {
							params: { id: string; orderId: string; kind: string };
						}) {
							created.push(ctx.params);
						}
					}
				}
			]
		});
		broker = t.broker;
	});
	afterAll(async () => t?.stop());

	const deliver = (e: DomainEvent): Promise<void> => deliverLocally(broker, e);

	const list = (
		user: AuthUser,
		params: Record<string, unknown> = {}
	): Promise<NotificationPage> => broker.call("notifications.list", params, { meta: { user } });
	const forOrder = async (user: AuthUser, orderId: string): Promise<Notification[]> =>
		(await list(user, { orderId, pageSize: 100 })).rows;

	it("order.confirmed records one confirmation e-mail, even when the event comes twice", async () => {
		const user = customer();
		const e = orderEvent(user);
		// The same event delivered three times (redelivery), twice at once.
		const ev = domainEvent("order.confirmed", e);
		await Promise.all([deliver(ev), deliver(ev)]);
		await deliver(ev);
		const rows = await waitFor(
			() => forOrder(user, e.order.id),
			r => r.length > 0
		);
		expect(rows).toHaveLength(1);
		expect(rows[0]).toEqual({
			id: expect.stringMatching(/^[0-9a-f-]{36}$/),
			orderId: e.order.id,
			kind: "ORDER_CONFIRMED",
			recipient: user.email,
			subject: `Order ${e.order.id.slice(0, 8)} confirmed`,
			body: expect.stringContaining("Total: 194.97 USD"),
			createdAt: expect.any(String)
		});
		expect(rows[0]!.body).toContain(
			"2 x Tenkeyless Mechanical Keyboard (KB-MECH-87) 179.98 USD"
		);
		expect(created.filter(c => c.orderId === e.order.id)).toEqual([
			{ id: rows[0]!.id, orderId: e.order.id, kind: "ORDER_CONFIRMED" }
		]);
	});

	it("without SMTP_URL records the e-mail alone: nothing queued to send (test/integration/smtp.test.ts sends)", async () => {
		const user = customer();
		const e = orderEvent(user);
		await deliver(domainEvent("order.confirmed", e));
		const { db } = broker.getLocalService("notifications") as unknown as { db: ShopDatabase };
		const rows = (await fastQuery(
			db,
			"SELECT email_status, email_attempts, email_next_at FROM notifications WHERE order_id = $1",
			{ bind: [e.order.id], type: QueryTypes.SELECT }
		)) as { email_status: string | null; email_attempts: number; email_next_at: Date | null }[];
		expect(rows).toEqual([{ email_status: null, email_attempts: 0, email_next_at: null }]);
		expect(
			(broker.getLocalService("notifications") as unknown as { $email: unknown }).$email
		).toBeNull();
	});

	it("order.cancelled records one cancellation e-mail with the reason, even when the event comes twice", async () => {
		const user = customer();
		const e = orderEvent(user, { status: "CANCELLED", cancellationReason: "PAYMENT_DECLINED" });
		// Two distinct events about one order (say, a re-emission): still one e-mail.
		await deliver(domainEvent("order.cancelled", e));
		await deliver(domainEvent("order.cancelled", e));
		const rows = await waitFor(
			() => forOrder(user, e.order.id),
			r => r.length > 0
		);
		expect(rows).toHaveLength(1);
		expect(rows[0]).toMatchObject({
			orderId: e.order.id,
			kind: "ORDER_CANCELLED",
			subject: `Order ${e.order.id.slice(0, 8)} cancelled`
		});
		expect(rows[0]!.body).toContain("PAYMENT_DECLINED");
	});

	it("keeps one record per (order, kind): a confirmation and a cancellation of one order are two", async () => {
		const user = customer();
		const e = orderEvent(user);
		await Promise.all([
			deliver(domainEvent("order.confirmed", e)),
			deliver(domainEvent("order.cancelled", e)),
			deliver(domainEvent("order.confirmed", e)),
			deliver(domainEvent("order.cancelled", e))
		]);
		const rows = await waitFor(
			() => forOrder(user, e.order.id),
			r => r.length >= 2
		);
		expect(rows.map(r => r.kind).sort()).toEqual(["ORDER_CANCELLED", "ORDER_CONFIRMED"]);
	});

	it("list shows only the caller's own notifications, newest first, paged", async () => {
		const alice = customer();
		const bob = customer();
		const aliceOrders = [orderEvent(alice), orderEvent(alice), orderEvent(alice)];
		for (const e of aliceOrders) await deliver(domainEvent("order.confirmed", e));
		const bobOrder = orderEvent(bob);
		await deliver(domainEvent("order.confirmed", bobOrder));

		const mine = await waitFor(
			() => list(alice),
			p => p.total >= 3
		);
		expect(mine.total).toBe(3);
		expect(mine.rows.map(r => r.orderId)).toEqual(aliceOrders.map(e => e.order.id).reverse());
		expect(mine.rows.every(r => r.recipient === alice.email)).toBe(true);

		const theirs = await waitFor(
			() => list(bob),
			p => p.total >= 1
		);
		expect(theirs.rows.map(r => r.orderId)).toEqual([bobOrder.order.id]);
		// Another user's order id as a filter shows nothing, not their notification.
		await expect(list(alice, { orderId: bobOrder.order.id })).resolves.toMatchObject({
			rows: [],
			total: 0
		});
		// Not even an admin sees other users' notifications through list: it is the caller's own.
		await expect(list(admin, { orderId: bobOrder.order.id })).resolves.toMatchObject({
			total: 0
		});

		const page2 = await list(alice, { page: 2, pageSize: 2 });
		expect(page2).toMatchObject({ page: 2, pageSize: 2, total: 3, totalPages: 2 });
		expect(page2.rows.map(r => r.orderId)).toEqual([aliceOrders[0]!.order.id]);
		// Past the last page: no rows, the total still counted.
		await expect(list(alice, { page: 3, pageSize: 2 })).resolves.toMatchObject({
			rows: [],
			total: 3,
			totalPages: 2
		});
		await expect(list(admin, { orderId: bobOrder.order.id })).resolves.toMatchObject({
			rows: [],
			total: 0
		});
	});

	it("counts a redelivered event as a duplicate in its inbox, with no second effect", async () => {
		const before: { processed: number; duplicates: number } = await broker.call(
			"notifications.inboxStatus"
		);
		const user = customer();
		const ev = domainEvent("order.confirmed", orderEvent(user));
		await deliver(ev);
		await deliver(ev);
		await deliver(ev);
		const after: { processed: number; duplicates: number } = await broker.call(
			"notifications.inboxStatus"
		);
		expect(after.processed - before.processed).toBe(1);
		expect(after.duplicates - before.duplicates).toBe(2);
		expect(await forOrder(user, ev.aggregateId)).toHaveLength(1);
	});

	it("dead-letters an event its handler keeps failing on after EVENT_MAX_DELIVER deliveries; an admin replays it once fixed", async () => {
		const user = customer();
		const ev = domainEvent("order.confirmed", orderEvent(user));
		// A fault in the consumer's own database: inserts for this order fail until it is lifted.
		const { db } = broker.getLocalService("notifications") as unknown as { db: ShopDatabase };
		await fastQuery(
			db,
			`
			CREATE FUNCTION refuse_order() RETURNS trigger AS $$
			BEGIN
				IF NEW.order_id = '${ev.aggregateId}' THEN RAISE EXCEPTION 'refused by test'; END IF;
				RETURN NEW;
			END $$ LANGUAGE plpgsql;
			CREATE TRIGGER refuse_order BEFORE INSERT ON notifications
				FOR EACH ROW EXECUTE FUNCTION refuse_order();`
		);
		const before: { redeliveries: number; deadLettered: number } = await broker.call(
			"notifications.inboxStatus"
		);
		// Resolves: after 3 deliveries the consumer gives up on it (the relay is not blocked).
		await deliver(ev);
		const after: { redeliveries: number; deadLettered: number; deadLetters: number } =
			await broker.call("notifications.inboxStatus");
		expect(after.redeliveries - before.redeliveries).toBe(2);
		expect(after.deadLettered - before.deadLettered).toBe(1);
		expect(await forOrder(user, ev.aggregateId)).toEqual([]);

		// The events behind it still flow.
		const next = domainEvent("order.confirmed", orderEvent(user));
		await deliver(next);
		expect(await forOrder(user, next.aggregateId)).toHaveLength(1);

		const letters: {
			rows: { id: string; eventId: string; error: string; deliveries: number }[];
		} = await broker.call("notifications.listDeadLetters", {}, { meta: { user: admin } });
		const letter = letters.rows.find(r => r.eventId === ev.id)!;
		expect(letter).toMatchObject({
			deliveries: 3,
			error: expect.stringContaining("refused by test")
		});
		await expect(
			broker.call("notifications.listDeadLetters", {}, { meta: { user } })
		).rejects.toMatchObject({ type: "AUTH_FORBIDDEN" });

		// Replaying while the fault is still there fails, and keeps the letter.
		await expect(
			broker.call(
				"notifications.replayDeadLetter",
				{ id: letter.id },
				{ meta: { user: admin } }
			)
		).rejects.toMatchObject({ type: "EVENTS_REPLAY_FAILED", code: 409 });
		await fastQuery(
			db,
			"DROP TRIGGER refuse_order ON notifications; DROP FUNCTION refuse_order();"
		);
		const replayed: { replayedAt: string | null } = await broker.call(
			"notifications.replayDeadLetter",
			{ id: letter.id },
			{ meta: { user: admin } }
		);
		expect(replayed.replayedAt).toEqual(expect.any(String));
		expect(await forOrder(user, ev.aggregateId)).toHaveLength(1);
		// A second replay is a no-op; the pending list no longer shows it.
		await broker.call(
			"notifications.replayDeadLetter",
			{ id: letter.id },
			{ meta: { user: admin } }
		);
		expect(await forOrder(user, ev.aggregateId)).toHaveLength(1);
		const pending: { rows: { id: string }[] } = await broker.call(
			"notifications.listDeadLetters",
			{},
			{ meta: { user: admin } }
		);
		expect(pending.rows.map(r => r.id)).not.toContain(letter.id);
		await expect(
			broker.call(
				"notifications.replayDeadLetter",
				{ id: crypto.randomUUID() },
				{ meta: { user: admin } }
			)
		).rejects.toMatchObject({ type: "EVENTS_DEAD_LETTER_NOT_FOUND", code: 404 });
	});

	it("list requires a user: AUTH_TOKEN_MISSING 401", async () => {
		await expect(broker.call("notifications.list", {})).rejects.toMatchObject({
			type: "AUTH_TOKEN_MISSING",
			code: 401
		});
		await expect(
			broker.call("notifications.list", {}, { meta: { user: null } })
		).rejects.toMatchObject({
			type: "AUTH_TOKEN_MISSING",
			code: 401
		});
	});

	it("list validates its query: VALIDATION_ERROR 422", async () => {
		await expect(list(customer(), { orderId: "nope" })).rejects.toMatchObject({
			type: "VALIDATION_ERROR",
			code: 422,
			data: [expect.objectContaining({ field: "orderId" })]
		});
		await expect(list(customer(), { pageSize: 1000 })).rejects.toMatchObject({
			type: "VALIDATION_ERROR"
		});
	});
});
