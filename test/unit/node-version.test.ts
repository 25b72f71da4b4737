/**
 * One Node version, said the same everywhere: `.nvmrc`, package.json's `engines` and its pinned
 * runtime (the `node` devDependency that `npm ci` installs and every npm script runs on), the
 * Dockerfile's base images and the README's first lines, and the runtime running this suite.
 */
import fs from "node:fs";
import path from "node:path";

const ROOT = path.resolve(__dirname, "..", "..");
const read = (rel: string): string => fs.readFileSync(path.join(ROOT, rel), "utf8");

describe("the Node version", () => {
	const nvmrc = read(".nvmrc").trim();
	const pkg = JSON.parse(read("package.json")) as {
		engines: { node: string };
		devDependencies: Record<string, string>;
	};
	const major = /^\d+$/.test(nvmrc) ? nvmrc : "(.nvmrc is not a major version)";

	it("is one major in .nvmrc, engines and the pinned runtime", () => {
		expect(nvmrc).toMatch(/^\d+$/);
		expect(pkg.engines.node).toBe(`>=${major}`);
		expect(pkg.devDependencies.node).toMatch(new RegExp(`^\\^${major}\\.`));
		expect(process.versions.node.split(".")[0]).toBe(major);
	});

	it("is the Dockerfile's base image and what the README says", () => {
		const froms = [...read("Dockerfile").matchAll(/^FROM\s+node:(\d+)\b/gm)].map(m => m[1]);
		expect(froms.length).toBeGreaterThan(0);
		for (const f of froms) expect(f).toBe(major);
		const readme = read("README.md").split("\n").slice(0, 20).join("\n");
		expect(readme).toContain(`The shop runs on Node ${major}`);
		expect(readme).toContain(`\`.nvmrc\` says \`${major}\``);
		expect(readme).toContain(`\`engines\` \`>=${major}\``);
	});
});
