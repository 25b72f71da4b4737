/**
 * The common-password list is a data file (platform/security/common-passwords.json), loaded by
 * platform/security/password-policy.ts when it is first required:
 *
 * - it holds exactly the entries the former TypeScript module held (547: the 500 most common,
 *   then the 47 long ones, in order; the SHA-256 of the entries joined by "\n" was taken from
 *   that module before it went);
 * - the policy refuses every entry, so the file is the list the policy uses;
 * - compiled by tsc, the data file lands next to the compiled module (dist/platform/security/),
 *   which is what `npm run build`, the other scripts' `tsc -p .` and the Dockerfile's build stage
 *   rely on: tsc emits it because password-policy.ts imports it (`resolveJsonModule`).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import ts from "typescript";
import {
	COMMON_PASSWORDS_SOURCE,
	LONG_COMMON_PASSWORDS,
	TOP_COMMON_PASSWORDS,
	isCommonPassword
} from "../../platform/security/password-policy";

const ROOT = path.resolve(__dirname, "..", "..");
const DATA_FILE = path.join(ROOT, "platform", "security", "common-passwords.json");

/** SHA-256 of the former module's TOP then LONG entries joined by "\n" (547 entries). */
const SHA256_BEFORE = "0dd3850ff72badefa2b0150dbbf178dabc7fbbbc110124f3e0a479ed45fd8014";

describe("the common-password list (platform/security/common-passwords.json)", () => {
	it("is a data file with the entries of the former TypeScript module, in order", () => {
		const data = JSON.parse(fs.readFileSync(DATA_FILE, "utf8")) as {
			top: string[];
			long: string[];
		};
		expect(data.top).toHaveLength(500);
		expect(data.long).toHaveLength(47);
		expect(data.top.slice(0, 5)).toEqual(["password", "123456", "12345678", "1234", "qwerty"]);
		expect(data.top[499]).toBe("buffalo");
		expect(data.long.slice(0, 3)).toEqual(["1234567890", "fuck_inside", "deepthroat"]);
		expect(data.long.at(-1)).toBe("peternorth");
		const all = [...data.top, ...data.long];
		expect(crypto.createHash("sha256").update(all.join("\n")).digest("hex")).toBe(
			SHA256_BEFORE
		);
		expect(TOP_COMMON_PASSWORDS).toEqual(data.top);
		expect(LONG_COMMON_PASSWORDS).toEqual(data.long);
		expect(COMMON_PASSWORDS_SOURCE).toMatch(/SecLists/);
	});

	it("is the list the policy refuses", () => {
		for (const p of [...TOP_COMMON_PASSWORDS, ...LONG_COMMON_PASSWORDS])
			expect([p, isCommonPassword(p)]).toEqual([p, true]);
	});

	it("is emitted by tsc next to the compiled policy, which loads it from there", () => {
		const outDir = fs.mkdtempSync(path.join(os.tmpdir(), "common-passwords-tsc-"));
		try {
			const parsed = ts.getParsedCommandLineOfConfigFile(
				path.join(ROOT, "tsconfig.json"),
				{ outDir, incremental: false, sourceMap: false },
				{
					...ts.sys,
					onUnRecoverableConfigFileDiagnostic: d => {
						throw new Error(ts.flattenDiagnosticMessageText(d.messageText, "\n"));
					}
				}
			);
			if (!parsed) throw new Error("tsconfig.json did not parse");
			const program = ts.createProgram(
				[path.join(ROOT, "platform", "security", "password-policy.ts")],
				parsed.options
			);
			expect(program.emit().emitSkipped).toBe(false);
			const compiledDir = path.join(outDir, "platform", "security");
			expect(fs.existsSync(path.join(compiledDir, "common-passwords.json"))).toBe(true);
			const compiled = require(path.join(compiledDir, "password-policy.js")) as {
				isCommonPassword(p: string): boolean;
				LONG_COMMON_PASSWORDS: readonly string[];
			};
			expect(compiled.LONG_COMMON_PASSWORDS).toHaveLength(47);
			expect(compiled.isCommonPassword("Qwertyuiop2024")).toBe(true);
			expect(compiled.isCommonPassword("correct horse battery")).toBe(false);
		} finally {
			fs.rmSync(outDir, { recursive: true, force: true });
		}
	});
});
