/**
 * platform/db/deferred-writes.ts on the jest run's real Postgres: writes handed to a transaction run with
 * its last statement, exactly once, and commit or roll back with it; in Sequelize's transactions
 * (users, products) and the pg pool's.
 */
import { QueryTypes, type Sequelize } from "sequelize";
import { createDatabase, createSequelize } from "../../platform/db/database";
import {
	acceptDeferredWrites,
	commitWithDeferredWrites,
	deferWrite,
	prependWrites,
	withDeferredWrites,
	writeOrDefer
} from "../../platform/db/deferred-writes";
import { fastQuery } from "../../platform/db/fast-query";
import { sharedDatabaseUrl } from "../support/database-url";

describe("deferred writes", () => {
	let seq: Sequelize;
	const table = `dw_${process.pid}`;
	const rows = async (): Promise<{ k: string; v: number }[]> =>
		(await fastQuery(seq, `SELECT k, v FROM ${table} ORDER BY k`, {
			type: QueryTypes.SELECT
		})) as { k: string; v: number }[];
	const insert = (k: string, v: number) => ({
		sql: `INSERT INTO ${table} (k, v) VALUES ($1, $2)`,
		bind: [k, v]
	});

	beforeAll(async () => {
		seq = createSequelize(sharedDatabaseUrl(), { pool: { max: 2, min: 0 } });
		await seq.query(`CREATE TABLE ${table} (k text PRIMARY KEY, v int NOT NULL)`);
	});
	afterEach(async () => {
		await seq.query(`DELETE FROM ${table}`);
	});
	afterAll(async () => {
		await seq.query(`DROP TABLE IF EXISTS ${table}`);
		await seq.close();
	});

	it("a transaction that did not accept them takes none: the writer sends its own", async () => {
		await seq.transaction(async t => {
			expect(deferWrite(t, insert("a", 1))).toBe(false);
			expect(deferWrite(null, insert("a", 1))).toBe(false);
		});
		expect(await rows()).toEqual([]);
	});

	it("runs them once with the last statement, parameters renumbered after its own", async () => {
		const answer = await seq.transaction(async t => {
			acceptDeferredWrites(t);
			expect(deferWrite(t, insert("a", 1))).toBe(true);
			expect(deferWrite(t, insert("b", 2))).toBe(true);
			// Not sent yet.
			expect(
				await fastQuery(seq, `SELECT count(*)::int AS n FROM ${table}`, {
					type: QueryTypes.SELECT,
					transaction: t
				})
			).toEqual([{ n: 0 }]);
			const last = withDeferredWrites(t, "SELECT $1::int + $2::int AS sum", [40, 2]);
			expect(last.bind).toEqual([40, 2, "a", 1, "b", 2]);
			// Taken: a later write is refused, so nothing can be left behind unsent.
			expect(deferWrite(t, insert("c", 3))).toBe(false);
			return fastQuery(seq, last.sql, {
				bind: last.bind,
				type: QueryTypes.SELECT,
				transaction: t
			});
		});
		expect(answer).toEqual([{ sum: 42 }]);
		expect(await rows()).toEqual([
			{ k: "a", v: 1 },
			{ k: "b", v: 2 }
		]);
	});

	it("they roll back with the transaction when its last statement fails", async () => {
		await fastQuery(seq, `INSERT INTO ${table} (k, v) VALUES ('x', 0)`);
		await expect(
			seq.transaction(async t => {
				acceptDeferredWrites(t);
				deferWrite(t, insert("a", 1));
				const last = withDeferredWrites(t, `INSERT INTO ${table} (k, v) VALUES ($1, $2)`, [
					"x",
					9
				]);
				await fastQuery(seq, last.sql, { bind: last.bind, transaction: t });
			})
		).rejects.toMatchObject({ name: "SequelizeUniqueConstraintError" });
		expect(await rows()).toEqual([{ k: "x", v: 0 }]);
	});

	it("on the pg pool: writeOrDefer defers in a transaction that accepts, sends otherwise", async () => {
		const db = createDatabase(sharedDatabaseUrl(), { max: 1 });
		try {
			const answer = await db.transaction(async t => {
				await writeOrDefer(db, t, insert("a", 1));
				acceptDeferredWrites(t);
				await writeOrDefer(db, t, insert("b", 2));
				expect(
					await fastQuery(db, `SELECT k FROM ${table} ORDER BY k`, {
						type: QueryTypes.SELECT,
						transaction: t
					})
				).toEqual([{ k: "a" }]);
				const last = withDeferredWrites(t, "SELECT $1::int AS n", [7]);
				return fastQuery(db, last.sql, {
					bind: last.bind,
					type: QueryTypes.SELECT,
					transaction: t
				});
			});
			expect(answer).toEqual([{ n: 7 }]);
			expect(await rows()).toEqual([
				{ k: "a", v: 1 },
				{ k: "b", v: 2 }
			]);
		} finally {
			await db.close();
		}
	});

	it("commitWithDeferredWrites: the writes go with the COMMIT; a failing one keeps nothing", async () => {
		const db = createDatabase(sharedDatabaseUrl(), { max: 1 });
		/** One transaction: `sent` written now, `deferred` handed over, then ended with them. */
		const run = (sent: [string, number], deferred: [string, number] | null) =>
			db.transaction(async t => {
				acceptDeferredWrites(t);
				const now = insert(...sent);
				await fastQuery(db, now.sql, { bind: now.bind, transaction: t });
				if (deferred) await writeOrDefer(db, t, insert(...deferred));
				await commitWithDeferredWrites(db, t);
				// Committed with the writes' statement (none deferred: nothing sent yet).
				return t.finished;
			});
		try {
			expect(await run(["a", 1], ["b", 2])).toBe("commit");
			expect(await rows()).toEqual([
				{ k: "a", v: 1 },
				{ k: "b", v: 2 }
			]);
			await expect(run(["c", 3], ["a", 9])).rejects.toMatchObject({
				name: "SequelizeUniqueConstraintError"
			});
			expect((await rows()).map(r => r.k)).toEqual(["a", "b"]);
			// Nothing deferred: nothing sent, the transaction commits as usual.
			expect(await run(["d", 4], null)).toBeUndefined();
			expect((await rows()).map(r => r.k)).toEqual(["a", "b", "d"]);
		} finally {
			await db.close();
		}
	});

	it("joins a last statement's own WITH list (prependWrites)", async () => {
		const answer = await seq.transaction(async t => {
			acceptDeferredWrites(t);
			deferWrite(t, insert("a", 1));
			const last = withDeferredWrites(
				t,
				"WITH x AS (SELECT $1::int AS n) SELECT n + 1 AS m FROM x",
				[41]
			);
			return fastQuery(seq, last.sql, {
				bind: last.bind,
				type: QueryTypes.SELECT,
				transaction: t
			});
		});
		expect(answer).toEqual([{ m: 42 }]);
		expect(await rows()).toEqual([{ k: "a", v: 1 }]);
		// Without a transaction: one statement is atomic by itself.
		const one = prependWrites(
			`INSERT INTO ${table} (k, v) VALUES ($1, $2)`,
			["a", 5],
			[insert("b", 2)]
		);
		await expect(fastQuery(seq, one.sql, { bind: one.bind })).rejects.toMatchObject({
			name: "SequelizeUniqueConstraintError"
		});
		expect(await rows()).toEqual([{ k: "a", v: 1 }]);
	});
});
