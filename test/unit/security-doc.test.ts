/**
 * docs/security.md's "who can call what" table says exactly what the gateway enforces: every
 * route of `API_ALIASES` and `STREAM_ALIASES` (and the probes) is listed once, in the row of its
 * `auth` (anyone, a customer, an admin), and the table lists no route the gateway does not have.
 * (An audit found the table six routes short; this keeps it in step with services/api/api.service.ts.)
 */
import fs from "node:fs";
import path from "node:path";
import { API_ALIASES, STREAM_ALIASES } from "../../services/api/routes";

const ROOT = path.join(__dirname, "..", "..");

/** The routes named in one row of the table (`METHOD /path` in back-quotes). */
function routesOfRow(doc: string, who: string): string[] {
	const row = doc.split("\n").find(l => l.startsWith(`| ${who}`));
	if (!row) throw new Error(`docs/security.md has no row "${who}"`);
	return [...row.matchAll(/`((?:GET|POST|PUT|PATCH|DELETE) \/[^`]*)`/g)].map(m => m[1]!);
}

describe("docs/security.md: who can call what", () => {
	const doc = fs.readFileSync(path.join(ROOT, "docs", "security.md"), "utf8");
	const table: Record<string, string[]> = {
		anyone: routesOfRow(doc, "anyone (no token)"),
		customer: routesOfRow(doc, "a customer (any valid token)"),
		admin: routesOfRow(doc, "an admin (token with role `admin`)")
	};
	const routes: Record<string, string[]> = { anyone: ["GET /health", "GET /ready"] };
	const aliases: Record<string, { auth?: string }> = { ...API_ALIASES, ...STREAM_ALIASES };
	for (const [key, a] of Object.entries(aliases)) {
		const [method, p] = key.split(" ");
		(routes[a.auth ?? "anyone"] ??= []).push(`${method} /api/${p}`);
	}

	it.each(["anyone", "customer", "admin"])("lists exactly the %s routes in their row", who => {
		expect([...table[who]!].sort()).toEqual([...(routes[who] ?? [])].sort());
	});

	it("lists each route once", () => {
		const all = Object.values(table).flat();
		expect(all.length).toBe(new Set(all).size);
	});
});
