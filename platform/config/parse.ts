/**
 * The error of an invalid environment, and the environment's type. The variables are parsed by
 * the schema (platform/config/schema.ts, its kinds in fields.ts); every message names the variable
 * (fastify's habit: start-up options validated once).
 */

/** Thrown at start-up when the environment is invalid; the process should exit. */
export class ConfigError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "ConfigError";
	}
}

/** An environment: `process.env`, or a test's object. */
export type Env = Record<string, string | undefined>;
