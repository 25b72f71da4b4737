/**
 * Money for people to read: integer minor units (cents for USD, yen for JPY, fils for KWD) of an
 * ISO 4217 currency written with exactly that currency's minor-unit digits, by
 * `Intl.NumberFormat` (the runtime's ICU data: ISO 4217's minor units). The shop stores and
 * computes money only as integers; this is for e-mails and operators' screens.
 */

/**
 * Digits of `currency`'s minor unit (ISO 4217 as the runtime's ICU data knows it): 2 for USD and
 * EUR, 0 for JPY, 3 for KWD and BHD; 2 for a well-formed code it does not know.
 * @throws RangeError for a code that is not three letters
 */
export function minorUnitDigits(currency: string): number {
	return (
		new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions()
			.maximumFractionDigits ?? 2
	);
}

/** One number format per currency (grouping, exactly its minor unit's digits). */
const moneyFormats = new Map<string, Intl.NumberFormat>();

/**
 * An amount as people read it: `minor` integer minor units of `currency` (cents for USD, yen for JPY,
 * fils for KWD) as `1,234.50 USD`, `1,500 JPY`, `1.250 KWD`. The decimal is built from the
 * integer as a string and formatted by `Intl.NumberFormat` (en) as such: exact, no float
 * rounding, whatever the amount.
 */
export function formatMoney(minor: number, currency: string): string {
	let nf = moneyFormats.get(currency);
	if (!nf) {
		const digits = minorUnitDigits(currency);
		nf = new Intl.NumberFormat("en", {
			minimumFractionDigits: digits,
			maximumFractionDigits: digits
		});
		moneyFormats.set(currency, nf);
	}
	const digits = nf.resolvedOptions().maximumFractionDigits ?? 2;
	const units = String(Math.abs(Math.trunc(minor))).padStart(digits + 1, "0");
	const decimal = digits === 0 ? units : `${units.slice(0, -digits)}.${units.slice(-digits)}`;
	const signed = `${minor < 0 ? "-" : ""}${decimal}`;
	// A decimal string is formatted exactly (Intl.NumberFormat v3, Node 19+).
	return `${nf.format(signed as unknown as number)} ${currency}`;
}
