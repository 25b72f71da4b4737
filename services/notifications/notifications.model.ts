/**
 * The notifications service's public shapes: what other services, tests and the web app may import.
 */

/** What a notification is about: one per order and kind. */
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

/** `notification.created` (a live event, best effort, once the record is committed). */
export interface NotificationCreated {
	id: string;
	orderId: string;
	kind: NotificationKind;
}
