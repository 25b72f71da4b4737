/**
 * The kinds of environment variable of the config schema (platform/config/schema.ts), as zod 4
 * schemas: each reads one variable's raw value (trimmed; unset or blank = not set), checks it and
 * turns it into a value, or adds an issue whose message follows the variable's name
 * (`must be an integer, got "x"`; `formatIssue` puts the name in front, unless the message
 * starts with it). Each also records how the generated documentation shows it
 * (`describeField`: type, default, secret).
 *
 * A URL in a message is redacted: it may carry a password.
 */
import fs from "node:fs";
import path from "node:path";
import { z } from "zod";
import { redactUrl } from "../nats-options";

/** How the documentation shows one variable (tools/config-docs.ts). */
export interface FieldDoc {
	/** Its type and bounds, e.g. `integer 0–65535`, `URL (postgres:, postgresql:)`. */
	readonly type: string;
	/** Its default, as the table shows it (`—` when it has none). */
	readonly default: string;
	/**
	 * `value`: the value is a secret; `url`: a URL whose user or password may be one. The table
	 * says so; test/unit/config-docs.test.ts checks that every variable whose placeholder
	 * platform/security/secrets.ts refuses in production is marked.
	 */
	readonly secret?: "value" | "url";
	/** Values the field accepts, for the tests (bounds of an integer, choices, URL schemes). */
	readonly accepts?: readonly string[];
}

/** Options every kind takes: the default's text when the code computes it after the parse. */
interface Common {
	/** The default as documented, when it is not a constant of the schema (e.g. `hostname-pid`). */
	readonly defaultDoc?: string;
	readonly secret?: "value" | "url";
}

const docs = new WeakMap<z.ZodType, FieldDoc>();

/** The documentation of a field built here; throws for any other schema. */
export function describeField(schema: z.ZodType): FieldDoc {
	const d = docs.get(schema);
	if (!d) throw new Error("not a field of platform/config/fields.ts");
	return d;
}

function documented<T extends z.ZodType>(schema: T, doc: FieldDoc): T {
	docs.set(schema, doc);
	return schema;
}

/** An issue's message, prefixed with its variable's name: `PORT must be an integer, got "x"`. */
export function formatIssue(issue: { path: readonly PropertyKey[]; message: string }): string {
	const name = String(issue.path[0] ?? "");
	if (!name || issue.message.startsWith(name)) return issue.message;
	return issue.message.startsWith(":") ? `${name}${issue.message}` : `${name} ${issue.message}`;
}

/** The raw value: trimmed, `null` when unset or blank. */
const raw = z
	.string()
	.optional()
	.transform(v => (v === undefined || v.trim() === "" ? null : v.trim()));

type Ctx = z.RefinementCtx;
function fail(ctx: Ctx, message: string): never {
	ctx.addIssue({ code: "custom", message });
	return z.NEVER;
}

const DAY = 24 * 3600_000;
/** `604800000 (7 d)` for a duration in ms; the number alone otherwise. */
function showInt(n: number, ms: boolean): string {
	if (!ms || n < 60_000) return String(n);
	const unit =
		n % DAY === 0
			? `${n / DAY} d`
			: n % 3600_000 === 0
				? `${n / 3600_000} h`
				: n % 60_000 === 0
					? `${n / 60_000} min`
					: null;
	return unit ? `${n} (${unit})` : String(n);
}

/**
 * An integer in [min, max] (decimal digits only: no sign, no fraction).
 * @param def - the default; `null`: the code computes it after the parse (say how in `defaultDoc`)
 * @param opts.ms - a duration in ms (the docs show `604800000 (7 d)`)
 * @param opts.unit - the unit the docs show otherwise (`seconds`)
 */
export function int<D extends number | null>(
	def: D,
	min: number,
	max: number,
	opts: Common & { ms?: boolean; unit?: string } = {}
): z.ZodType<number | D, string | undefined> {
	const schema = raw.transform((v, ctx): number | D => {
		if (v === null) return def;
		if (!/^\d+$/.test(v)) return fail(ctx, `must be an integer, got "${v}"`);
		const n = Number(v);
		if (n < min || n > max) return fail(ctx, `must be in [${min}, ${max}], got ${n}`);
		return n;
	});
	return documented(schema, {
		type: `integer ${min}–${max}${opts.ms ? " (ms)" : opts.unit ? ` (${opts.unit})` : ""}`,
		default: opts.defaultDoc ?? (def === null ? "—" : showInt(def, opts.ms === true)),
		accepts: [String(min), String(max)]
	});
}

/** `true`/`1` or `false`/`0`. */
export function bool<D extends boolean | null>(
	def: D,
	opts: Common = {}
): z.ZodType<boolean | D, string | undefined> {
	const schema = raw.transform((v, ctx): boolean | D => {
		if (v === null) return def;
		if (v === "true" || v === "1") return true;
		if (v === "false" || v === "0") return false;
		return fail(ctx, `must be true or false, got "${v}"`);
	});
	return documented(schema, {
		type: "boolean",
		default: opts.defaultDoc ?? (def === null ? "—" : `\`${def}\``),
		accepts: ["true", "false"]
	});
}

/** Checks one URL: its scheme is one of `protocols`; the message redacts its credentials. */
function checkUrl(v: string, protocols: readonly string[], ctx: Ctx): string {
	let parsed: URL;
	try {
		parsed = new URL(v);
	} catch {
		return fail(ctx, `is not a URL: "${redactUrl(v)}"`);
	}
	if (!protocols.includes(parsed.protocol))
		return fail(ctx, `must use ${protocols.join(" or ")}, got "${parsed.protocol}"`);
	return v;
}

/** A URL whose scheme is one of `protocols` (`["postgres:", "postgresql:"]`); `null` when unset. */
export function url(
	protocols: readonly string[],
	opts: Common = {}
): z.ZodType<string | null, string | undefined> {
	const schema = raw.transform((v, ctx) => (v === null ? null : checkUrl(v, protocols, ctx)));
	return documented(schema, {
		type: `URL (${protocols.join(", ")})`,
		default: opts.defaultDoc ?? "—",
		secret: opts.secret,
		accepts: protocols.map(p => `${p}//host:1`)
	});
}

/**
 * A comma-separated list of URLs (spaces after the commas allowed), each of `protocols`: the
 * list without spaces or empty entries, `null` when unset.
 */
export function urlList(
	protocols: readonly string[],
	opts: Common = {}
): z.ZodType<string | null, string | undefined> {
	const schema = raw.transform((v, ctx) => {
		if (v === null) return null;
		const parts = v
			.split(",")
			.map(p => p.trim())
			.filter(Boolean);
		if (parts.length === 0) return fail(ctx, "lists no NATS server");
		for (const part of parts) checkUrl(part, protocols, ctx);
		return parts.join(",");
	});
	return documented(schema, {
		type: `comma-separated URLs (${protocols.join(", ")})`,
		default: opts.defaultDoc ?? "—",
		secret: opts.secret,
		accepts: protocols.map(p => `${p}//host:1`)
	});
}

/** One of `values`; `def` when unset (`null`: computed after the parse, or off). */
export function oneOf<const V extends string, D extends V | null>(
	values: readonly V[],
	def: D,
	opts: Common & { message?: string } = {}
): z.ZodType<V | D, string | undefined> {
	const schema = raw.transform((v, ctx): V | D => {
		if (v === null) return def;
		if (!(values as readonly string[]).includes(v))
			return fail(ctx, `must be ${opts.message ?? values.join(" or ")}, got "${v}"`);
		return v as V;
	});
	return documented(schema, {
		type: `one of ${values.map(v => `\`${v}\``).join(", ")}`,
		default: opts.defaultDoc ?? (def === null ? "—" : `\`${def}\``),
		accepts: values
	});
}

/**
 * Free text; `def` when unset.
 * @param opts.pattern - the value must match it (`must match <source>`, or `must be
 *   <patternMessage>` when given)
 * @param opts.minLength - at least that many characters
 */
export function text<D extends string | null>(
	def: D,
	opts: Common & {
		pattern?: RegExp;
		patternMessage?: string;
		minLength?: number;
		type?: string;
	} = {}
): z.ZodType<string | D, string | undefined> {
	const schema = raw.transform((v, ctx): string | D => {
		if (v === null) return def;
		if (opts.minLength !== undefined && v.length < opts.minLength)
			return fail(ctx, `must be at least ${opts.minLength} characters`);
		if (opts.pattern && !opts.pattern.test(v))
			return fail(
				ctx,
				opts.patternMessage
					? `must be ${opts.patternMessage}, got "${v}"`
					: `must match ${opts.pattern.source.replace(/^\^|\$$/g, "")}, got "${v}"`
			);
		return v;
	});
	return documented(schema, {
		type:
			opts.type ??
			(opts.minLength !== undefined ? `string, ${opts.minLength}+ characters` : "string"),
		default: opts.defaultDoc ?? (def === null ? "—" : def === "" ? "empty" : `\`${def}\``),
		secret: opts.secret
	});
}

/**
 * A value parsed by `parse` (a function of another module that throws an `Error` whose message
 * already names the variable, e.g. platform/tracing/otel-settings.ts): its result, or that message.
 * @param accepts - values it accepts (for the tests), when they are a short list
 */
export function parsed<T>(
	parse: (v: string | null) => T,
	type: string,
	defaultDoc: string,
	accepts?: readonly string[]
): z.ZodType<T, string | undefined> {
	const schema = raw.transform((v, ctx): T => {
		try {
			return parse(v);
		} catch (err) {
			return fail(ctx, (err as Error).message);
		}
	});
	return documented(schema, { type, default: defaultDoc, accepts });
}

/** A readable file's path, resolved; `null` when unset. */
export function file(opts: Common = {}): z.ZodType<string | null, string | undefined> {
	const schema = raw.transform((v, ctx) => {
		if (v === null) return null;
		const f = path.resolve(v);
		try {
			fs.accessSync(f, fs.constants.R_OK);
		} catch {
			return fail(ctx, `: cannot read "${f}"`);
		}
		return f;
	});
	return documented(schema, { type: "path of a readable file", default: opts.defaultDoc ?? "—" });
}
