/**
 * The config schema (platform/config/schema.ts) is the one list of environment variables:
 * - docs/CONTRACT.md's environment table is exactly what tools/config-docs.ts generates from it;
 * - every variable the sources name (`process.env.NAME`, `process.env["NAME"]`, `env.NAME`,
 *   `env, "NAME"`) is declared there, but for the operating system's and the dev tools' own
 *   (`NOT_SHOP_SETTINGS`);
 * - every declared variable is read: a value it accepts, other than its default, changes what
 *   `loadConfig` returns (or is refused by a rule between variables, naming it).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ConfigError, loadConfig } from "../../platform/config";
import { describeField } from "../../platform/config/fields";
import { ENV_FIELDS, ENVIRONMENT_ROWS, type EnvName } from "../../platform/config/schema";
import { SECRET_URL_VARIABLES, SECRET_VARIABLES } from "../../platform/security/secrets";
import {
	BEGIN_MARKER,
	CONTRACT_PATH,
	END_MARKER,
	renderEnvironmentTable,
	withGeneratedTable
} from "../../tools/config-docs";

const ROOT = path.join(__dirname, "..", "..");
const NAMES = Object.keys(ENV_FIELDS) as EnvName[];

/** Variables the sources name that are not the shop's settings, and why. */
const NOT_SHOP_SETTINGS: Record<string, string> = {
	USER: "the operating system's login name (the REPL's prompt)",
	PATH: "the operating system's search path (tools/ finds nats-server, redis-server)",
	HOME: "the operating system's home directory (tools/cluster.ts passes it on)",
	DEV_REPL: "set by tools/dev.ts for the shop process it restarts (npm run dev)",
	SHOP_URL: "set by tools/dev.ts for Vite's dev server proxy (npm run dev)"
};

/** The shop's sources and its dev tools (not bench/, whose variables are its own: bench/README). */
const SOURCE_DIRS = ["app", "bin", "mixins", "platform", "services", "tools"];
const SOURCE_FILES = ["moleculer.config.ts", "web/vite.config.mts"];

function sources(): string[] {
	const files: string[] = [...SOURCE_FILES];
	const walk = (dir: string): void => {
		for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
			const rel = path.join(dir, e.name);
			if (e.isDirectory()) walk(rel);
			else if (/\.(ts|mts|js|mjs)$/.test(e.name) && !e.name.endsWith(".d.ts"))
				files.push(rel);
		}
	};
	for (const d of SOURCE_DIRS) walk(d);
	return files;
}

/** Every variable name the sources mention as an environment variable, with the files. */
function variablesInSources(): Map<string, Set<string>> {
	const found = new Map<string, Set<string>>();
	const patterns = [
		/process\.env\.([A-Z][A-Z0-9_]*)/g,
		/process\.env\[\s*["'`]([A-Z][A-Z0-9_]*)["'`]\s*\]/g,
		/\benv\.([A-Z][A-Z0-9_]*)\b/g,
		/\benv\[\s*["'`]([A-Z][A-Z0-9_]*)["'`]\s*\]/g,
		/\(\s*env,\s*"([A-Z][A-Z0-9_]*)"/g
	];
	for (const file of sources()) {
		const src = fs.readFileSync(path.join(ROOT, file), "utf8");
		for (const re of patterns)
			for (const m of src.matchAll(re)) {
				if (!found.has(m[1]!)) found.set(m[1]!, new Set());
				found.get(m[1]!)!.add(file);
			}
	}
	return found;
}

describe("the config schema and its documentation", () => {
	it("docs/CONTRACT.md's environment table is what tools/config-docs.ts generates", () => {
		const contract = fs.readFileSync(CONTRACT_PATH, "utf8");
		expect(contract).toContain(BEGIN_MARKER);
		expect(contract).toContain(END_MARKER);
		// Run `npx tsx tools/config-docs.ts` when this fails.
		expect(withGeneratedTable(contract)).toBe(contract);
		const section = contract.split(/^## /m).find(s => s.startsWith("Environment"))!;
		expect(section).toContain(renderEnvironmentTable());
	});

	it("documents every declared variable in exactly one row, with its type and default", () => {
		const table = renderEnvironmentTable();
		const rows = table.split("\n").filter(l => l.startsWith("| `"));
		expect(rows).toHaveLength(ENVIRONMENT_ROWS.length);
		const documented = rows.flatMap(r =>
			[...r.split(" | ")[0]!.matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map(m => m[1]!)
		);
		expect([...documented].sort()).toEqual([...NAMES].sort());
		// The columns come from the fields: PORT's bounds and default are the parser's.
		expect(table).toContain("| `PORT` | gateway HTTP port | integer 0–65535 | 3000 |");
		expect(loadConfig({ JWT_SECRET: "s".repeat(40) }).port).toBe(3000);
		expect(() => loadConfig({ JWT_SECRET: "s".repeat(40), PORT: "65536" })).toThrow(
			"PORT must be in [0, 65535], got 65536"
		);
	});

	it("marks as secret every variable platform/security/secrets.ts guards", () => {
		const secret = NAMES.filter(n => describeField(ENV_FIELDS[n]).secret);
		expect(secret).toEqual(expect.arrayContaining([...SECRET_VARIABLES]));
		expect(secret).toEqual(expect.arrayContaining([...SECRET_URL_VARIABLES]));
		for (const n of SECRET_VARIABLES) expect(describeField(ENV_FIELDS[n]).secret).toBe("value");
		for (const n of SECRET_URL_VARIABLES)
			expect(describeField(ENV_FIELDS[n]).secret).toBe("url");
	});

	it("declares every variable the sources read, but the system's and the dev tools' own", () => {
		const found = variablesInSources();
		// The scan sees the reads outside platform/config.ts too.
		expect(found.get("JETSTREAM_REPLICAS")).toContain("bin/cluster.ts");
		expect(found.get("DATABASE_URL")).toContain("app/shop.ts");
		expect(found.get("DEV_REPL")).toContain("tools/dev-shop.ts");
		const undeclared = [...found.keys()].filter(
			n =>
				!(n in ENV_FIELDS) &&
				!(n in NOT_SHOP_SETTINGS) &&
				!/^[A-Z0-9]+_DATABASE_URL$/.test(n)
		);
		expect(undeclared).toEqual([]);
		// And the exceptions are still read: a stale one would hide nothing.
		for (const n of Object.keys(NOT_SHOP_SETTINGS))
			expect({ n, read: found.has(n) }).toEqual({ n, read: true });
	});

	describe("reads every declared variable", () => {
		const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "config-docs-"));
		afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));
		// OTLP on, so that the OTEL_* variables have an effect.
		const base = {
			JWT_SECRET: "s".repeat(40),
			DATA_DIR: dataDir,
			OTEL_TRACES_EXPORTER: "otlp"
		};
		const snapshot = (env: Record<string, string>): string => {
			const c = loadConfig(env) as unknown as Record<string, unknown>;
			return JSON.stringify(Object.keys(c).map(k => [k, c[k]]));
		};
		const before = snapshot(base);
		const generic = ["x-test", "a@b.test", "a=b", "127.0.0.1", "10mb", __filename, "shop_t"];

		it.each(NAMES)("%s", name => {
			const field = ENV_FIELDS[name];
			const baseValue = JSON.stringify(
				field.safeParse((base as Record<string, string>)[name]).data
			);
			const accepted = [...(describeField(field).accepts ?? []), ...generic].filter(c => {
				const r = field.safeParse(c);
				return r.success && JSON.stringify(r.data) !== baseValue;
			});
			expect({ name, accepted: accepted.length > 0 }).toEqual({ name, accepted: true });
			// One of them changes the config, or a rule between variables refuses it naming it.
			const effects = accepted.map(value => {
				try {
					return snapshot({ ...base, [name]: value }) !== before ? "changed" : "same";
				} catch (err) {
					return err instanceof ConfigError && err.message.includes(name)
						? "refused"
						: `threw ${String(err)}`;
				}
			});
			expect({ name, read: effects.some(e => e === "changed" || e === "refused") }).toEqual({
				name,
				read: true
			});
		});
	});
});
