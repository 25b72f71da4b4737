/**
 * The shop's password policy, for `users.register` and the seeded administrator's
 * `ADMIN_PASSWORD` (platform/config.ts). After NIST SP 800-63B §5.1.1.2 ("Memorized Secret
 * Verifiers"): a minimum length, a generous maximum, no composition rules, and a check against
 * values known to be common or expected for this account.
 *
 * - Length: {@link PASSWORD_MIN_LENGTH} to {@link PASSWORD_MAX_LENGTH} characters (UTF-16 code
 *   units, as fastest-validator counts them). The maximum bounds the cost of hashing an
 *   attacker's input with Argon2 (a megabyte-long password would be hashed too).
 * - Not the account's e-mail address, nor the part before its `@`, in any case.
 * - Not one of the most common passwords (platform/security/common-passwords.ts, from SecLists), in any case,
 *   nor one of them followed by digits only (`Dragon2024`, `password1234`).
 */
import { LONG_COMMON_PASSWORDS, TOP_COMMON_PASSWORDS } from "./common-passwords";

/** Fewest characters of a password. */
export const PASSWORD_MIN_LENGTH = 10;
/** Most characters of a password (bounds the Argon2 work an attacker can ask for). */
export const PASSWORD_MAX_LENGTH = 256;

/** Why a password is refused (`data.reasons` of `USERS_PASSWORD_WEAK`). */
export type PasswordWeakness = "TOO_SHORT" | "TOO_LONG" | "SAME_AS_EMAIL" | "COMMON";

const COMMON = new Set<string>([...TOP_COMMON_PASSWORDS, ...LONG_COMMON_PASSWORDS]);

/** Whether `password` is a common password, or one followed by digits only (case-insensitive). */
export function isCommonPassword(password: string): boolean {
	const p = password.trim().toLowerCase();
	if (COMMON.has(p)) return true;
	const stem = p.replace(/\d+$/, "");
	return stem !== "" && stem !== p && COMMON.has(stem);
}

/**
 * Every rule of the policy that `password` breaks; empty when it is acceptable.
 * @param password - as the client sent it
 * @param email - the account's e-mail address, when known
 */
export function passwordWeaknesses(password: string, email?: string | null): PasswordWeakness[] {
	const out: PasswordWeakness[] = [];
	if (password.length < PASSWORD_MIN_LENGTH) out.push("TOO_SHORT");
	if (password.length > PASSWORD_MAX_LENGTH) out.push("TOO_LONG");
	if (email) {
		const p = password.trim().toLowerCase();
		const e = email.trim().toLowerCase();
		const local = e.split("@")[0] ?? "";
		if (p === e || (local !== "" && p === local)) out.push("SAME_AS_EMAIL");
	}
	if (isCommonPassword(password)) out.push("COMMON");
	return out;
}

/** One sentence for a client or an operator about `reasons`. */
export function describeWeaknesses(reasons: readonly PasswordWeakness[]): string {
	const text: Record<PasswordWeakness, string> = {
		TOO_SHORT: `shorter than ${PASSWORD_MIN_LENGTH} characters`,
		TOO_LONG: `longer than ${PASSWORD_MAX_LENGTH} characters`,
		SAME_AS_EMAIL: "the e-mail address (or its part before @)",
		COMMON: "one of the most common passwords"
	};
	return `The password is too weak: ${reasons.map(r => text[r]).join("; ")}.`;
}
