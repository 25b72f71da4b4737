/**
 * The URL of database `name` on the jest run's shared Postgres (global-setup.ts sets
 * `DATABASE_URL`), derived with `URL`: the embedded server's URL carries its socket directory as
 * a query, so string concatenation would break it.
 */
export function sharedDatabaseUrl(name = "postgres"): string {
	const u = new URL(process.env.DATABASE_URL!);
	u.pathname = `/${name}`;
	return u.toString();
}
