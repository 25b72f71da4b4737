/**
 * platform/db/database.ts: parameterised queries run as named prepared statements (parsed once per
 * connection, their plans reusable), on the jest run's real Postgres; texts without parameters
 * run as before; `DATABASE_PREPARED_STATEMENTS=false` turns it off; on Sequelize's pool and the pg pool. Also: the embedded server's
 * URL reaches it over a Unix socket (tools/embedded-postgres.ts).
 */
import { QueryTypes, type Sequelize } from "sequelize";
import { resetConfig } from "../../platform/config";
import { createDatabase, createSequelize, preparedName } from "../../platform/db/database";
import { sharedDatabaseUrl } from "../support/database-url";

/** The named statements of the transaction's connection, as Postgres lists them. */
async function preparedOnConnection(seq: Sequelize, work: (t: any) => Promise<void>) {
	return seq.transaction(async t => {
		await work(t);
		return (await seq.query("SELECT name, statement FROM pg_prepared_statements", {
			type: QueryTypes.SELECT,
			transaction: t
		})) as { name: string; statement: string }[];
	});
}

describe("prepared statements", () => {
	const saved = process.env.DATABASE_PREPARED_STATEMENTS;
	afterEach(() => {
		if (saved === undefined) delete process.env.DATABASE_PREPARED_STATEMENTS;
		else process.env.DATABASE_PREPARED_STATEMENTS = saved;
		resetConfig();
	});

	it("a text always gets the same name, and different texts different names", () => {
		const a = preparedName("SELECT $1::int AS a");
		expect(a).toMatch(/^shop_[0-9a-f]{24}$/);
		expect(preparedName("SELECT $1::int AS a")).toBe(a);
		expect(preparedName("SELECT $1::int AS b")).not.toBe(a);
	});

	it("parameterised queries run as named statements, with the right results", async () => {
		delete process.env.DATABASE_PREPARED_STATEMENTS;
		resetConfig();
		const seq = createSequelize(sharedDatabaseUrl(), { pool: { max: 1, min: 0 } });
		try {
			const text = "SELECT $1::int + 1 AS y";
			const answers: number[] = [];
			const prepared = await preparedOnConnection(seq, async t => {
				for (const n of [1, 41]) {
					const [row] = (await seq.query(text, {
						bind: [n],
						type: QueryTypes.SELECT,
						transaction: t
					})) as { y: number }[];
					answers.push(row!.y);
				}
				// No parameters: not named.
				await seq.query("SELECT 7 AS unnamed", { transaction: t });
			});
			expect(answers).toEqual([2, 42]);
			expect(prepared).toEqual([{ name: preparedName(text), statement: text }]);
		} finally {
			await seq.close();
		}
	});

	it("DATABASE_PREPARED_STATEMENTS=false: unnamed, as Sequelize sends them", async () => {
		process.env.DATABASE_PREPARED_STATEMENTS = "false";
		resetConfig();
		const seq = createSequelize(sharedDatabaseUrl(), { pool: { max: 1, min: 0 } });
		try {
			const prepared = await preparedOnConnection(seq, async t => {
				await seq.query("SELECT $1::int AS z", { bind: [1], transaction: t });
			});
			expect(prepared).toEqual([]);
		} finally {
			await seq.close();
		}
	});

	it("the pg pool: named statements, unnamed with DATABASE_PREPARED_STATEMENTS=false", async () => {
		const listed = async (): Promise<unknown[]> => {
			const db = createDatabase(sharedDatabaseUrl(), { max: 1 });
			try {
				return await db.transaction(async t => {
					await t.query("SELECT $1::int AS p", [1]);
					return (await t.query("SELECT name FROM pg_prepared_statements")).rows;
				});
			} finally {
				await db.close();
			}
		};
		delete process.env.DATABASE_PREPARED_STATEMENTS;
		resetConfig();
		expect(await listed()).toEqual([{ name: preparedName("SELECT $1::int AS p") }]);
		process.env.DATABASE_PREPARED_STATEMENTS = "false";
		resetConfig();
		expect(await listed()).toEqual([]);
	});

	it("the embedded server's URL connects over its Unix socket", async () => {
		const u = new URL(process.env.DATABASE_URL!);
		const socketDir = u.searchParams.get("host");
		expect(socketDir).toMatch(/^\//);
		const seq = createSequelize(sharedDatabaseUrl(), { pool: { max: 1, min: 0 } });
		try {
			// A Unix-socket session has no client address.
			const [row] = (await seq.query("SELECT inet_client_addr() AS addr", {
				type: QueryTypes.SELECT
			})) as { addr: string | null }[];
			expect(row!.addr).toBeNull();
		} finally {
			await seq.close();
		}
	});
});
