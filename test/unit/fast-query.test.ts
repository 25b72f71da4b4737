/**
 * platform/db/fast-query.ts on the jest run's real Postgres: the same results, errors and connections as
 * `sequelize.query` for the statements the services send, without Sequelize's query pipeline.
 */
import { QueryTypes, type Sequelize } from "sequelize";
import { createSequelize } from "../../platform/db/database";
import { fastQuery } from "../../platform/db/fast-query";
import { sharedDatabaseUrl } from "../support/database-url";

describe("fastQuery", () => {
	let seq: Sequelize;
	const table = `fq_${process.pid}`;
	beforeAll(async () => {
		seq = createSequelize(sharedDatabaseUrl(), { pool: { max: 2, min: 0 } });
		await seq.query(
			`CREATE TABLE ${table} (id int PRIMARY KEY, doc jsonb, at timestamptz DEFAULT now(), big bigint)`
		);
	});
	afterAll(async () => {
		await seq.query(`DROP TABLE IF EXISTS ${table}`);
		await seq.close();
	});

	it("answers what sequelize.query answers: rows for SELECT, [rows, result] otherwise", async () => {
		await fastQuery(seq, `INSERT INTO ${table} (id, doc, big) VALUES ($1, $2::jsonb, $3)`, {
			bind: [1, JSON.stringify({ a: [1, "x"] }), "9007199254740993"]
		});
		const sql = `SELECT id, doc, at, big FROM ${table} WHERE id = $1`;
		const fast = await fastQuery(seq, sql, { bind: [1], type: QueryTypes.SELECT });
		const slow = await seq.query(sql, { bind: [1], type: QueryTypes.SELECT });
		expect(fast).toEqual(slow);
		expect(fast[0]).toMatchObject({ id: 1, doc: { a: [1, "x"] }, big: "9007199254740993" });
		expect((fast[0] as { at: unknown }).at).toBeInstanceOf(Date);

		const [rows, result] = await fastQuery(
			seq,
			`UPDATE ${table} SET big = big + 1 WHERE id = $1 RETURNING id`,
			{ bind: [1] }
		);
		expect(rows).toEqual([{ id: 1 }]);
		expect((result as { rowCount: number }).rowCount).toBe(1);
	});

	it("runs on the transaction's connection: its writes are seen inside and rolled back with it", async () => {
		await expect(
			seq.transaction(async t => {
				await fastQuery(seq, `INSERT INTO ${table} (id) VALUES ($1)`, {
					bind: [2],
					transaction: t
				});
				const inside = await fastQuery(seq, `SELECT id FROM ${table} WHERE id = $1`, {
					bind: [2],
					type: QueryTypes.SELECT,
					transaction: t
				});
				expect(inside).toEqual([{ id: 2 }]);
				// Not visible outside the transaction before it commits.
				const outside = await fastQuery(seq, `SELECT id FROM ${table} WHERE id = $1`, {
					bind: [2],
					type: QueryTypes.SELECT
				});
				expect(outside).toEqual([]);
				throw new Error("roll back");
			})
		).rejects.toThrow("roll back");
		expect(
			await fastQuery(seq, `SELECT id FROM ${table} WHERE id = $1`, {
				bind: [2],
				type: QueryTypes.SELECT
			})
		).toEqual([]);
	});

	it("throws Sequelize's error classes, with the database's error underneath", async () => {
		const dup = fastQuery(seq, `INSERT INTO ${table} (id) VALUES ($1)`, { bind: [1] });
		await expect(dup).rejects.toMatchObject({
			name: "SequelizeUniqueConstraintError",
			parent: expect.objectContaining({ code: "23505" })
		});
		await expect(
			fastQuery(seq, "SELECT no_such_column FROM pg_class WHERE oid = $1", { bind: [1] })
		).rejects.toMatchObject({
			name: "SequelizeDatabaseError",
			original: expect.objectContaining({ code: "42703" })
		});
	});

	it("refuses a finished transaction instead of borrowing its connection", async () => {
		let done: unknown;
		await seq.transaction(async t => {
			done = t;
		});
		await expect(
			fastQuery(seq, "SELECT $1::int AS x", {
				bind: [1],
				transaction: done as never
			})
		).rejects.toThrow(/transaction is commit/);
	});

	it("returns pooled connections: many statements on a pool of two", async () => {
		const answers = await Promise.all(
			Array.from({ length: 50 }, (_, i) =>
				fastQuery(seq, "SELECT $1::int AS x", { bind: [i], type: QueryTypes.SELECT })
			)
		);
		expect(answers.map(r => (r[0] as { x: number }).x)).toEqual(
			Array.from({ length: 50 }, (_, i) => i)
		);
	});
});
