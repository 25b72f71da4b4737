/**
 * The injected faults of the failure tests (`SAGA_FAULTS`, `OUTBOX_FAULTS`; ignored when
 * NODE_ENV=production): their comma-separated lists, parsed and frozen.
 */
import { ConfigError } from "./parse";
import type { ShopConfig } from "./settings";

/** `OUTBOX_FAULTS`: `crash-before-publish` / `crash-after-publish`, comma-separated. */
export function parseOutboxFaults(raw: string | null): ShopConfig["outboxFaults"] {
	if (!raw) return [];
	return Object.freeze(
		raw.split(",").map(part => {
			const f = part.trim();
			if (f !== "crash-before-publish" && f !== "crash-after-publish")
				throw new ConfigError(
					`OUTBOX_FAULTS: bad entry "${part}" (want crash-before-publish or crash-after-publish)`
				);
			return f;
		})
	);
}

/** `SAGA_FAULTS`: `crash-before:<step>` / `crash-after:<step>`, comma-separated. */
export function parseFaults(raw: string | null): ShopConfig["sagaFaults"] {
	if (!raw) return [];
	return Object.freeze(
		raw.split(",").map(part => {
			const m = /^(crash-before|crash-after):([A-Za-z0-9_]+)$/.exec(part.trim());
			if (!m)
				throw new ConfigError(
					`SAGA_FAULTS: bad entry "${part}" (want crash-before:<step> or crash-after:<step>)`
				);
			return Object.freeze({ kind: m[1] as "crash-before" | "crash-after", step: m[2]! });
		})
	);
}
