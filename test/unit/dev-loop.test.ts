/**
 * The development loop's pieces that need no shop: `npm start`'s build step
 * (tools/build-if-changed.ts) on a small project of the same shape (a tsconfig.json with
 * `include`, a Vite app in web/), built by the real `tsc` and `vite`, and the one-process
 * launcher that runs it before the built script (bin/build-and-run.mjs); and how `npm run repl --
 * --connect` finds the nats-server of a running `npm run cluster` (tools/repl-connect.ts).
 */
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
	buildIfChanged,
	fingerprint,
	projectSteps,
	STAMP_FILE,
	type StepResult
} from "../../tools/build-if-changed";
import { clusterNatsUrls } from "../../tools/repl-connect";
import { runFile } from "../../tools/cluster-recovery";
import { processInfo } from "../../tools/process-info";

const ROOT = path.resolve(__dirname, "..", "..");

/** A project shaped like the shop's: tsconfig.json over src/, a Vite app in web/. */
function makeProject(): string {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-build-"));
	const write = (rel: string, text: string): void => {
		fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
		fs.writeFileSync(path.join(dir, rel), text);
	};
	write(
		"tsconfig.json",
		JSON.stringify({
			compilerOptions: {
				target: "ES2022",
				module: "commonjs",
				strict: true,
				types: [],
				skipLibCheck: true,
				incremental: true,
				tsBuildInfoFile: "dist/.tsbuildinfo",
				outDir: "dist",
				rootDir: "."
			},
			include: ["src"]
		})
	);
	write("src/greeting.ts", 'export const greeting: string = "hello";\n');
	write("src/lib/sum.ts", "export const sum = (a: number, b: number): number => a + b;\n");
	write(
		"web/vite.config.mts",
		[
			'import { fileURLToPath } from "node:url";',
			'import { defineConfig } from "vite";',
			"export default defineConfig({",
			'\troot: fileURLToPath(new URL(".", import.meta.url)),',
			'\tlogLevel: "warn",',
			'\tbuild: { outDir: fileURLToPath(new URL("../dist/web", import.meta.url)), emptyOutDir: true }',
			"});",
			""
		].join("\n")
	);
	write(
		"web/index.html",
		'<!doctype html><html><body><script type="module" src="/main.ts"></script></body></html>\n'
	);
	write("web/main.ts", 'document.title = "v1";\n');
	fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
	return dir;
}

const outcomes = (results: StepResult[]): Record<string, string> =>
	Object.fromEntries(results.map(r => [r.name, r.outcome]));
const mtime = (file: string): number => fs.statSync(file).mtimeMs;

describe("build-if-changed (npm start's build step)", () => {
	let dir: string;
	const build = (force = false): StepResult[] => buildIfChanged({ root: dir, force });
	const dist = (rel: string): string => path.join(dir, "dist", rel);

	beforeAll(() => {
		dir = makeProject();
	});
	afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

	it("builds everything the first time and writes the stamp", () => {
		const results = build();
		expect(outcomes(results)).toEqual({ server: "built", web: "built" });
		expect(results.map(r => r.reason)).toEqual(["no stamp", "no stamp"]);
		expect(require(dist("src/greeting.js")).greeting).toBe("hello");
		expect(fs.readFileSync(dist("web/index.html"), "utf8")).toMatch(/assets\/index-.*\.js/);
		expect(fs.existsSync(path.join(dir, STAMP_FILE))).toBe(true);
	}, 120_000);

	it("skips tsc and Vite when nothing changed: no output is rewritten", () => {
		const before = [dist("src/greeting.js"), dist(".tsbuildinfo"), dist("web/index.html")].map(
			mtime
		);
		expect(outcomes(build())).toEqual({ server: "skipped", web: "skipped" });
		expect(
			[dist("src/greeting.js"), dist(".tsbuildinfo"), dist("web/index.html")].map(mtime)
		).toEqual(before);
	});

	it("a touch without a change does not rebuild (content, not mtimes)", () => {
		const future = new Date(Date.now() + 60_000);
		fs.utimesSync(path.join(dir, "src/greeting.ts"), future, future);
		expect(outcomes(build())).toEqual({ server: "skipped", web: "skipped" });
	});

	it("rebuilds the server only after a source changes, and the output has the change", () => {
		fs.writeFileSync(path.join(dir, "src/greeting.ts"), 'export const greeting = "hi";\n');
		const results = build();
		expect(outcomes(results)).toEqual({ server: "built", web: "skipped" });
		expect(results[0]!.reason).toBe("sources changed");
		expect(fs.readFileSync(dist("src/greeting.js"), "utf8")).toMatch(/"hi"/);
		expect(outcomes(build())).toEqual({ server: "skipped", web: "skipped" });
	}, 60_000);

	it("a new source file counts as a change; a web change rebuilds the web app only", () => {
		fs.writeFileSync(path.join(dir, "src/lib/extra.ts"), "export const extra = 1;\n");
		fs.writeFileSync(path.join(dir, "web/main.ts"), 'document.title = "v2";\n');
		expect(outcomes(build())).toEqual({ server: "built", web: "built" });
		expect(fs.existsSync(dist("src/lib/extra.js"))).toBe(true);
		const js = fs
			.readdirSync(dist("web/assets"))
			.filter(f => f.endsWith(".js"))
			.map(f => fs.readFileSync(dist(`web/assets/${f}`), "utf8"))
			.join("");
		expect(js).toMatch(/v2/);
	}, 120_000);

	it("rebuilds when an output was deleted, although tsc's incremental state says it is done", () => {
		fs.rmSync(dist("src/lib/sum.js"));
		const results = build();
		expect(outcomes(results)).toEqual({ server: "built", web: "skipped" });
		expect(results[0]!.reason).toBe(`missing ${path.join("dist", "src", "lib", "sum.js")}`);
		expect(fs.existsSync(dist("src/lib/sum.js"))).toBe(true);
	}, 60_000);

	it("rebuilds when another build wrote dist/ since (then the outputs may be of other sources)", () => {
		const src = path.join(dir, "src/greeting.ts");
		const original = fs.readFileSync(src, "utf8");
		fs.writeFileSync(src, 'export const greeting = "other";\n');
		const tsc = spawnSync(path.join(ROOT, "node_modules", ".bin", "tsc"), ["-p", "."], {
			cwd: dir
		});
		expect(tsc.status).toBe(0);
		fs.writeFileSync(src, original);
		// The sources are those of the stamp again, but dist/ holds "other".
		const results = build();
		expect(results[0]!.outcome).toBe("built");
		expect(results[0]!.reason).toMatch(/rewritten by another build/);
		expect(fs.readFileSync(dist("src/greeting.js"), "utf8")).toMatch(/"hi"/);
	}, 60_000);

	it("a failed tsc leaves no stamp for the step: the next run tries again", () => {
		const src = path.join(dir, "src/greeting.ts");
		const original = fs.readFileSync(src, "utf8");
		fs.writeFileSync(src, "export const greeting: number = 'not a number';\n");
		const failed = buildIfChanged({ root: dir, only: ["server"] });
		expect(failed.map(r => [r.name, r.outcome])).toEqual([["server", "failed"]]);
		expect(failed[0]!.status).not.toBe(0);
		fs.writeFileSync(src, original);
		// Same sources as the last successful build, but that build's stamp is gone.
		expect(outcomes(buildIfChanged({ root: dir, only: ["server"] }))).toEqual({
			server: "built"
		});
		expect(outcomes(build())).toEqual({ server: "skipped", web: "skipped" });
	}, 60_000);

	it("runs as `node tools/build-if-changed.ts` (Node's type stripping, no build, no warning)", () => {
		const run = spawnSync(
			process.execPath,
			[
				"--disable-warning=MODULE_TYPELESS_PACKAGE_JSON",
				path.join(ROOT, "tools", "build-if-changed.ts"),
				"--root",
				dir
			],
			{ cwd: ROOT, encoding: "utf8" }
		);
		expect(run.stderr).toBe("");
		expect(run.status).toBe(0);
		expect(run.stdout).toMatch(/\[build\] server: up to date/);
		expect(run.stdout).toMatch(/\[build\] web: up to date/);
		const bad = spawnSync(
			process.execPath,
			[path.join(ROOT, "tools", "build-if-changed.ts"), "--bogus"],
			{ cwd: dir, encoding: "utf8" }
		);
		expect(bad.status).toBe(2);
	});

	it("the shop's own steps read tsconfig.json: every include folder is an input of tsc", () => {
		const [server, web] = projectSteps(ROOT);
		const tsconfig = JSON.parse(fs.readFileSync(path.join(ROOT, "tsconfig.json"), "utf8"));
		expect(server!.inputs).toEqual(
			expect.arrayContaining(["tsconfig.json", "package-lock.json", ...tsconfig.include])
		);
		expect(server!.outputs(ROOT)).toContain(path.join("dist", "bin", "start.js"));
		expect(web!.inputs).toContain("web");
		// The fingerprint covers content: two projects differing in one byte differ.
		const a = makeProject();
		const b = makeProject();
		try {
			expect(fingerprint(a, ["src"])).toBe(fingerprint(b, ["src"]));
			fs.appendFileSync(path.join(b, "src/lib/sum.ts"), " ");
			expect(fingerprint(a, ["src"])).not.toBe(fingerprint(b, ["src"]));
		} finally {
			fs.rmSync(a, { recursive: true, force: true });
			fs.rmSync(b, { recursive: true, force: true });
		}
	});
});

describe("bin/build-and-run.mjs (npm start in one process: build check, .env, the built script)", () => {
	let dir: string;
	const launch = (
		args: string[],
		env: Record<string, string> = {}
	): { status: number | null; stdout: string; stderr: string } =>
		spawnSync(
			process.execPath,
			[
				"--disable-warning=MODULE_TYPELESS_PACKAGE_JSON",
				path.join(ROOT, "bin", "build-and-run.mjs"),
				...args
			],
			{ cwd: dir, encoding: "utf8", env: { ...process.env, ...env } }
		);
	/** What src/main.ts printed: its arguments and two variables. */
	const printed = (stdout: string): unknown =>
		JSON.parse(stdout.split("\n").find(l => l.startsWith("{"))!);

	beforeAll(() => {
		dir = makeProject();
		fs.writeFileSync(
			path.join(dir, "src", "main.ts"),
			[
				"declare const process: { argv: string[]; env: Record<string, string | undefined> };",
				"console.log(JSON.stringify({ version: 1, argv: process.argv.slice(2), a: process.env.SHOP_LAUNCH_A ?? null, b: process.env.SHOP_LAUNCH_B ?? null }));",
				""
			].join("\n")
		);
		fs.writeFileSync(path.join(dir, ".env"), "SHOP_LAUNCH_A=file\nSHOP_LAUNCH_B=file\n");
	});
	afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

	it("builds a fresh checkout, then runs the script with its arguments and .env (the environment wins)", () => {
		const run = launch(["--only", "server", "dist/src/main.js", "x", "--y"], {
			SHOP_LAUNCH_A: "shell"
		});
		expect(run.stderr).toBe("");
		expect(run.status).toBe(0);
		expect(run.stdout).toMatch(/\[build\] server: no stamp: tsc/);
		expect(printed(run.stdout)).toEqual({
			version: 1,
			argv: ["x", "--y"],
			a: "shell",
			b: "file"
		});
	}, 60_000);

	it("skips the build when nothing changed, rebuilds after an edit, and runs the new code", () => {
		const same = launch(["--only", "server", "dist/src/main.js"]);
		expect(same.status).toBe(0);
		expect(same.stdout).toMatch(/\[build\] server: up to date/);
		expect(printed(same.stdout)).toMatchObject({ version: 1, a: "file" });

		const src = path.join(dir, "src", "main.ts");
		fs.writeFileSync(src, fs.readFileSync(src, "utf8").replace("version: 1", "version: 2"));
		const edited = launch(["--only", "server", "dist/src/main.js"]);
		expect(edited.status).toBe(0);
		expect(edited.stdout).toMatch(/\[build\] server: sources changed: tsc/);
		expect(printed(edited.stdout)).toMatchObject({ version: 2 });
	}, 60_000);

	it("a failed build stops there: its exit status, the script not run", () => {
		const src = path.join(dir, "src", "main.ts");
		const original = fs.readFileSync(src, "utf8");
		fs.writeFileSync(src, "const n: number = 'not a number';\n" + original);
		try {
			const run = launch(["--only", "server", "dist/src/main.js"]);
			expect(run.status).not.toBe(0);
			expect(run.stderr).toMatch(/\[build\] server failed/);
			expect(run.stdout).not.toMatch(/"version"/);
		} finally {
			fs.writeFileSync(src, original);
		}
		expect(launch([]).status).toBe(2);
	}, 60_000);
});

describe("npm run repl -- --connect: the transporter of a running npm run cluster", () => {
	it("reads the nats-server's address from DATA_DIR/cluster-processes.json and its command line", async () => {
		const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-repl-connect-"));
		// A process with the cluster's nats-server's arguments (a node that just waits).
		const fake = spawn(
			process.execPath,
			["-e", "setTimeout(() => {}, 30000)", "--", "-a", "127.0.0.1", "-p", "4999"],
			{ stdio: "ignore" }
		);
		try {
			await new Promise(r => setTimeout(r, 200));
			const info = processInfo(fake.pid!);
			expect(info?.argv).toContain("-p");
			expect(clusterNatsUrls(dataDir)).toBeNull();
			fs.writeFileSync(
				runFile(dataDir),
				JSON.stringify({
					supervisor: { pid: process.pid, startTime: "0" },
					groups: [
						{
							pgid: fake.pid,
							startTime: info!.startTime,
							what: "nats-server",
							tier: 3
						},
						{ pgid: fake.pid, startTime: info!.startTime, what: "npm run db", tier: 3 }
					]
				})
			);
			expect(clusterNatsUrls(dataDir)).toBe("nats://127.0.0.1:4999");
			// A recorded server that is gone (another start time: the pid was reused) is not used.
			fs.writeFileSync(
				runFile(dataDir),
				JSON.stringify({
					supervisor: { pid: process.pid, startTime: "0" },
					groups: [{ pgid: fake.pid, startTime: "1", what: "nats-server", tier: 3 }]
				})
			);
			expect(clusterNatsUrls(dataDir)).toBeNull();
		} finally {
			fake.kill("SIGKILL");
			fs.rmSync(dataDir, { recursive: true, force: true });
		}
	});
});
