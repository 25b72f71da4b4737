/**
 * platform/saga/outcome.ts `finishSaga` on the jest run's real Postgres: the saga's final row and
 * the definition's hooks are one transaction whose statements are pipelined (the hooks' go out
 * before the final row's fence has answered). A run that lost the saga's lease keeps nothing of
 * it (the hooks' writes roll back with the fence's refusal, which is the error raised); the run
 * holding the lease commits the saga's end, the hooks' writes and their deferred outbox-like
 * writes together.
 */
import crypto from "node:crypto";
import type { Logger, ServiceBroker } from "moleculer";
import { writeOrDefer } from "../../platform/db/deferred-writes";
import { migrate } from "../../platform/db/migrations";
import type { DbTransaction } from "../../platform/db/pool";
import { sagaMigrations } from "../../platform/saga/migrations";
import { finishSaga } from "../../platform/saga/outcome";
import type { SagaRuntime } from "../../platform/saga/runtime";
import type { SagaDefinition, SagaInstance } from "../../platform/saga/types";
import { useScratchDatabase } from "../support/database-url";

describe("finishSaga: the saga's end and its hooks in one pipelined transaction", () => {
	const scratch = useScratchDatabase(`saga_finish_${process.pid}`);
	const emitted: string[] = [];

	beforeAll(async () => {
		await migrate(scratch.db(), sagaMigrations);
		await scratch.db().query("CREATE TABLE marks (saga_id uuid NOT NULL, what text NOT NULL)");
	});

	/** The hook: one write it waits for, and one deferred to the transaction's COMMIT. */
	const hooks = {
		async markCompleted(saga: SagaInstance, t: DbTransaction): Promise<void> {
			await t.query("INSERT INTO marks (saga_id, what) VALUES ($1, 'hook')", [saga.id]);
			await writeOrDefer(scratch.db(), t, {
				sql: "INSERT INTO marks (saga_id, what) VALUES ($1, 'deferred')",
				bind: [saga.id]
			});
		}
	};
	const def: SagaDefinition = {
		name: "finish-test",
		version: 1,
		steps: [],
		onCompleted: "markCompleted"
	} as unknown as SagaDefinition;

	const runtime = (owner: string): SagaRuntime =>
		({
			host: {
				broker: {} as ServiceBroker,
				logger: { info: () => undefined, error: () => undefined } as unknown as Logger,
				db: scratch.db(),
				schema: {},
				sagaEmit: async (event: string) => {
					emitted.push(event);
				},
				sagaAfterCommit: async () => undefined
			},
			owner,
			callMethod: (name: string, ...args: unknown[]) =>
				(hooks as Record<string, (...a: unknown[]) => unknown>)[name]!(...args),
			crashIf: () => undefined
		}) as unknown as SagaRuntime;

	/** A RUNNING saga whose lease `holder` holds. */
	const runningSaga = async (holder: string): Promise<SagaInstance> => {
		const id = crypto.randomUUID();
		await scratch.db().query(
			`INSERT INTO sagas (id, name, version, status, data, lease_owner, lease_expires_at, deadline_at)
			 VALUES ($1, 'finish-test', 1, 'RUNNING', '{}', $2, now() + interval '1 minute', now() + interval '1 hour')`,
			[id, holder]
		);
		return { id, name: "finish-test", version: 1, status: "RUNNING", data: {} } as SagaInstance;
	};
	const marksOf = async (id: string): Promise<string[]> =>
		(
			await scratch
				.db()
				.query("SELECT what FROM marks WHERE saga_id = $1 ORDER BY what", [id])
		).rows.map(r => r.what as string);
	const statusOf = async (id: string): Promise<unknown> =>
		(await scratch.db().query("SELECT status, lease_owner FROM sagas WHERE id = $1", [id]))
			.rows[0];

	it("a run that lost the lease keeps nothing: the hooks' writes roll back, the lease is the error", async () => {
		const saga = await runningSaga("another-node");
		emitted.length = 0;
		await expect(
			finishSaga(runtime("this-node"), def, saga, "COMPLETED", null)
		).rejects.toMatchObject({ name: "SagaLeaseLostError" });
		expect(await marksOf(saga.id)).toEqual([]);
		expect(await statusOf(saga.id)).toEqual({ status: "RUNNING", lease_owner: "another-node" });
		expect(emitted).toEqual([]);
	});

	it("the run holding the lease commits the end, the hook's write and the deferred one together", async () => {
		const saga = await runningSaga("this-node");
		emitted.length = 0;
		await finishSaga(runtime("this-node"), def, saga, "COMPLETED", null);
		expect(await marksOf(saga.id)).toEqual(["deferred", "hook"]);
		expect(await statusOf(saga.id)).toEqual({ status: "COMPLETED", lease_owner: null });
		expect(emitted).toEqual(["saga.completed"]);
	});
});
