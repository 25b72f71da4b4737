/**
 * docs/architecture.md and its "Layout" section name the tree as it is: every source file it
 * points at exists, every folder of platform/ and services/ is on the page, and the folders the
 * layout lists exist (fastify's habit: docs checked against the code).
 */
import fs from "node:fs";
import path from "node:path";

const ROOT = path.join(__dirname, "..", "..");
const read = (rel: string): string => fs.readFileSync(path.join(ROOT, rel), "utf8");
const ARCH = read("docs/architecture.md");
const LAYOUT = (() => {
	const start = ARCH.indexOf("\n## Layout\n");
	if (start < 0) throw new Error('docs/architecture.md has no "## Layout" section');
	const block = /```\n([\s\S]*?)```/.exec(ARCH.slice(start));
	return block?.[1] ?? "";
})();

/** The `app/…`, `platform/…` (etc.) paths of source files a text names. */
function sourcePaths(text: string): string[] {
	const re =
		/(?<![\w/.-])((?:app|platform|services|mixins|tools|bin|test)\/[\w./<>-]*?\.ts)(?![\w.-])/g;
	return [...new Set([...text.matchAll(re)].map(m => m[1]!))].filter(p => !p.includes("<"));
}

const dirs = (rel: string): string[] =>
	fs
		.readdirSync(path.join(ROOT, rel), { withFileTypes: true })
		.filter(d => d.isDirectory())
		.map(d => d.name);

describe("docs/architecture.md and its layout", () => {
	it("point only at source files that exist", () => {
		const paths = [...sourcePaths(ARCH), ...sourcePaths(LAYOUT)];
		expect(paths.length).toBeGreaterThan(20);
		expect(paths.filter(p => !fs.existsSync(path.join(ROOT, p)))).toEqual([]);
	});

	it("name every folder of platform/ and every service", () => {
		for (const d of dirs("platform")) expect(ARCH).toContain(`${d}/`);
		for (const s of dirs("services")) expect(ARCH + LAYOUT).toContain(s);
	});

	it("list top-level folders that exist, and every top-level source folder", () => {
		const listed = [...LAYOUT.matchAll(/^([\w.-]+)\//gm)].map(m => m[1]!);
		expect(listed.filter(d => !fs.existsSync(path.join(ROOT, d)))).toEqual([]);
		for (const d of ["app", "platform", "services", "mixins", "tools", "bin", "web", "test"])
			expect(listed).toContain(d);
	});
});
