/**
 * platform/db/fast-query.ts on the jest run's real Postgres: the same results, errors and connections as
 * `sequelize.query` for the statements the services send, without Sequelize's query pipeline; on
 * the pg pool (`ShopDatabase`, what every service queries) and on a Sequelize instance (users and
 * products, which keep moleculer-db's adapter), each with its own transactions.
 */
import { QueryTypes, type Sequelize } from "sequelize";
import { createDatabase, createSequelize } from "../../platform/db/database";
import { fastQuery, type Database, type Transaction } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";
import { sharedDatabaseUrl } from "../support/database-url";

/** A database handle under test, with its way of running a transaction. */
interface Handle {
	db: Database;
	transaction<T>(fn: (t: Transaction) => Promise<T>): Promise<T>;
}

describe.each(["pg pool", "Sequelize"])("fastQuery on the %s", kind => {
	let seq: Sequelize;
	let pool: ShopDatabase | undefined;
	let h: Handle;
	const table = `fq_${process.pid}_${kind === "pg pool" ? "pg" : "seq"}`;
	beforeAll(async () => {
		seq = createSequelize(sharedDatabaseUrl(), { pool: { max: 2, min: 0 } });
		if (kind === "pg pool") {
			const p = createDatabase(sharedDatabaseUrl(), { max: 2 });
			pool = p;
			h = { db: p, transaction: fn => p.transaction(fn) };
		} else h = { db: seq, transaction: fn => seq.transaction(fn) };
		await seq.query(
			`CREATE TABLE ${table} (id int PRIMARY KEY, doc jsonb, at timestamptz DEFAULT now(), big bigint, day date)`
		);
	});
	afterAll(async () => {
		await seq.query(`DROP TABLE IF EXISTS ${table}`);
		await seq.close();
		await pool?.close();
	});

	it("answers what sequelize.query answers: rows for SELECT, [rows, result] otherwise", async () => {
		await fastQuery(
			h.db,
			`INSERT INTO ${table} (id, doc, big, day) VALUES ($1, $2::jsonb, $3, $4)`,
			{ bind: [1, JSON.stringify({ a: [1, "x"] }), "9007199254740993", "2026-03-01"] }
		);
		const sql = `SELECT id, doc, at, big, day, ARRAY[day] AS days, to_char(at, 'TZ') AS zone FROM ${table} WHERE id = $1`;
		const fast = await fastQuery(h.db, sql, { bind: [1], type: QueryTypes.SELECT });
		const slow = await seq.query(sql, { bind: [1], type: QueryTypes.SELECT });
		expect(fast).toEqual(slow);
		expect(fast[0]).toMatchObject({
			id: 1,
			doc: { a: [1, "x"] },
			big: "9007199254740993",
			// Sequelize's parser: a date stays its text; its session's time zone: UTC.
			day: "2026-03-01",
			days: ["2026-03-01"],
			zone: expect.stringMatching(/^(UTC|\+00|)$/)
		});
		expect((fast[0] as { at: unknown }).at).toBeInstanceOf(Date);

		const [rows, result] = await fastQuery(
			h.db,
			`UPDATE ${table} SET big = big + 1 WHERE id = $1 RETURNING id`,
			{ bind: [1] }
		);
		expect(rows).toEqual([{ id: 1 }]);
		expect((result as { rowCount: number }).rowCount).toBe(1);
	});

	it("runs on the transaction's connection: its writes are seen inside and rolled back with it", async () => {
		await expect(
			h.transaction(async t => {
				await fastQuery(h.db, `INSERT INTO ${table} (id) VALUES ($1)`, {
					bind: [2],
					transaction: t
				});
				const inside = await fastQuery(h.db, `SELECT id FROM ${table} WHERE id = $1`, {
					bind: [2],
					type: QueryTypes.SELECT,
					transaction: t
				});
				expect(inside).toEqual([{ id: 2 }]);
				// Not visible outside the transaction before it commits.
				const outside = await fastQuery(h.db, `SELECT id FROM ${table} WHERE id = $1`, {
					bind: [2],
					type: QueryTypes.SELECT
				});
				expect(outside).toEqual([]);
				throw new Error("roll back");
			})
		).rejects.toThrow("roll back");
		expect(
			await fastQuery(h.db, `SELECT id FROM ${table} WHERE id = $1`, {
				bind: [2],
				type: QueryTypes.SELECT
			})
		).toEqual([]);
	});

	it("throws Sequelize's error classes, with the database's error underneath", async () => {
		const dup = fastQuery(h.db, `INSERT INTO ${table} (id) VALUES ($1)`, { bind: [1] });
		await expect(dup).rejects.toMatchObject({
			name: "SequelizeUniqueConstraintError",
			parent: expect.objectContaining({ code: "23505" })
		});
		await expect(
			fastQuery(h.db, "SELECT no_such_column FROM pg_class WHERE oid = $1", { bind: [1] })
		).rejects.toMatchObject({
			name: "SequelizeDatabaseError",
			original: expect.objectContaining({ code: "42703" })
		});
	});

	it("refuses a finished transaction instead of borrowing its connection", async () => {
		let done: unknown;
		await h.transaction(async t => {
			done = t;
		});
		await expect(
			fastQuery(h.db, "SELECT $1::int AS x", {
				bind: [1],
				transaction: done as never
			})
		).rejects.toThrow(/transaction is commit/);
	});

	it("returns pooled connections: many statements on a pool of two", async () => {
		const answers = await Promise.all(
			Array.from({ length: 50 }, (_, i) =>
				fastQuery(h.db, "SELECT $1::int AS x", { bind: [i], type: QueryTypes.SELECT })
			)
		);
		expect(answers.map(r => (r[0] as { x: number }).x)).toEqual(
			Array.from({ length: 50 }, (_, i) => i)
		);
	});
});
