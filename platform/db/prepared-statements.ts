/**
 * Named prepared statements for every parameterised query: `preparedName(text)` gives a text its
 * stable name, and `PreparingClient` (node-postgres' `Client`, used by the shop's pools, both the
 * pg `Pool` of platform/db/pool.ts and Sequelize's) sends each query that has bind parameters as
 * a named statement, so each connection parses it once and Postgres can reuse its plan. Texts
 * without parameters (DDL, `BEGIN`, Sequelize's inlined model queries) run unnamed, as before.
 * Off with `DATABASE_PREPARED_STATEMENTS=false` (e.g. behind a pooler that does not keep them).
 *
 * The pattern is the automatic prepared-statement cache of drivers such as pgx and Npgsql; it
 * uses node-postgres' public query config (`{ name, text, values }`).
 */
import crypto from "node:crypto";
import * as pg from "pg";

/** Distinct statement texts given a name; past this, new texts run unnamed (as before). */
const MAX_PREPARED_TEXTS = 2_000;
const statementNames = new Map<string, string>();

/**
 * The name of a parameterised statement text: the same text always gets the same name, so each
 * connection parses it once (node-postgres keeps a connection's parsed statements by name) and
 * Postgres can reuse its plan. @returns null when the cache of names is full
 */
export function preparedName(text: string): string | null {
	let name = statementNames.get(text);
	if (name) return name;
	if (statementNames.size >= MAX_PREPARED_TEXTS) return null;
	name = `shop_${crypto.createHash("sha1").update(text).digest("hex").slice(0, 24)}`;
	statementNames.set(text, name);
	return name;
}

type AnyQuery = (...args: unknown[]) => unknown;

/**
 * node-postgres' Client, running every query that has bind parameters as a named (prepared)
 * statement. Callers (Sequelize, the pg pool) send `query(text, values[, callback])`.
 */
export class PreparingClient extends pg.Client {
	override query(...args: unknown[]): any {
		const [text, values, callback] = args;
		if (typeof text === "string" && Array.isArray(values) && values.length > 0) {
			const name = preparedName(text);
			if (name) return (super.query as AnyQuery)({ name, text, values }, callback);
		}
		return (super.query as AnyQuery)(...args);
	}
}

/** The `pg` module for Sequelize's `dialectModule`, with `Client` replaced by `PreparingClient`. */
export const preparingPg: typeof pg = Object.create(pg, { Client: { value: PreparingClient } });
