/**
 * services/users/email-identity.ts: the identity key's rules, one by one, and its case folding
 * checked against Unicode's CaseFolding data (the `unicode-case-folding` package, ESM only, read
 * in a child Node process). No database: test/unit/users-identity.test.ts checks the service.
 */
import { execFileSync } from "node:child_process";
import path from "node:path";
import { emailIdentityKey, nfkcCaseFold } from "../../services/users/email-identity";

const ROOT = path.join(__dirname, "..", "..");

/** The refusal `emailIdentityKey` throws for `address`, or the key it answered. */
function outcome(address: string): unknown {
	try {
		return emailIdentityKey(address);
	} catch (err) {
		const e = err as { type?: string; code?: number; data?: unknown };
		return { type: e.type, code: e.code, data: e.data };
	}
}

describe("emailIdentityKey: forms a person reads as ann@example.com share its key", () => {
	it.each([
		["the address itself", "ann@example.com"],
		["another case", "ANN@Example.COM"],
		["a trailing dot on the domain", "ann@example.com."],
		["full-width letters in the local part", "ａｎｎ@example.com"],
		["a full-width domain and full stop", "ann@ｅｘａｍｐｌｅ．ｃｏｍ"],
		["an ideographic full stop (UTS #46 maps it)", "ann@example\u3002com"],
		["a Cyrillic а in the domain (UTS #39 prototype)", "ann@ex\u0430mple.com"],
		["a Cyrillic а in the local part", "\u0430nn@example.com"],
		["a Greek α in the local part (UTS #39 prototype)", "\u03b1nn@example.com"],
		["the domain as punycode of its look-alike", "ann@xn--exmple-4nf.com"]
	])("%s: %p", (_label, address) => {
		expect(emailIdentityKey(address)).toBe("ann@example.com");
	});

	it.each([
		["the ligature ﬁ", "\ufb01ona@example.com", "fiona@example.com"],
		["a mathematical bold o", "b\u{1d428}b@example.com", "bob@example.com"],
		["a decomposed é", "rene\u0301@example.com", "ren\u00e9@example.com"],
		[
			"a German sharp s (full case folding: ß = ss)",
			"stra\u00dfe@example.com",
			"strasse@example.com"
		],
		["a capital sharp s", "STRA\u1e9eE@example.com", "strasse@example.com"],
		["a Kelvin sign", "\u212aim@example.com", "kim@example.com"],
		[
			"Greek final sigma and capital sigma",
			"\u03bf\u03b4\u03bf\u03c2@example.com",
			"\u039f\u0394\u039f\u03a3@example.com"
		],
		["an IDN and its punycode", "ann@b\u00fccher.de", "ann@xn--bcher-kva.de"]
	])("%s", (_label, a, b) => {
		expect(emailIdentityKey(a)).toBe(emailIdentityKey(b));
	});

	it("puts the domain in its IDNA ASCII form", () => {
		expect(emailIdentityKey("ann@B\u00fccher.de.")).toBe("ann@xn--bcher-kva.de");
	});

	it.each([
		["a digit one and a letter l", "ann1@example.com", "annl@example.com"],
		["rn and m (ASCII is kept as typed)", "rnary@example.com", "mary@example.com"],
		["an accent", "rene@example.com", "ren\u00e9@example.com"],
		["a dot in the local part", "a.nn@example.com", "ann@example.com"],
		["a sub-address", "ann+shop@example.com", "ann@example.com"],
		["another domain", "ann@example.org", "ann@example.com"]
	])("keeps distinct addresses apart: %s", (_label, a, b) => {
		expect(emailIdentityKey(a)).not.toBe(emailIdentityKey(b));
	});

	it("keeps an ASCII address's key its lower case (the accounts' keys before the migration)", () => {
		for (const a of ["ann@example.com", "a.b+c_d-e@sub.example.co.uk", "x@1.2.3.4"])
			expect(emailIdentityKey(a)).toBe(a);
	});
});

describe("emailIdentityKey: refusals (422 USERS_EMAIL_INVALID with data.reason)", () => {
	const invalid = (reason: string, character?: string): object => ({
		type: "USERS_EMAIL_INVALID",
		code: 422,
		data: { field: "email", reason, ...(character ? { character } : {}) }
	});

	it.each([
		["a zero-width space", "an\u200bn@example.com", "U+200B"],
		["a soft hyphen", "an\u00adn@example.com", "U+00AD"],
		["a zero-width joiner", "an\u200dn@example.com", "U+200D"],
		["a byte order mark", "\ufeffann@example.com", "U+FEFF"],
		["a right-to-left override", "ann\u202e@example.com", "U+202E"],
		["a variation selector", "ann\ufe0f@example.com", "U+FE0F"],
		["a Hangul filler", "ann\u3164@example.com", "U+3164"],
		["a zero-width space in the domain", "ann@exam\u200bple.com", "U+200B"],
		["a no-break space", "an\u00a0n@example.com", "U+00A0"],
		["a space made by NFKC (¨)", "an\u00a8n@example.com", "U+0020"]
	])("refuses %s as INVISIBLE_CHARACTER", (_label, address, character) => {
		expect(outcome(address)).toEqual(invalid("INVISIBLE_CHARACTER", character));
	});

	it.each([
		["a control character", "an\u0007n@example.com", "U+0007"],
		["a private-use character", "an\ue000n@example.com", "U+E000"],
		["a lone surrogate", "an\ud800n@example.com", "U+D800"],
		["a noncharacter", "an\uffffn@example.com", "U+FFFF"]
	])("refuses %s as UNSUPPORTED_CHARACTER", (_label, address, character) => {
		expect(outcome(address)).toEqual(invalid("UNSUPPORTED_CHARACTER", character));
	});

	it.each([
		["two trailing dots", "ann@example.com.."],
		["an empty label", "ann@example..com"],
		["a leading dot", "ann@.example.com"],
		["a single label", "ann@localhost"],
		["a forbidden character", "ann@exa%mple.com"],
		["an address literal", "ann@[192.0.2.1]"],
		["a label over 63 octets", `ann@${"a".repeat(64)}.com`],
		["invalid punycode", "ann@xn--a.com"]
	])("refuses a domain with %s as INVALID_DOMAIN", (_label, address) => {
		expect(outcome(address)).toEqual(invalid("INVALID_DOMAIN"));
	});

	it.each([
		["no @", "ann.example.com"],
		["an empty local part", "@example.com"]
	])("refuses %s as MALFORMED_ADDRESS", (_label, address) => {
		expect(outcome(address)).toEqual(invalid("MALFORMED_ADDRESS"));
	});
});

describe("nfkcCaseFold: Unicode full case folding (CaseFolding.txt C + F) with NFKC", () => {
	/**
	 * For every code point assigned in this runtime: NFKC_Casefold per CaseFolding.txt (the
	 * `unicode-case-folding` package), to a fixed point, as a child Node process computes it
	 * (the package is ESM, which Jest's CommonJS runtime cannot load). Only code points whose
	 * folded form is not themselves are listed.
	 */
	function referenceFolding(): Record<string, string> {
		const script = `
import { caseFold } from "unicode-case-folding";
const nf = s => s.normalize("NFKC");
const assigned = /^[^\\p{Cn}\\p{Cs}\\p{Co}]$/u;
const out = {};
for (let cp = 0; cp < 0x110000; cp++) {
	const c = String.fromCodePoint(cp);
	if (!assigned.test(c)) continue;
	let x = nf(c);
	for (let i = 0; i < 4; i++) { const y = nf(caseFold(x)); if (y === x) break; x = y; }
	if (x !== c) out[cp] = x;
}
process.stdout.write(JSON.stringify(out));`;
		const json = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
			cwd: ROOT,
			maxBuffer: 64 * 1024 * 1024
		});
		return JSON.parse(json.toString()) as Record<string, string>;
	}

	it("identifies exactly what NFKC + full case folding identifies, and dotless ı with i", () => {
		const reference = referenceFolding();
		// Each of our classes (by nfkcCaseFold) holds one reference class, but for i / ı.
		const classes = new Map<string, Set<string>>();
		const assigned = /^[^\p{Cn}\p{Cs}\p{Co}]$/u;
		let checked = 0;
		const split: string[] = [];
		for (let cp = 0; cp < 0x110000; cp++) {
			const c = String.fromCodePoint(cp);
			if (!assigned.test(c)) continue;
			checked++;
			const ours = nfkcCaseFold(c);
			const ref = reference[cp] ?? c;
			// Never splits a reference class: the reference's folded form folds like c.
			if (nfkcCaseFold(ref) !== ours) split.push(cp.toString(16));
			if (!classes.has(ours)) classes.set(ours, new Set());
			classes.get(ours)!.add(ref);
		}
		expect(checked).toBeGreaterThan(150_000);
		expect(split).toEqual([]);
		const merged = [...classes].filter(([, refs]) => refs.size > 1);
		expect(merged.map(([ours, refs]) => [ours, [...refs].sort()])).toEqual([
			["i", ["i", "\u0131"]]
		]);
		// And the F (full) foldings a plain toLowerCase misses.
		expect(nfkcCaseFold("\u00df")).toBe("ss");
		expect(nfkcCaseFold("\u1e9e")).toBe("ss");
		expect(nfkcCaseFold("\u1fb3")).toBe("\u03b1\u03b9");
		expect(nfkcCaseFold("\u0587")).toBe("\u0565\u0582");
	});
});
