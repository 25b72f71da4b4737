/** Display helpers. */

/**
 * Integer minor units (cents; yen for JPY, which has none; fils for KWD, three digits) in an
 * ISO 4217 currency, e.g. `$89.99`, `¥1,500`: divided by the currency's own minor unit.
 */
export function money(cents: number, currency = "USD"): string {
	const nf = new Intl.NumberFormat("en-US", { style: "currency", currency });
	const digits = nf.resolvedOptions().maximumFractionDigits ?? 2;
	return nf.format(cents / 10 ** digits);
}

export function dateTime(iso: string): string {
	return new Date(iso).toLocaleString("en-US", {
		dateStyle: "medium",
		timeStyle: "medium"
	});
}

export function time(iso: string | number): string {
	return new Date(iso).toLocaleTimeString("en-US", { hour12: false });
}

export const shortId = (id: string): string => id.slice(0, 8);

/** What a customer reads for an order status. */
export const STATUS_LABELS: Record<string, string> = {
	PENDING: "Pending",
	STOCK_RESERVED: "Stock reserved",
	PAID: "Paid",
	CONFIRMING: "Confirming",
	CONFIRMED: "Confirmed",
	CANCELLED: "Cancelled",
	REFUNDING: "Refunding",
	REFUNDED: "Refunded"
};

/** What a cancellation reason means. */
export const REASON_TEXT: Record<string, string> = {
	OUT_OF_STOCK: "Not enough stock for one of the items.",
	PAYMENT_DECLINED: "The card was declined.",
	PAYMENT_METHOD_INVALID: "The payment method is not valid.",
	TIMEOUT: "The order could not be completed in time.",
	CANCELLED_BY_CUSTOMER: "You cancelled the order.",
	PROCESSING_FAILED: "The order could not be processed."
};

/** Test card tokens of the simulated processor (services/payments/simulated-processor.ts). */
export const CARD_TOKENS: { token: string; label: string }[] = [
	{ token: "tok_visa", label: "Visa (approved)" },
	{ token: "tok_mastercard", label: "Mastercard (approved)" },
	{ token: "tok_amex", label: "American Express (approved)" },
	{ token: "tok_chargeDeclined", label: "Declined card" },
	{ token: "tok_chargeDeclinedInsufficientFunds", label: "Declined: insufficient funds" },
	{ token: "tok_processorUnavailable", label: "Processor unavailable (retried until timeout)" }
];

export function bytes(n: number | undefined): string {
	if (n === undefined) return "–";
	const mb = n / (1024 * 1024);
	return mb >= 1024 ? `${(mb / 1024).toFixed(1)} GB` : `${mb.toFixed(0)} MB`;
}

export function duration(seconds: number | undefined): string {
	if (seconds === undefined) return "–";
	const h = Math.floor(seconds / 3600);
	const m = Math.floor((seconds % 3600) / 60);
	const s = Math.floor(seconds % 60);
	return h > 0 ? `${h} h ${m} min` : m > 0 ? `${m} min ${s} s` : `${s} s`;
}
