/**
 * platform/db/pool.ts and platform/db/migrations.ts on the jest run's real Postgres: transactions
 * (commit, rollback, `afterCommit`, isolation), connections (a broken one is destroyed, one whose
 * statement failed is kept), prepared statements, errors as Sequelize threw them, a Sequelize
 * transaction reached through the pool's handle (users, products), and migrations under the
 * advisory lock in the table umzug's SequelizeStorage kept.
 */
import { QueryTypes, type Sequelize } from "sequelize";
import { SequelizeStorage } from "umzug";
import { createDatabase, createSequelize, preparedName } from "../../platform/db/database";
import { fastQuery } from "../../platform/db/fast-query";
import { migrate, migrateDown, pendingMigrations } from "../../platform/db/migrations";
import type { ShopDatabase } from "../../platform/db/pool";
import { sharedDatabaseUrl, useScratchDatabase } from "../support/database-url";

const pidOf = async (db: ShopDatabase): Promise<number> =>
	(await db.query("SELECT pg_backend_pid() AS pid")).rows[0].pid as number;

describe("ShopDatabase", () => {
	let db: ShopDatabase;
	const table = `sd_${process.pid}`;
	beforeAll(async () => {
		db = createDatabase(sharedDatabaseUrl(), { max: 1 });
		await db.query(`CREATE TABLE ${table} (k text PRIMARY KEY, v int NOT NULL)`);
	});
	afterEach(async () => {
		await db.query(`DELETE FROM ${table}`);
	});
	afterAll(async () => {
		await db.query(`DROP TABLE IF EXISTS ${table}`);
		await db.close();
	});

	it("commits, then runs the afterCommit hooks in order", async () => {
		const seen: string[] = [];
		const answer = await db.transaction(async t => {
			await t.query(`INSERT INTO ${table} (k, v) VALUES ($1, $2)`, ["a", 1]);
			t.afterCommit(async () => {
				const { rows } = await db.query(`SELECT v FROM ${table} WHERE k = 'a'`);
				seen.push(`first sees ${rows.length}`);
			});
			t.afterCommit(() => {
				seen.push("second");
			});
			expect(seen).toEqual([]);
			return 42;
		});
		expect(answer).toBe(42);
		expect(seen).toEqual(["first sees 1", "second"]);
	});

	it("rolls back when the work throws, runs no hook, and keeps the connection", async () => {
		const before = await pidOf(db);
		const hook = jest.fn();
		await expect(
			db.transaction(async t => {
				t.afterCommit(hook);
				await t.query(`INSERT INTO ${table} (k, v) VALUES ($1, $2)`, ["a", 1]);
				await t.query(`INSERT INTO ${table} (k, v) VALUES ($1, $2)`, ["a", 2]);
			})
		).rejects.toMatchObject({ name: "SequelizeUniqueConstraintError" });
		expect(hook).not.toHaveBeenCalled();
		expect((await db.query(`SELECT * FROM ${table}`)).rows).toEqual([]);
		// A statement's own error leaves the connection usable: the pool of one keeps it.
		expect(await pidOf(db)).toBe(before);
	});

	it("refuses statements on a transaction that ended", async () => {
		let done: Parameters<Parameters<ShopDatabase["transaction"]>[0]>[0] | undefined;
		await db.transaction(async t => {
			done = t;
		});
		await expect(done!.query("SELECT 1")).rejects.toThrow(/transaction is commit/);
	});

	it("runs at the isolation level asked for", async () => {
		const level = await db.transaction(
			async t => (await t.query("SHOW transaction_isolation")).rows[0],
			{ isolationLevel: "SERIALIZABLE" }
		);
		expect(level).toEqual({ transaction_isolation: "serializable" });
	});

	it("destroys a connection that broke, and answers on a new one", async () => {
		const before = await pidOf(db);
		await expect(db.query("SELECT pg_terminate_backend(pg_backend_pid())")).rejects.toThrow();
		expect(await pidOf(db)).not.toBe(before);
		const inTx = await pidOf(db);
		await expect(
			db.transaction(t => t.query("SELECT pg_terminate_backend(pg_backend_pid())"))
		).rejects.toThrow();
		expect(await pidOf(db)).not.toBe(inTx);
	});

	describe("a transaction's START TRANSACTION and COMMIT ride with its statements", () => {
		type Flush = (this: unknown, ...a: unknown[]) => unknown;
		/** The pooled connection's socket writes (each one flight to the server) while `fn` runs. */
		const flightsOf = async (fn: () => Promise<unknown>): Promise<number> => {
			let flights = 0;
			const socket = (await db.pool.connect()) as unknown as {
				connection: { stream: { _write: Flush; _writev?: Flush } };
				release(): void;
			};
			const stream = socket.connection.stream;
			const { _write, _writev } = stream;
			stream._write = function (...a: unknown[]) {
				flights++;
				return _write.apply(this, a);
			};
			if (_writev)
				stream._writev = function (...a: unknown[]) {
					flights++;
					return _writev.apply(this, a);
				};
			socket.release();
			try {
				await fn();
			} finally {
				stream._write = _write;
				if (_writev) stream._writev = _writev;
			}
			return flights;
		};

		it("two statements, the last sent with commit: two flights, committed when it answers", async () => {
			const other = createDatabase(sharedDatabaseUrl(), { max: 1 });
			try {
				let seenBeforeEnd: unknown[] = [];
				const flights = await flightsOf(() =>
					db.transaction(async t => {
						await t.query(`INSERT INTO ${table} (k, v) VALUES ($1, $2)`, ["a", 1]);
						await t.query(`INSERT INTO ${table} (k, v) VALUES ($1, $2)`, ["b", 2], {
							commit: true
						});
						// Committed already: another session sees both rows.
						seenBeforeEnd = (await other.query(`SELECT k FROM ${table} ORDER BY k`))
							.rows;
						await expect(t.query("SELECT 1")).rejects.toThrow(/transaction is commit/);
					})
				);
				expect(seenBeforeEnd).toEqual([{ k: "a" }, { k: "b" }]);
				// START TRANSACTION + the first, then the last + COMMIT (four before).
				expect(flights).toBe(2);
			} finally {
				await other.close();
			}
		});

		it("a statement that fails with its COMMIT behind it keeps nothing of the transaction", async () => {
			await db.query(`INSERT INTO ${table} (k, v) VALUES ('b', 0)`);
			await expect(
				db.transaction(async t => {
					await t.query(`INSERT INTO ${table} (k, v) VALUES ($1, $2)`, ["a", 1]);
					await t.query(`INSERT INTO ${table} (k, v) VALUES ($1, $2)`, ["b", 2], {
						commit: true
					});
				})
			).rejects.toMatchObject({ name: "SequelizeUniqueConstraintError" });
			expect((await db.query(`SELECT k, v FROM ${table} ORDER BY k`)).rows).toEqual([
				{ k: "b", v: 0 }
			]);
			// The connection is clean: a new transaction on it runs and rolls back as asked.
			await expect(
				db.transaction(async t => {
					await t.query(`INSERT INTO ${table} (k, v) VALUES ('c', 3)`);
					throw new Error("undo");
				})
			).rejects.toThrow("undo");
			expect((await db.query(`SELECT count(*)::int AS n FROM ${table}`)).rows).toEqual([
				{ n: 1 }
			]);
		});

		it("the first statement runs inside the transaction it carries", async () => {
			// Outside a transaction block each statement would get its own transaction id.
			const ids = await db.transaction(async t => {
				const a = (await t.query("SELECT txid_current() AS x")).rows[0].x as string;
				const b = (await t.query("SELECT txid_current() AS x")).rows[0].x as string;
				return [a, b];
			});
			expect(ids[0]).toBe(ids[1]);
		});

		it("a follower goes in the flight of the statement ahead, and sees what its lock protected", async () => {
			const other = createDatabase(sharedDatabaseUrl(), { max: 1 });
			try {
				await db.query(`INSERT INTO ${table} (k, v) VALUES ('a', 1)`);
				let read: unknown[] = [];
				// Another session holds the lock, and changes the row before letting go.
				let locked!: () => void;
				const holds = new Promise<void>(r => (locked = r));
				const holder = other.transaction(async t => {
					await t.query("SELECT pg_advisory_xact_lock(hashtext('sd-follow'))");
					locked();
					await new Promise(r => setTimeout(r, 150));
					await t.query(`UPDATE ${table} SET v = 2 WHERE k = 'a'`);
				});
				await holds;
				const flights = await flightsOf(() =>
					db.transaction(async t => {
						const follower = t.follow(`SELECT v FROM ${table} WHERE k = $1`, ["a"]);
						await t.query("SELECT pg_advisory_xact_lock(hashtext('sd-follow'))");
						read = (await follower).rows;
						await t.query(`UPDATE ${table} SET v = v + 10 WHERE k = $1`, ["a"], {
							commit: true
						});
					})
				);
				await holder;
				expect(read).toEqual([{ v: 2 }]);
				expect(flights).toBe(2);
				expect((await db.query(`SELECT v FROM ${table}`)).rows).toEqual([{ v: 12 }]);
			} finally {
				await other.close();
			}
		});

		it("a follower fails with the statement ahead of it, and when none is sent", async () => {
			let behindFailure: unknown;
			await expect(
				db.transaction(async t => {
					const follower = t.follow("SELECT 1 AS one");
					await t.query("SELECT 1 / 0").catch(async (e: unknown) => {
						behindFailure = await follower.catch((f: unknown) => f);
						throw e;
					});
				})
			).rejects.toThrow(/division by zero/);
			expect(String(behindFailure)).toMatch(/current transaction is aborted/);
			let never: Promise<unknown> | undefined;
			await db.transaction(async t => {
				await t.query("SELECT 1");
				never = t.follow("SELECT 2");
			});
			await expect(never).rejects.toThrow(/ended before the statement it followed/);
		});

		it("a transaction that sends nothing costs no flight; its hooks still run", async () => {
			const hook = jest.fn();
			const flights = await flightsOf(() =>
				db.transaction(async t => {
					t.afterCommit(hook);
				})
			);
			expect(flights).toBe(0);
			expect(hook).toHaveBeenCalledTimes(1);
		});
	});

	it("sends parameterised statements as named prepared statements", async () => {
		const text = `SELECT v FROM ${table} WHERE k = $1`;
		const listed = await db.transaction(async t => {
			await fastQuery(db, text, { bind: ["x"], transaction: t });
			return (await t.query("SELECT name FROM pg_prepared_statements")).rows;
		});
		expect(listed).toContainEqual({ name: preparedName(text) });
	});

	it("throws what Sequelize threw for the same statement", async () => {
		const seq = createSequelize(sharedDatabaseUrl(), { pool: { max: 1, min: 0 } });
		try {
			await db.query(`INSERT INTO ${table} (k, v) VALUES ('a', 1)`);
			const sql = `INSERT INTO ${table} (k, v) VALUES ($1, $2)`;
			const mine = await fastQuery(db, sql, { bind: ["a", 2] }).catch((e: unknown) => e);
			const theirs = await seq.query(sql, { bind: ["a", 2] }).catch((e: unknown) => e);
			const shape = (e: unknown) => {
				const x = e as Error & { fields?: unknown; errors?: { message: string }[] };
				return {
					name: x.name,
					message: x.message,
					fields: x.fields,
					errors: x.errors?.map(i => i.message)
				};
			};
			expect(shape(mine)).toEqual(shape(theirs));
			expect(shape(mine)).toMatchObject({ name: "SequelizeUniqueConstraintError" });
			expect((mine as { parent: { code: string } }).parent.code).toBe("23505");
		} finally {
			await seq.close();
		}
	});
});

describe("a Sequelize transaction through the pool's handle (users, products)", () => {
	let seq: Sequelize;
	let db: ShopDatabase;
	const table = `sdq_${process.pid}`;
	beforeAll(async () => {
		seq = createSequelize(sharedDatabaseUrl(), { pool: { max: 2, min: 0 } });
		db = createDatabase(sharedDatabaseUrl(), { max: 1 });
		db.sequelize = seq;
		await db.query(`CREATE TABLE ${table} (k text PRIMARY KEY)`);
	});
	afterAll(async () => {
		await db.query(`DROP TABLE IF EXISTS ${table}`);
		await db.close();
		await seq.close();
	});

	it("runs in that transaction, and rolls back with it", async () => {
		await expect(
			seq.transaction(async t => {
				await fastQuery(db, `INSERT INTO ${table} (k) VALUES ($1)`, {
					bind: ["a"],
					transaction: t
				});
				expect(
					await fastQuery(db, `SELECT k FROM ${table}`, {
						type: QueryTypes.SELECT,
						transaction: t
					})
				).toEqual([{ k: "a" }]);
				throw new Error("roll back");
			})
		).rejects.toThrow("roll back");
		expect(await fastQuery(db, `SELECT k FROM ${table}`, { type: QueryTypes.SELECT })).toEqual(
			[]
		);
	});
});

describe("migrations on the pool", () => {
	const name = `mig_${process.pid}`;
	const migrations = [
		{ name: "001-a", up: "CREATE TABLE a (id int)", down: "DROP TABLE a" },
		{
			name: "002-b",
			up: "CREATE TABLE b (id int); INSERT INTO b VALUES (1)",
			down: "DROP TABLE b"
		}
	];
	const scratch = useScratchDatabase(name);
	const { url } = scratch;
	let db: ShopDatabase;
	beforeAll(() => {
		db = scratch.db();
	});

	it("applies them once, in name order, even when two nodes start together", async () => {
		expect(await pendingMigrations(db, migrations)).toEqual(["001-a", "002-b"]);
		const other = createDatabase(url, { max: 2 });
		try {
			const [mine, theirs] = await Promise.all([
				migrate(db, [...migrations].reverse()),
				migrate(other, migrations)
			]);
			expect([...mine, ...theirs].sort()).toEqual(["001-a", "002-b"]);
		} finally {
			await other.close();
		}
		expect(await pendingMigrations(db, migrations)).toEqual([]);
		expect(await migrate(db, migrations)).toEqual([]);
		expect((await db.query("SELECT id FROM b")).rows).toEqual([{ id: 1 }]);
	});

	it("keeps them where umzug's SequelizeStorage did: each reads the other's", async () => {
		const seq = createSequelize(url, { pool: { max: 1, min: 0 } });
		try {
			const storage = new SequelizeStorage({
				sequelize: seq,
				tableName: "schema_migrations"
			});
			expect(await storage.executed()).toEqual(["001-a", "002-b"]);
			await storage.logMigration({ name: "003-c" });
			expect(
				await pendingMigrations(db, [...migrations, { name: "003-c", up: "", down: "" }])
			).toEqual([]);
			await storage.unlogMigration({ name: "003-c" });
		} finally {
			await seq.close();
		}
	});

	it("undoes the last one (migrateDown)", async () => {
		expect(await migrateDown(db, migrations)).toEqual(["002-b"]);
		expect(await pendingMigrations(db, migrations)).toEqual(["002-b"]);
		await expect(db.query("SELECT id FROM b")).rejects.toMatchObject({
			name: "SequelizeDatabaseError"
		});
	});
});
