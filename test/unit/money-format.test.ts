/**
 * Amounts in the e-mails (issue 16, item 4): integer minor units written in the currency's own
 * minor unit, with `Intl.NumberFormat`: two decimals for USD and EUR, none for JPY (1 500 yen is
 * `1,500 JPY`, not `15.00 JPY`), three for KWD and BHD. Exact for any integer amount.
 */
import { formatMoney, minorUnitDigits } from "../../platform/money";
import { renderEmail } from "../../services/notifications/order-email";
import type { Order } from "../../services/orders/orders.model";

const order = (total: number, currency: string): Order => ({
	id: "0b6f2c1e-4b1a-4c3e-9a51-6f1b2a3c4d5e",
	userId: "5d1b0c2a-7e3f-4a9b-8c6d-1e2f3a4b5c6d",
	status: "CONFIRMED",
	items: [
		{
			productId: "9a8b7c6d-5e4f-4a3b-8c1d-0e9f8a7b6c5d",
			sku: "SKU-1",
			name: "Thing",
			quantity: 2,
			unitPrice: total / 2,
			lineTotal: total
		}
	],
	total,
	currency,
	paymentMethod: "tok_visa",
	cancellationReason: null,
	cancelRequested: false,
	createdAt: "2026-01-01T00:00:00.000Z",
	updatedAt: "2026-01-01T00:00:00.000Z"
});

describe("formatMoney: integer minor units in the currency's minor unit", () => {
	it.each([
		["USD", 2],
		["EUR", 2],
		["JPY", 0],
		["KWD", 3],
		["BHD", 3]
	])("%s has %d minor-unit digits", (currency, digits) => {
		expect(minorUnitDigits(currency)).toBe(digits);
	});

	it.each([
		[19497, "USD", "194.97 USD"],
		[5, "USD", "0.05 USD"],
		[0, "USD", "0.00 USD"],
		[123456789, "EUR", "1,234,567.89 EUR"],
		[1500, "JPY", "1,500 JPY"],
		[7, "JPY", "7 JPY"],
		[1250, "KWD", "1.250 KWD"],
		[5, "BHD", "0.005 BHD"],
		[2_147_483_647, "KWD", "2,147,483.647 KWD"],
		[2_147_483_647, "USD", "21,474,836.47 USD"],
		[-1999, "USD", "-19.99 USD"]
	])("%d %s is %s", (minor, currency, text) => {
		expect(formatMoney(minor, currency)).toBe(text);
	});

	it("writes the e-mails' amounts with it (JPY without decimals, KWD with three)", () => {
		const yen = renderEmail("ORDER_CONFIRMED", order(3000, "JPY"));
		expect(yen.body).toContain("Total: 3,000 JPY");
		expect(yen.body).toContain("2 x Thing (SKU-1) 3,000 JPY");
		const dinar = renderEmail("ORDER_CONFIRMED", order(12_500, "KWD"));
		expect(dinar.body).toContain("Total: 12.500 KWD");
	});

	it("renders the refund e-mail with the refunded amount", () => {
		const mail = renderEmail("ORDER_REFUNDED", order(4498, "USD"), {
			amount: 4498,
			currency: "USD",
			restock: true
		});
		expect(mail.subject).toBe("Order 0b6f2c1e refunded");
		expect(mail.body).toContain("refunded: 44.98 USD");
	});
});
