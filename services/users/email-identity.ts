/**
 * The identity key of an e-mail address: one account per key (a unique index on
 * `users.email_key`), so addresses a person reads as the same one cannot hold two accounts.
 * docs/security.md ("One person, one account") lists the rules; in order:
 *
 * 1. Refused (422 `USERS_EMAIL_INVALID`, `data.reason`): invisible characters, i.e. Unicode's
 *    Default_Ignorable_Code_Point (zero-width space, joiners, soft hyphen, variation selectors,
 *    bidi controls ...), any other format character (`Cf`) and white space inside the address
 *    (`INVISIBLE_CHARACTER`); controls, surrogates, private-use and unassigned code points
 *    (`UNSUPPORTED_CHARACTER`). Checked before and after normalisation.
 * 2. NFKC, then full case folding (`nfkcCaseFold`): full-width letters, ligatures (`ﬁ`),
 *    mathematical alphanumerics, decomposed accents and case all collapse (`ß` ≡ `ss`).
 * 3. Split at the last `@` (the domain cannot hold one).
 * 4. The domain in its IDNA ASCII form (Node's `url.domainToASCII`: WHATWG URL, UTS #46
 *    non-transitional processing), without the trailing dot of a fully qualified name; invalid
 *    IDNs (punycode that does not decode included), fewer than two labels, empty labels and
 *    labels over 63 octets are refused (`INVALID_DOMAIN`).
 * 5. Look-alikes mapped by UTS #39's confusable data (the `unhomoglyph` package:
 *    confusables.txt's prototypes): in the NFD form of the local part and of the domain's Unicode
 *    labels, every non-ASCII character is replaced by its prototype (Cyrillic `а` → `a`, Greek
 *    `ο` → `o`, `ø` → `o` + U+0338 ...), then NFKC and case folding again; the domain goes back to
 *    its ASCII form. ASCII characters are kept as they are: `rn` / `m` and `1` / `l` are distinct
 *    mailboxes and domains, and every ASCII address keeps the key it had (its lower case).
 *
 * The key is opaque (never shown, never mailed): the account keeps the address as typed.
 *
 * Case folding is computed with the runtime's own Unicode case mappings: lower(upper(x)) and NFKC,
 * to a fixed point. Over every assigned code point this identifies exactly what Unicode's full
 * case folding (CaseFolding.txt, statuses C + F) with NFKC identifies, plus dotless `ı` with `i`
 * (which UTS #39's confusables map together too); test/unit/email-identity.test.ts checks it
 * against the CaseFolding data of the `unicode-case-folding` package. (That package is ESM only,
 * which the shop's CommonJS build and Jest cannot load at run time.)
 *
 * The key depends on the Unicode data of Node (ICU) and of `unhomoglyph` (pinned): a change of
 * either that maps an assigned character differently needs a migration recomputing the keys, as
 * migration `002-email-identity-key` does (services/users/migrations.ts).
 */
import { domainToASCII, domainToUnicode } from "node:url";
import unhomoglyph from "unhomoglyph";
import { shopError } from "../../platform/errors";

/** Why an address has no identity key: `data.reason` of 422 `USERS_EMAIL_INVALID`. */
export type EmailRefusal =
	"INVISIBLE_CHARACTER" | "UNSUPPORTED_CHARACTER" | "MALFORMED_ADDRESS" | "INVALID_DOMAIN";

/** Invisible: default-ignorable, other format characters, white space, line/paragraph separators. */
const INVISIBLE = /[\p{Default_Ignorable_Code_Point}\p{Cf}\p{White_Space}\p{Zl}\p{Zp}]/u;
/** Controls, lone surrogates, private use, unassigned (including noncharacters). */
const UNSUPPORTED = /[\p{Cc}\p{Cs}\p{Co}\p{Cn}]/u;
const NON_ASCII = /[^\p{ASCII}]/gu;
/** An IDNA label's longest ASCII form (RFC 1035). */
const MAX_LABEL_OCTETS = 63;

/** `U+200B` for a one-code-point string. */
function codePointOf(ch: string): string {
	return `U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
}

/** The 422 `USERS_EMAIL_INVALID` for `reason`; `data.character` names the offending code point. */
function refusal(reason: EmailRefusal, message: string, character?: string): Error {
	return shopError("USERS_EMAIL_INVALID", message, {
		field: "email",
		reason,
		...(character === undefined ? {} : { character: codePointOf(character) })
	});
}

/** @throws USERS_EMAIL_INVALID (422) naming the first invisible or unsupported character */
function refuseHidden(s: string): void {
	for (const ch of s) {
		if (INVISIBLE.test(ch))
			throw refusal(
				"INVISIBLE_CHARACTER",
				`The e-mail contains an invisible character or a space (${codePointOf(ch)}).`,
				ch
			);
		if (UNSUPPORTED.test(ch))
			throw refusal(
				"UNSUPPORTED_CHARACTER",
				`The e-mail contains a control, private-use or unassigned character (${codePointOf(ch)}).`,
				ch
			);
	}
}

/**
 * NFKC, then full case folding, to a fixed point (NFKC_Casefold without its removal of
 * default-ignorables, which are refused before): `"ＳＴＲＡẞＥ"` → `"strasse"`.
 * @param s - any string
 * @returns its folded form; equal for strings equal under Unicode's NFKC + full case folding
 */
export function nfkcCaseFold(s: string): string {
	let x = s.normalize("NFKC");
	// ẞ needs three rounds (ẞ → ß → ss); four leave a margin.
	for (let round = 0; round < 4; round++) {
		const next = x.toUpperCase().toLowerCase().normalize("NFKC");
		if (next === x) return x;
		x = next;
	}
	return x;
}

/**
 * UTS #39 prototypes of the non-ASCII characters of `s` (in its NFD form), then NFKC and case
 * folding again: `"exаmple"` (Cyrillic а) → `"example"`.
 */
function mapLookAlikes(s: string): string {
	return nfkcCaseFold(s.normalize("NFD").replace(NON_ASCII, ch => unhomoglyph(ch)));
}

/** Whether `ascii` is a domain of two or more non-empty labels of at most 63 octets. */
function wellFormedDomain(ascii: string): boolean {
	const labels = ascii.split(".");
	return labels.length >= 2 && labels.every(l => l.length > 0 && l.length <= MAX_LABEL_OCTETS);
}

/**
 * The domain's part of the key: IDNA ASCII (UTS #46), no trailing dot, look-alikes mapped.
 * @throws USERS_EMAIL_INVALID (422, `INVALID_DOMAIN`)
 */
function domainKey(domain: string): string {
	let ascii = domainToASCII(domain);
	if (ascii.endsWith(".")) ascii = ascii.slice(0, -1);
	// A label still "xn--" in Unicode is punycode that does not decode.
	const unicode = domainToUnicode(ascii);
	if (!ascii || !wellFormedDomain(ascii) || unicode.split(".").some(l => l.startsWith("xn--")))
		throw refusal("INVALID_DOMAIN", "The e-mail's domain is not a valid domain name.");
	const mapped = domainToASCII(mapLookAlikes(unicode));
	// A prototype that is no valid domain character leaves the label as it was.
	return mapped && wellFormedDomain(mapped) ? mapped : ascii;
}

/**
 * The identity key of an e-mail address (the rules: this file's header, docs/security.md).
 * @param address - the address as typed (trimmed)
 * @returns `<local key>@<domain key>`, e.g. `ann@example.com` for `ＡＮＮ@Example.COM.`
 * @throws USERS_EMAIL_INVALID (422, `data: { field: "email", reason, character? }`, reason one
 *   of `INVISIBLE_CHARACTER`, `UNSUPPORTED_CHARACTER`, `MALFORMED_ADDRESS`, `INVALID_DOMAIN`)
 */
export function emailIdentityKey(address: string): string {
	refuseHidden(address);
	const folded = nfkcCaseFold(address);
	refuseHidden(folded);
	const at = folded.lastIndexOf("@");
	if (at <= 0 || at === folded.length - 1)
		throw refusal("MALFORMED_ADDRESS", "The e-mail must be <local part>@<domain>.");
	const local = mapLookAlikes(folded.slice(0, at));
	refuseHidden(local);
	return `${local}@${domainKey(folded.slice(at + 1))}`;
}

/**
 * The key of an address stored before keys existed (migration `002-email-identity-key`):
 * invisible characters, refused in new addresses, are dropped instead.
 * @returns the key, or null when the address has none even so (e.g. an invalid domain)
 */
export function legacyEmailIdentityKey(address: string): string | null {
	const visible = [...address.trim()].filter(ch => !INVISIBLE.test(ch)).join("");
	try {
		return emailIdentityKey(visible);
	} catch {
		return null;
	}
}

/**
 * The key of an address a login names, or null when it has none: such a login can only match an
 * account's exact address (one migration 002 could not key), and otherwise fails like an unknown
 * e-mail (401), never 422, so logins answer alike whatever was typed.
 */
export function emailIdentityKeyOrNull(address: string): string | null {
	try {
		return emailIdentityKey(address);
	} catch {
		return null;
	}
}
