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
 * - Not one of the most common passwords (the data file platform/security/common-passwords.json,
 *   from SecLists; its `source` says which entries), in any case, nor one of them followed by
 *   digits only (`Dragon2024`, `password1234`).
 *
 * The list is read once, when this module is first required. tsc emits the JSON file next to the
 * compiled module (it is imported, with `resolveJsonModule`), so it is found from source (ts-jest),
 * from dist/ and in the Docker image alike.
 */
import commonPasswords from "./common-passwords.json";

/** Fewest characters of a password. */
export const PASSWORD_MIN_LENGTH = 10;
/** Most characters of a password (bounds the Argon2 work an attacker can ask for). */
export const PASSWORD_MAX_LENGTH = 256;

/** Why a password is refused (`data.reasons` of `USERS_PASSWORD_WEAK`). */
export type PasswordWeakness = "TOO_SHORT" | "TOO_LONG" | "SAME_AS_EMAIL" | "COMMON";

/** Where the list comes from and which of its entries it holds (the data file's `source`). */
export const COMMON_PASSWORDS_SOURCE: string = commonPasswords.source;
/** The 500 most common passwords, most common first, lower-case. */
export const TOP_COMMON_PASSWORDS: readonly string[] = Object.freeze(commonPasswords.top);
/** Entries of 10 characters or more found past the first 500 of the same list, lower-case. */
export const LONG_COMMON_PASSWORDS: readonly string[] = Object.freeze(commonPasswords.long);

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
