/* global process, console */
/**
 * `npm start` (and `npm run cluster`, `npm run repl`) in ONE Node process: the build check of
 * tools/build-if-changed.ts, then `.env`, then the built script, with Node's compile cache on for
 * all of it. Plain JavaScript, run without a build (it runs before there is one).
 *
 * What one process saves on a start of an unchanged checkout, against
 * `node tools/build-if-changed.ts && node --env-file-if-exists=.env dist/bin/start.js`: a second
 * Node start-up and shell, and, through the compile cache (bin/compile-cache.ts), the TypeScript
 * type stripping of tools/build-if-changed.ts (Node loads its WebAssembly stripper only on a
 * cache miss) and the compilation of the shop's modules.
 *
 * `.env` is read after the build (`process.loadEnvFile`, the rules of Node's
 * `--env-file-if-exists`: a variable already set in the environment wins), so `tsc` and Vite get
 * the environment the command was started with, as before. One difference: a `NODE_OPTIONS` line
 * in `.env` does not apply (the process has started).
 *
 * CLI: `node --disable-warning=MODULE_TYPELESS_PACKAGE_JSON bin/build-and-run.mjs
 *   [--only server|web] <built script> [its arguments...]`, e.g. `dist/bin/start.js`; exit status
 * that of the failed build step, else the script's.
 */
import fs from "node:fs";
import nodeModule from "node:module";
import path from "node:path";

nodeModule.enableCompileCache();

const argv = process.argv.slice(2);
const only = argv[0] === "--only" ? argv.splice(0, 2)[1].split(",") : undefined;
const [script, ...scriptArgs] = argv;
if (!script) {
	console.error(
		"usage: node bin/build-and-run.mjs [--only server|web] <built script> [arguments...]"
	);
	process.exit(2);
}

const root = process.cwd();
const { buildIfChanged } = await import("../tools/build-if-changed.ts");
const failed = buildIfChanged({ root, only, log: m => console.log(`[build] ${m}`) }).find(
	r => r.outcome === "failed"
);
if (failed) {
	console.error(`[build] ${failed.name} failed (exit status ${failed.status})`);
	process.exit(failed.status || 1);
}

const envFile = path.join(root, ".env");
if (fs.existsSync(envFile)) process.loadEnvFile(envFile);
else console.log(".env not found. Continuing without it."); // as --env-file-if-exists says it

// The script sees the command line it would have had as `node <script> [arguments...]`.
const scriptPath = path.resolve(root, script);
process.argv = [process.argv[0], scriptPath, ...scriptArgs];
nodeModule.createRequire(scriptPath)(scriptPath);
