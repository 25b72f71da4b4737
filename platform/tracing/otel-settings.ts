/**
 * The OpenTelemetry SDK environment variables this shop honours for traces, parsed as the
 * specification says (opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/,
 * .../protocol/exporter/): pure functions, no dependency, so platform/config.ts can use them.
 * platform/config.ts reads the variables; platform/tracing/otlp-exporter.ts uses the result.
 */

/** What `OTEL_TRACES_EXPORTER` may say here: `otlp` (export over OTLP/HTTP) or `none`. */
export type OtelTracesExporter = "otlp" | "none";

/** The OTLP/HTTP traces URL when neither endpoint variable is set (the specification's default). */
export const OTLP_DEFAULT_TRACES_URL = "http://localhost:4318/v1/traces";

/**
 * `OTEL_TRACES_EXPORTER`: a comma-separated list; here `otlp` or `none` (`none` alone, or with
 * nothing else). `null` when unset.
 * @throws Error naming the value when it holds another exporter (`console`, `zipkin`: use
 *   `TRACING_EXPORTER=console` for the console)
 */
export function parseTracesExporter(raw: string | null): OtelTracesExporter | null {
	if (raw === null) return null;
	const names = [...new Set(raw.split(",").map(s => s.trim().toLowerCase()))].filter(Boolean);
	if (names.length === 1 && (names[0] === "otlp" || names[0] === "none"))
		return names[0] as OtelTracesExporter;
	throw new Error(`OTEL_TRACES_EXPORTER must be otlp or none, got "${raw}"`);
}

/**
 * The traces endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is; else
 * `OTEL_EXPORTER_OTLP_ENDPOINT` with `v1/traces` appended (one `/` between); else
 * `http://localhost:4318/v1/traces`.
 */
export function otlpTracesUrl(tracesEndpoint: string | null, endpoint: string | null): string {
	if (tracesEndpoint !== null) return tracesEndpoint;
	if (endpoint === null) return OTLP_DEFAULT_TRACES_URL;
	return `${endpoint.endsWith("/") ? endpoint : `${endpoint}/`}v1/traces`;
}

/**
 * `OTEL_RESOURCE_ATTRIBUTES`: `key1=value1,key2=value2`, values percent-encoded (W3C Baggage's
 * octets); blanks around members ignored. `{}` when unset.
 * @throws Error naming the member that has no `=`, an empty key, or a bad percent-encoding
 */
export function parseResourceAttributes(raw: string | null): Record<string, string> {
	const out: Record<string, string> = {};
	if (raw === null) return out;
	for (const member of raw.split(",")) {
		const m = member.trim();
		if (m === "") continue;
		const eq = m.indexOf("=");
		const key = eq < 0 ? "" : m.slice(0, eq).trim();
		if (key === "") throw new Error(`OTEL_RESOURCE_ATTRIBUTES: "${m}" is not key=value`);
		try {
			out[key] = decodeURIComponent(m.slice(eq + 1).trim());
		} catch {
			throw new Error(
				`OTEL_RESOURCE_ATTRIBUTES: the value of "${key}" is not percent-encoded`
			);
		}
	}
	return out;
}
