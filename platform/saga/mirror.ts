/**
 * The saga mirror (`SagaMirror`): the orchestrator's own row for the saga's subject, kept by the
 * saga's own statements rather than by hooks. A forward step's outcome, the subject's refusal
 * check, its status after the step and the next step's intent are ONE statement (no transaction,
 * no extra round trips); the pivot check reads the subject's status before compensating. Table
 * and column names come from the definition (code), never from input, and are quoted as
 * identifiers. The mirror names no table of its own: the service configures it.
 */
import { fastQuery, QueryTypes, type Transaction } from "../db/fast-query";
import { shopError } from "../errors";
import type { SagaData, SagaDefinition, SagaInstance, SagaMirror, SagaStepOutcome } from "./types";
import type { ShopDatabase } from "../db/pool";

/** `name` quoted as an SQL identifier (names come from saga definitions, i.e. code). */
function ident(name: string): string {
	return `"${name.replace(/"/g, '""')}"`;
}

/**
 * The mirror's status update: the row `$<id>` takes status `$<status>` unless its status is one
 * of `$<keep>` (text[]); `also` is more of the WHERE clause.
 */
function mirrorStatusUpdate(
	m: SagaMirror,
	p: { id: number; status: number; keep: number },
	also = ""
): string {
	const col = ident(m.statusColumn);
	const touch = m.updatedAtColumn ? `, ${ident(m.updatedAtColumn)} = now()` : "";
	return `UPDATE ${ident(m.table)} SET ${col} = $${p.status}${touch}
		WHERE id = $${p.id} AND ${col} <> ALL($${p.keep}::text[])${also}`;
}

/**
 * The statement recording forward step `done`'s success (log.ts `logSuccess`), fenced on the
 * lease ($1 saga, $2 owner): the saga's data and current step, the step's log row, with `next`
 * the next step's intent; with `def.mirror`, the subject's status (`statusAfterStep`) and, when
 * `refuses` (the next step is up to the pivot), no intent if the subject refuses it (`refuse`;
 * the forward loop's own check then compensates).
 */
export function stepSuccessStatement(
	def: SagaDefinition,
	done: SagaStepOutcome,
	data: SagaData,
	next: string | null,
	refuses: boolean,
	leaseMs: number
): { sql: string; bind: unknown[] } {
	const m = def.mirror;
	const status = m?.statusAfterStep[done.stepName] ?? null;
	const refuse = m?.refuse && refuses ? m.refuse.column : null;
	// $1 saga, $2 owner (fenced), $3 next index, $4 data, $5 log id, $6 result,
	// $7 lease ms, $8 next step's name or null, then $9 the subject's id, $10 status,
	// $11 statuses kept.
	const bind: unknown[] = [
		done.index + 1,
		JSON.stringify(data),
		done.logId,
		JSON.stringify(done.result ?? null),
		String(leaseMs),
		next
	];
	const ctes: string[] = [];
	let go = "$8::text IS NOT NULL";
	if (m && (status || refuse)) bind.push(data[m.idField]);
	if (m && refuse) {
		ctes.push(
			`r AS (SELECT NOT coalesce((SELECT ${ident(refuse)} FROM ${ident(m.table)} WHERE id = $9), false) AS go)`
		);
		go += " AND (SELECT go FROM r)";
	}
	ctes.push(
		`s AS (UPDATE sagas SET current_step = $3, data = $4::jsonb,
						attempts = attempts + CASE WHEN ${go} THEN 1 ELSE 0 END, updated_at = now(),
						lease_expires_at = now() + ($7 || ' milliseconds')::interval
					 WHERE id = $1 AND lease_owner = $2 RETURNING id)`,
		`d AS (UPDATE saga_steps SET status = 'SUCCEEDED', result = $6::jsonb, finished_at = now()
					 WHERE id = $5 AND saga_id IN (SELECT id FROM s) RETURNING id)`
	);
	if (m && status) {
		bind.push(status, m.keepStatuses);
		ctes.push(
			`m AS (${mirrorStatusUpdate(m, { id: 9, status: 10, keep: 11 }, " AND EXISTS (SELECT 1 FROM s)")} RETURNING id)`
		);
	}
	ctes.push(
		`n AS (INSERT INTO saga_steps (saga_id, step_index, step_name, phase, status, attempt)
					 SELECT id, $3, $8, 'forward', 'STARTED', 1 FROM s WHERE ${go} RETURNING id)`
	);
	const sql = `WITH ${ctes.join(",\n")}\nSELECT id, (SELECT id FROM n) AS next_log_id FROM s`;
	return { sql, bind };
}

/**
 * Sets the subject's status after the last forward step (`statusAfterStep`), in the saga's final
 * transaction `t`; nothing when the definition has no mirror or no status for that step.
 */
export async function mirrorLastStep(
	seq: ShopDatabase,
	def: SagaDefinition,
	last: SagaStepOutcome,
	data: SagaData,
	t: Transaction
): Promise<void> {
	const lastStatus = def.mirror?.statusAfterStep[last.stepName];
	if (!lastStatus) return;
	const m = def.mirror!;
	await fastQuery(seq, mirrorStatusUpdate(m, { id: 1, status: 2, keep: 3 }), {
		bind: [data[m.idField], lastStatus, m.keepStatuses],
		transaction: t
	});
}

/**
 * Whether the saga's subject says its pivot has passed (`def.mirror.pivotStatuses`), whatever
 * the step log says. One statement; false without `pivotStatuses`.
 */
export async function mirrorPivotPassed(
	seq: ShopDatabase,
	def: SagaDefinition,
	saga: SagaInstance
): Promise<boolean> {
	const m = def.mirror;
	if (!m?.pivotStatuses?.length) return false;
	const rows = (await fastQuery(
		seq,
		`SELECT ${ident(m.statusColumn)} AS status FROM ${ident(m.table)} WHERE id = $1`,
		{ bind: [saga.data[m.idField]], type: QueryTypes.SELECT }
	)) as { status: string }[];
	return rows[0] !== undefined && m.pivotStatuses.includes(rows[0].status);
}

/**
 * The in-statement refusal of `def.mirror.refuse`, checked on its own (before a step whose
 * intent was not recorded with the previous outcome).
 * @throws the shop error `mirror.refuse.error` when the subject refuses
 */
export async function mirrorCheckRefusal(
	seq: ShopDatabase,
	def: SagaDefinition,
	saga: SagaInstance
): Promise<void> {
	const m = def.mirror;
	if (!m?.refuse) return;
	const id = saga.data[m.idField];
	const rows = (await fastQuery(
		seq,
		`SELECT ${ident(m.refuse.column)} AS refused FROM ${ident(m.table)} WHERE id = $1`,
		{ bind: [id], type: QueryTypes.SELECT }
	)) as { refused: boolean }[];
	if (rows[0]?.refused) throw shopError(m.refuse.error, undefined, { [m.idField]: id as string });
}
