/**
 * The environment parsers of platform/config.ts: one variable each, read, trimmed, checked and
 * turned into a value, or a `ConfigError` naming the variable (fastify's habit: start-up options
 * validated once). A URL in an error is redacted: it may carry a password.
 */
import fs from "node:fs";
import path from "node:path";
import { redactUrl } from "../nats-options";

/** Thrown at start-up when the environment is invalid; the process should exit. */
export class ConfigError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "ConfigError";
	}
}

export type Env = Record<string, string | undefined>;

export function str(env: Env, name: string): string | null {
	const v = env[name];
	return v === undefined || v.trim() === "" ? null : v.trim();
}

export function int(env: Env, name: string, def: number, min: number, max: number): number {
	const raw = str(env, name);
	if (raw === null) return def;
	if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be an integer, got "${raw}"`);
	const n = Number(raw);
	if (n < min || n > max) throw new ConfigError(`${name} must be in [${min}, ${max}], got ${n}`);
	return n;
}

export function bool(env: Env, name: string, def: boolean): boolean {
	const raw = str(env, name);
	if (raw === null) return def;
	if (raw === "true" || raw === "1") return true;
	if (raw === "false" || raw === "0") return false;
	throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

export function url(env: Env, name: string, protocols: string[]): string | null {
	const raw = str(env, name);
	if (raw === null) return null;
	let parsed: URL;
	try {
		parsed = new URL(raw);
	} catch {
		// Redacted: a URL may carry a password (DATABASE_URL, TRANSPORTER, CACHER).
		throw new ConfigError(`${name} is not a URL: "${redactUrl(raw)}"`);
	}
	if (!protocols.includes(parsed.protocol))
		throw new ConfigError(
			`${name} must use ${protocols.join(" or ")}, got "${parsed.protocol}"`
		);
	return raw;
}

/** A file path setting `name` (its value `raw`): `null` when unset; the file must be readable. */
export function readableFile(name: string, raw: string | null): string | null {
	if (raw === null) return null;
	const file = path.resolve(raw);
	try {
		fs.accessSync(file, fs.constants.R_OK);
	} catch {
		throw new ConfigError(`${name}: cannot read "${file}"`);
	}
	return file;
}
