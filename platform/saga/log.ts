/**
 * The saga log as a running saga writes it: each step attempt's intent (STARTED) before the call
 * and its outcome (SUCCEEDED / FAILED) after, the saga's error history, and its transitions
 * (COMPENSATING, COMPLETED / COMPENSATED, FAILED). Every write here is fenced on this node still
 * holding the saga's lease (`WHERE lease_owner = me`) and renews it; a node that lost the lease
 * gets `SagaLeaseLostError` and stops driving that saga.
 */
import { config } from "../config";
import { fastQuery, QueryTypes, type Transaction } from "../db/fast-query";
import { sagaIsAfterPivot } from "./definition";
import { stepSuccessStatement } from "./mirror";
import type { SagaRuntime } from "./runtime";
import { SagaLeaseLostError } from "./store";
import type {
	SagaDefinition,
	SagaErrorRecord,
	SagaInstance,
	SagaPhase,
	SagaStepOutcome
} from "./types";

/**
 * SQL for `sagas.errors` with the error record in parameter `param` appended, keeping only the
 * newest `SAGA_ERRORS_KEEP` entries (bounded at write time: a saga retried for long does not
 * grow its row without bound; every attempt's error also stays in its `saga_steps` row).
 */
function appendError(param: string): string {
	const keep = config().retention.sagaErrorsKeep;
	return `(SELECT COALESCE(jsonb_agg(e ORDER BY i), '[]'::jsonb)
		FROM jsonb_array_elements(errors || jsonb_build_array(${param}::jsonb)) WITH ORDINALITY AS x(e, i)
		WHERE i > jsonb_array_length(errors) + 1 - ${keep})`;
}

/** Runs `sql` fenced on this node's lease; throws SagaLeaseLostError if it was lost. */
export async function fenced(
	rt: SagaRuntime,
	saga: SagaInstance,
	sql: string,
	bind: unknown[],
	transaction?: Transaction
): Promise<Record<string, unknown>[]> {
	const rows = (await fastQuery(rt.host.db, sql, {
		bind: [saga.id, rt.owner, ...bind],
		type: QueryTypes.SELECT,
		transaction
	})) as Record<string, unknown>[];
	if (rows.length === 0) throw new SagaLeaseLostError(saga.id);
	return rows;
}

/** Records a step attempt's intent (STARTED) and renews the lease, in one statement. */
export async function logStart(
	rt: SagaRuntime,
	saga: SagaInstance,
	index: number,
	stepName: string,
	phase: SagaPhase,
	attempt: number
): Promise<number> {
	const rows = await fenced(
		rt,
		saga,
		`WITH s AS (
						UPDATE sagas SET current_step = CASE WHEN $6 = 'forward' THEN $3 ELSE current_step END,
							attempts = attempts + 1, updated_at = now(),
							lease_expires_at = now() + ($7 || ' milliseconds')::interval
						WHERE id = $1 AND lease_owner = $2 RETURNING id)
					 INSERT INTO saga_steps (saga_id, step_index, step_name, phase, status, attempt)
					 SELECT id, $3, $4, $6, 'STARTED', $5 FROM s RETURNING id`,
		[index, stepName, attempt, phase, String(rt.leaseMs)]
	);
	if (phase === "forward") saga.currentStep = index;
	return Number(rows[0]!.id);
}

/**
 * Records a forward step's outcome (SUCCEEDED, its result, the saga's data) and, with `next`,
 * the next step's intent (STARTED, attempt 1), renewing the lease, fenced on it, in one
 * statement (with `def.mirror`'s parts: mirror.ts). With `def.onStepSucceeded` that hook runs in
 * the same transaction.
 * @returns the saga as recorded and the next step's log id (null: not started)
 */
export async function logSuccess(
	rt: SagaRuntime,
	def: SagaDefinition,
	saga: SagaInstance,
	done: SagaStepOutcome,
	next: string | null
): Promise<{ saga: SagaInstance; nextLogId: number | null }> {
	const data = { ...saga.data, ...done.patch };
	const refuses = next !== null && !sagaIsAfterPivot(def, done.index + 1);
	const { sql, bind } = stepSuccessStatement(def, done, data, next, refuses, rt.leaseMs);
	const record = async (t?: Transaction): Promise<number | null> => {
		const rows = await fenced(rt, saga, sql, bind, t);
		const nextLogId = rows[0]!.next_log_id;
		return nextLogId === null || nextLogId === undefined ? null : Number(nextLogId);
	};
	const after: SagaInstance = { ...saga, data, currentStep: done.index + 1 };
	let nextLogId: number | null;
	const hook = def.onStepSucceeded;
	if (hook)
		nextLogId = await rt.host.db.transaction(async t => {
			const id = await record(t);
			await rt.callMethod(hook, after, done.stepName, t);
			return id;
		});
	else nextLogId = await record();
	return { saga: after, nextLogId };
}

/** Records a failed attempt: its log row and the saga's error history, in one transaction. */
export async function logFailure(
	rt: SagaRuntime,
	saga: SagaInstance,
	logId: number,
	rec: SagaErrorRecord
): Promise<void> {
	const seq = rt.host.db;
	await seq.transaction(async t => {
		await fenced(
			rt,
			saga,
			`UPDATE sagas SET errors = ${appendError("$3")}, updated_at = now()
						 WHERE id = $1 AND lease_owner = $2 RETURNING id`,
			[JSON.stringify(rec)],
			t
		);
		await fastQuery(
			seq,
			`UPDATE saga_steps SET status = 'FAILED', error = $2::jsonb, finished_at = now() WHERE id = $1`,
			{ bind: [logId, JSON.stringify(rec)], transaction: t }
		);
	});
}

/** Adds an error to the saga's history (a refusal before any step was invoked). */
export async function appendSagaError(
	rt: SagaRuntime,
	saga: SagaInstance,
	rec: SagaErrorRecord
): Promise<void> {
	await fenced(
		rt,
		saga,
		`UPDATE sagas SET errors = ${appendError("$3")}, updated_at = now()
					 WHERE id = $1 AND lease_owner = $2 RETURNING id`,
		[JSON.stringify(rec)]
	);
	saga.errors.push(rec);
}

/** Records the saga's turn to COMPENSATING, its failure reason and the error that caused it. */
export async function logCompensating(
	rt: SagaRuntime,
	saga: SagaInstance,
	reason: string,
	failedIndex: number,
	rec: SagaErrorRecord
): Promise<void> {
	await fenced(
		rt,
		saga,
		`UPDATE sagas SET status = 'COMPENSATING', failure_reason = $3, current_step = $4,
						errors = CASE WHEN errors @> jsonb_build_array($5::jsonb) THEN errors ELSE ${appendError("$5")} END,
						updated_at = now() WHERE id = $1 AND lease_owner = $2 RETURNING id`,
		[reason, failedIndex, JSON.stringify(rec)]
	);
}

/** Records a compensation attempt's success (its log row). */
export async function logCompensated(
	rt: SagaRuntime,
	logId: number,
	result: unknown
): Promise<void> {
	await fastQuery(
		rt.host.db,
		`UPDATE saga_steps SET status = 'SUCCEEDED', result = $2::jsonb, finished_at = now() WHERE id = $1`,
		{ bind: [logId, JSON.stringify(result ?? null)] }
	);
}

/**
 * Records the saga's end (`done.status`), releasing its lease; with `last`, the last forward
 * step's outcome in the same statement.
 */
export async function logFinish(
	rt: SagaRuntime,
	saga: SagaInstance,
	done: SagaInstance,
	last: SagaStepOutcome | undefined,
	t: Transaction
): Promise<void> {
	const status = done.status;
	if (last)
		await fenced(
			rt,
			saga,
			`WITH s AS (
								UPDATE sagas SET status = $3, current_step = $4, data = $5::jsonb,
									lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
								WHERE id = $1 AND lease_owner = $2 RETURNING id)
							 UPDATE saga_steps SET status = 'SUCCEEDED', result = $7::jsonb, finished_at = now()
							 WHERE id = $6 AND saga_id IN (SELECT id FROM s) RETURNING id`,
			[
				status,
				done.currentStep,
				JSON.stringify(done.data),
				last.logId,
				JSON.stringify(last.result ?? null)
			],
			t
		);
	else
		await fenced(
			rt,
			saga,
			`UPDATE sagas SET status = $3, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
							 WHERE id = $1 AND lease_owner = $2 RETURNING id`,
			[status],
			t
		);
}

/** Records the saga parked as FAILED, releasing its lease. */
export async function logParked(
	rt: SagaRuntime,
	saga: SagaInstance,
	t: Transaction
): Promise<void> {
	await fenced(
		rt,
		saga,
		`UPDATE sagas SET status = 'FAILED', lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
						 WHERE id = $1 AND lease_owner = $2 RETURNING id`,
		[],
		t
	);
}
