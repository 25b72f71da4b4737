/**
 * Checks of an OpenAPI document for the suites: validity against the OpenAPI 3.1 schema
 * (@seriousme/openapi-schema-validator, an ES module: run in a child Node process, since jest's
 * CommonJS runtime cannot import it), and the `$ref`s that point nowhere.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const ROOT = path.resolve(__dirname, "..", "..");

/** Validates `doc`: `{ valid, version, errors }` as the validator reports them. */
export function validateOpenApi(doc: unknown): {
	valid: boolean;
	version: string;
	errors: unknown;
} {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-openapi-"));
	const file = path.join(dir, "openapi.json");
	fs.writeFileSync(file, JSON.stringify(doc));
	try {
		const script = `
			import { Validator } from "@seriousme/openapi-schema-validator";
			import fs from "node:fs";
			const validator = new Validator();
			const res = await validator.validate(JSON.parse(fs.readFileSync(process.argv[1], "utf8")));
			process.stdout.write(JSON.stringify({ valid: res.valid, version: validator.version, errors: res.errors ?? null }));`;
		const run = spawnSync(process.execPath, ["--input-type=module", "-e", script, file], {
			cwd: ROOT,
			encoding: "utf8"
		});
		if (run.status !== 0) throw new Error(`validator failed: ${run.stderr}`);
		return JSON.parse(run.stdout) as { valid: boolean; version: string; errors: unknown };
	} finally {
		fs.rmSync(dir, { recursive: true, force: true });
	}
}

/** Every local `$ref` of `doc` that does not resolve. */
export function danglingRefs(doc: unknown): string[] {
	const out: string[] = [];
	const resolve = (pointer: string): boolean => {
		let node: unknown = doc;
		for (const part of pointer.replace(/^#\//, "").split("/")) {
			if (node === null || typeof node !== "object") return false;
			node = (node as Record<string, unknown>)[part.replace(/~1/g, "/").replace(/~0/g, "~")];
		}
		return node !== undefined;
	};
	const walk = (node: unknown): void => {
		if (Array.isArray(node)) node.forEach(walk);
		else if (node && typeof node === "object")
			for (const [k, v] of Object.entries(node)) {
				if (k === "$ref" && typeof v === "string" && (!v.startsWith("#/") || !resolve(v)))
					out.push(v);
				else walk(v);
			}
	};
	walk(doc);
	return out;
}
