/**
 * The simulated card processor's answers to the test tokens (the way real processors offer test
 * cards; the token table is in payments.service.ts). `tok_processorUnavailable` simulates a fault
 * of the processor, not a card's answer; it works only while `PAYMENTS_SIMULATED_FAULTS` is on.
 */

/** The processor's answer: approved, declined (with its code), or unavailable (a simulated fault). */
export type ProcessorOutcome =
	{ approve: true } | { approve: false; declineCode: string } | { unavailable: true };

/** Test tokens that simulate a fault of the processor, not a card's answer (see above). */
export const SIMULATED_FAULT_TOKENS: readonly string[] = ["tok_processorUnavailable"];

/**
 * The simulated processor's answer for a token, or null for an unknown token.
 * @param simulatedFaults - whether fault tokens work (`PAYMENTS_SIMULATED_FAULTS`); off, they
 *   are unknown tokens
 */
export function processorOutcome(token: string, simulatedFaults = true): ProcessorOutcome | null {
	if (!simulatedFaults && SIMULATED_FAULT_TOKENS.includes(token)) return null;
	switch (token) {
		case "tok_visa":
		case "tok_mastercard":
		case "tok_amex":
			return { approve: true };
		case "tok_chargeDeclined":
			return { approve: false, declineCode: "card_declined" };
		case "tok_chargeDeclinedInsufficientFunds":
			return { approve: false, declineCode: "insufficient_funds" };
		case "tok_processorUnavailable":
			return { unavailable: true };
		default:
			return null;
	}
}
