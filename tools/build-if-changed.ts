/**
 * `npm start`'s build step: runs `tsc` and the Vite build only when their sources changed since
 * the last build, so that the second start of an unchanged checkout goes straight to the shop.
 *
 * Each step (`server`: `tsc -p .`; `web`: `vite build`) has a fingerprint: the SHA-256 of the
 * relative path and content of every input file (the server: `tsconfig.json`, its `include`
 * folders and `package-lock.json`; the web app: `web/` and `package-lock.json`). The fingerprints
 * of the last successful build are kept in `dist/.build-stamp.json`. A step runs when its
 * fingerprint differs from the stamp, when one of its outputs is missing (the server: a `.js` in
 * `dist/` for every `.ts` source, since `tsc --incremental` trusts its `.tsbuildinfo` and would not
 * emit a deleted output again; the web app: `dist/web/index.html`), or when another build wrote
 * `dist/` since (the mtime of `dist/.tsbuildinfo` or `dist/web/index.html` differs from the stamp's).
 * Content, not mtimes, for the sources: a `git checkout` back and forth or a `touch` does not
 * rebuild; `--force` does.
 *
 * Run by Node's own TypeScript type stripping, without a build (`node tools/build-if-changed.ts`),
 * so only erasable syntax and `node:` imports here; the project root is the working directory (npm
 * runs scripts there) or `--root <dir>`.
 *
 * CLI: `node --disable-warning=MODULE_TYPELESS_PACKAGE_JSON tools/build-if-changed.ts
 *   [--only server|web] [--force] [--root <dir>]`; exit status 0, or the failed step's.
 */
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

/** One build step: what it reads, what it must leave behind, the command that builds. */
export interface BuildStep {
	readonly name: string;
	/** Files and folders (relative to the root) whose content decides whether to build. */
	readonly inputs: readonly string[];
	/** Relative paths of files the build must have produced (checked on every run). */
	outputs(root: string): string[];
	/** Program (a `node_modules/.bin` name) and arguments. */
	readonly command: readonly [string, ...string[]];
	/** Files removed before building when an output is missing (tsc's incremental state). */
	readonly resetOnMissingOutput?: readonly string[];
	/**
	 * A file every build of this step rewrites (relative): its mtime is kept in the stamp, so that
	 * a build by other means since (a plain `tsc`, of other sources) is noticed and built again.
	 */
	readonly witness: string;
}

export interface StepResult {
	readonly name: string;
	/** `skipped`: up to date; `built`: the command ran and succeeded; `failed`: it exited non-zero. */
	readonly outcome: "skipped" | "built" | "failed";
	/** Why it was built (`sources changed`, `no stamp`, `missing dist/bin/start.js`, `--force`). */
	readonly reason?: string;
	/** The command's exit status when it ran. */
	readonly status?: number | null;
	/** Time spent on this step, ms. */
	readonly ms: number;
}

export interface BuildOptions {
	readonly root: string;
	/** Build only these steps (by name); all by default. */
	readonly only?: readonly string[];
	/** Build even when up to date. */
	readonly force?: boolean;
	/** Progress lines (`[build] ...`). */
	readonly log?: (message: string) => void;
}

/** Where the fingerprints of the last successful build are kept, relative to the root. */
export const STAMP_FILE = path.join("dist", ".build-stamp.json");

interface Stamp {
	version: 2;
	/** Per step: the inputs' fingerprint and the witness's mtime (ms) after the build. */
	steps: Record<string, { inputs: string; witnessMtimeMs: number | null }>;
}

/** Names skipped while walking inputs: editor and OS litter. */
function ignored(name: string): boolean {
	return name.startsWith(".") || name.endsWith("~") || name === "node_modules";
}

/** Every file under `rel` (a file or folder, relative to `root`), sorted, as relative paths. */
function listFiles(root: string, rel: string): string[] {
	let stat: fs.Stats;
	try {
		stat = fs.statSync(path.join(root, rel));
	} catch {
		return [];
	}
	if (stat.isFile()) return [rel];
	if (!stat.isDirectory()) return [];
	const out: string[] = [];
	for (const entry of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
		if (ignored(entry.name)) continue;
		const child = path.join(rel, entry.name);
		if (entry.isDirectory()) out.push(...listFiles(root, child));
		else if (entry.isFile()) out.push(child);
	}
	return out.sort();
}

/**
 * The fingerprint of a step's inputs: SHA-256 (hex) over each file's relative path and content;
 * an input that does not exist counts as absent (so creating it changes the fingerprint).
 */
export function fingerprint(root: string, inputs: readonly string[]): string {
	const hash = crypto.createHash("sha256");
	for (const input of inputs) {
		const files = listFiles(root, input);
		hash.update(`input ${input} ${files.length}\0`);
		for (const file of files) {
			hash.update(`${file}\0`);
			hash.update(fs.readFileSync(path.join(root, file)));
			hash.update("\0");
		}
	}
	return hash.digest("hex");
}

function readStamp(root: string): Stamp {
	try {
		const stamp = JSON.parse(fs.readFileSync(path.join(root, STAMP_FILE), "utf8")) as Stamp;
		if (stamp.version === 2 && typeof stamp.steps === "object" && stamp.steps) return stamp;
	} catch {
		// none yet, or damaged: every step builds
	}
	return { version: 2, steps: {} };
}

function mtimeMs(root: string, rel: string): number | null {
	return fs.statSync(path.join(root, rel), { throwIfNoEntry: false })?.mtimeMs ?? null;
}

function writeStamp(root: string, stamp: Stamp): void {
	const file = path.join(root, STAMP_FILE);
	fs.mkdirSync(path.dirname(file), { recursive: true });
	fs.writeFileSync(`${file}.tmp`, JSON.stringify(stamp, null, "\t") + "\n");
	fs.renameSync(`${file}.tmp`, file);
}

/** `tsconfig.json`'s `compilerOptions.outDir` and `include` (the project's is plain JSON). */
export function readTsconfig(root: string): {
	outDir: string;
	include: string[];
	buildInfo: string;
} {
	const tsconfig = JSON.parse(fs.readFileSync(path.join(root, "tsconfig.json"), "utf8")) as {
		compilerOptions?: { outDir?: string; tsBuildInfoFile?: string };
		include?: string[];
	};
	const outDir = tsconfig.compilerOptions?.outDir ?? "dist";
	return {
		outDir,
		include: tsconfig.include ?? ["."],
		buildInfo:
			tsconfig.compilerOptions?.tsBuildInfoFile ?? path.join(outDir, "tsconfig.tsbuildinfo")
	};
}

/**
 * The project's steps: `server` (`tsc -p .` over tsconfig.json's `include`) and `web`
 * (`vite build --config web/vite.config.mts` into `dist/web`).
 */
export function projectSteps(root: string): BuildStep[] {
	const ts = readTsconfig(root);
	const tsInputs = ["tsconfig.json", "package-lock.json", ...ts.include];
	return [
		{
			name: "server",
			inputs: tsInputs,
			outputs: r =>
				ts.include
					.flatMap(dir => listFiles(r, dir))
					.filter(f => f.endsWith(".ts") && !f.endsWith(".d.ts"))
					.map(f => path.join(ts.outDir, f.replace(/\.ts$/, ".js"))),
			command: ["tsc", "-p", "."],
			resetOnMissingOutput: [ts.buildInfo],
			witness: ts.buildInfo
		},
		{
			name: "web",
			inputs: ["web", "package-lock.json"],
			outputs: () => [path.join("dist", "web", "index.html")],
			command: ["vite", "build", "--config", path.join("web", "vite.config.mts")],
			witness: path.join("dist", "web", "index.html")
		}
	];
}

/** `node_modules/.bin/<name>` of the root (or of a folder above it), else `<name>` from PATH. */
function binary(root: string, name: string): string {
	for (let dir = path.resolve(root); ; dir = path.dirname(dir)) {
		const candidate = path.join(dir, "node_modules", ".bin", name);
		if (fs.existsSync(candidate)) return candidate;
		if (path.dirname(dir) === dir) return name;
	}
}

/**
 * Builds the steps whose inputs changed (see the file comment); stops at the first failure.
 * @returns one result per step considered, in order
 */
export function buildIfChanged(opts: BuildOptions, steps = projectSteps(opts.root)): StepResult[] {
	const log = opts.log ?? (() => undefined);
	const results: StepResult[] = [];
	for (const step of steps) {
		if (opts.only && !opts.only.includes(step.name)) continue;
		const t0 = Date.now();
		const stamp = readStamp(opts.root);
		const print = fingerprint(opts.root, step.inputs);
		const missing = step.outputs(opts.root).find(f => !fs.existsSync(path.join(opts.root, f)));
		const last = stamp.steps[step.name];
		const reason = opts.force
			? "--force"
			: last === undefined
				? "no stamp"
				: missing !== undefined
					? `missing ${missing}`
					: last.inputs !== print
						? "sources changed"
						: last.witnessMtimeMs !== mtimeMs(opts.root, step.witness)
							? `${step.witness} rewritten by another build`
							: undefined;
		if (reason === undefined) {
			results.push({ name: step.name, outcome: "skipped", ms: Date.now() - t0 });
			log(`${step.name}: up to date (${Date.now() - t0} ms), not rebuilt`);
			continue;
		}
		if (missing !== undefined)
			for (const f of step.resetOnMissingOutput ?? [])
				fs.rmSync(path.join(opts.root, f), { force: true });
		// A build that dies half-way must not leave a stamp saying it is done.
		delete stamp.steps[step.name];
		writeStamp(opts.root, stamp);
		const [program, ...args] = step.command;
		log(`${step.name}: ${reason}: ${program} ${args.join(" ")}`);
		const run = spawnSync(binary(opts.root, program), args, {
			cwd: opts.root,
			stdio: "inherit"
		});
		if (run.status !== 0) {
			if (run.error) log(`${step.name}: ${run.error.message}`);
			results.push({
				name: step.name,
				outcome: "failed",
				reason,
				status: run.status,
				ms: Date.now() - t0
			});
			return results;
		}
		// The fingerprint taken before the build: an edit made during it builds again next time.
		const after = readStamp(opts.root);
		after.steps[step.name] = {
			inputs: print,
			witnessMtimeMs: mtimeMs(opts.root, step.witness)
		};
		writeStamp(opts.root, after);
		results.push({ name: step.name, outcome: "built", reason, status: 0, ms: Date.now() - t0 });
		log(`${step.name}: built in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
	}
	return results;
}

function parseArgs(argv: readonly string[]): BuildOptions {
	let root = process.cwd();
	let only: string[] | undefined;
	let force = false;
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i];
		if (arg === "--force") force = true;
		else if (arg === "--only" && argv[i + 1]) only = argv[++i]!.split(",");
		else if (arg === "--root" && argv[i + 1]) root = path.resolve(argv[++i]!);
		else
			throw new Error(
				`unknown argument "${arg}"\nusage: node tools/build-if-changed.ts [--only server|web] [--force] [--root <dir>]`
			);
	}
	return { root, only, force, log: m => console.log(`[build] ${m}`) };
}

// Run as a script (not when a test imports it).
if (/build-if-changed\.[jt]s$/.test(process.argv[1] ?? "")) {
	let opts: BuildOptions;
	try {
		opts = parseArgs(process.argv.slice(2));
	} catch (err) {
		console.error(`[build] ${(err as Error).message}`);
		process.exit(2);
	}
	const failed = buildIfChanged(opts).find(r => r.outcome === "failed");
	if (failed) {
		console.error(`[build] ${failed.name} failed (exit status ${failed.status})`);
		process.exit(failed.status || 1);
	}
}
