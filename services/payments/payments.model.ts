/**
 * The payments service's public shapes: what other services and the web app may import.
 */

export type PaymentStatus = "CAPTURED" | "DECLINED" | "REFUNDED" | "VOIDED";

/** A payment as the API shows it. */
export interface Payment {
	id: string;
	orderId: string;
	/** Integer cents. */
	amount: number;
	/** ISO 4217. */
	currency: string;
	method: string;
	status: PaymentStatus;
	declineCode: string | null;
	createdAt: string;
	updatedAt: string;
}

/** One entry of the append-only ledger. Integer cents. */
export interface LedgerEntry {
	id: number;
	paymentId: string;
	kind: "CAPTURE" | "REFUND";
	amount: number;
	currency: string;
	createdAt: string;
}

/** An order's money as `payments.forOrder` answers it. */
export interface OrderPayments {
	payments: Payment[];
	ledger: LedgerEntry[];
	/** The ledger's captures for the order, integer cents. */
	captured: number;
	/** The ledger's refunds for the order, integer cents. */
	refunded: number;
}
