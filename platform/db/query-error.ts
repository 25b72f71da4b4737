/**
 * What a failed statement on the pg pool (platform/db/pool.ts) throws: the error Sequelize's
 * postgres dialect made of it (its `Query#formatError`), built with Sequelize's exported error
 * classes, so callers that branch on them keep working: `SequelizeUniqueConstraintError` for
 * SQLSTATE 23505 (with `fields` and `errors` from the detail, message "Validation error"),
 * `SequelizeForeignKeyConstraintError` for 23503, `SequelizeExclusionConstraintError` for 23P01,
 * `SequelizeDatabaseError` otherwise; each with the database's error as `parent` and `original`.
 * Errors that are not the database's answer to a statement (the pool could not connect, the
 * connection broke) pass unchanged: platform/db/database-unavailable.ts recognises them.
 */
import {
	DatabaseError,
	ExclusionConstraintError,
	ForeignKeyConstraintError,
	UniqueConstraintError,
	ValidationErrorItem
} from "sequelize";

/** A server's error response as pg gives it (`DatabaseError` of pg-protocol). */
interface PgServerError extends Error {
	code: string;
	severity?: string;
	detail?: string;
	constraint?: string;
	table?: string;
}

/** Whether `err` is the server's answer to a statement (it has a SQLSTATE and a severity). */
function isServerError(err: unknown): err is PgServerError {
	const e = err as { code?: unknown; severity?: unknown } | null;
	return (
		err instanceof Error &&
		typeof e?.code === "string" &&
		/^[0-9A-Z]{5}$/.test(e.code) &&
		typeof e.severity === "string"
	);
}

/**
 * Whether the connection `err` came from is unusable: a socket error, or pg's own word that the
 * connection ended; such a connection is destroyed, never returned to the pool.
 */
export function isBrokenConnection(err: unknown): boolean {
	if (isServerError(err))
		// The server ends the session: admin/crash shutdown, connection exceptions.
		return /^(08...|57P0[123])$/.test(err.code);
	return err instanceof Error;
}

/** The `Key (a, b)=(x, y)` of a constraint error's detail, as Sequelize reads it. */
function keyFields(detail: string | undefined): Record<string, string> | undefined {
	const match = detail?.replace(/"/g, "").match(/Key \((.*?)\)=\((.*?)\)/);
	if (!match) return undefined;
	const names = match[1]!.split(", ");
	const values = match[2]!.split(", ");
	return Object.fromEntries(names.map((n, i) => [n, values[i] ?? ""]));
}

/** The error Sequelize threw for `err` (see the module comment); other errors as they are. */
export function toQueryError(err: unknown): unknown {
	if (!isServerError(err)) return err;
	// Sequelize's types want the failed SQL on the parent; its postgres dialect does not set it.
	const parent = err as PgServerError & { sql: string };
	switch (err.code) {
		case "23503": {
			const index = /violates foreign key constraint "(.+?)"/.exec(err.message)?.[1];
			const table = /on table "(.+?)"/.exec(err.message)?.[1];
			return new ForeignKeyConstraintError({
				message: err.message,
				index,
				table,
				parent
			});
		}
		case "23505": {
			const fields = keyFields(err.detail);
			if (!fields)
				return new UniqueConstraintError({
					message: err.message,
					parent
				});
			const errors = Object.entries(fields).map(
				([field, value]) =>
					new ValidationErrorItem(
						`${field} must be unique`,
						"unique violation",
						field,
						value,
						undefined as never,
						"not_unique",
						undefined as never,
						undefined as never
					)
			);
			return new UniqueConstraintError({
				message: "Validation error",
				errors,
				parent,
				fields
			});
		}
		case "23P01":
			return new ExclusionConstraintError({
				message: "Exclusion constraint error",
				constraint: err.constraint,
				fields: keyFields(err.detail),
				table: err.table,
				parent
			});
		default:
			return new DatabaseError(parent);
	}
}
