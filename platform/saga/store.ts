/**
 * The `sagas` table as the engine reads and leases it: creating a saga (with its first step's
 * intent and the caller's own writes, in one statement), reading a saga and its step log,
 * claiming a saga for this node, claiming the ones whose lease expired (recovery) and handing
 * leases back on stop. The writes a running saga makes on its own row are in `log.ts`.
 *
 * Leases: every saga carries `lease_owner`, `lease_expires_at`; the node driving it renews the
 * lease at every step attempt, and every write it makes is fenced on still owning it. Claims use
 * `SELECT ... FOR UPDATE SKIP LOCKED` so that two nodes never claim the same saga.
 */
import { fastQuery, QueryTypes, type Transaction } from "../db/fast-query";
import { prependWrites, type DeferredWrite } from "../db/deferred-writes";
import type {
	SagaData,
	SagaDefinition,
	SagaErrorRecord,
	SagaInstance,
	SagaStatus,
	SagaStepLogEntry
} from "./types";
import type { ShopDatabase } from "../db/pool";

/** Thrown when this node no longer holds a saga's lease: it stops driving that saga. */
export class SagaLeaseLostError extends Error {
	constructor(sagaId: string) {
		super(`Lease of saga ${sagaId} lost to another node`);
		this.name = "SagaLeaseLostError";
	}
}

/** A `sagas` row as Postgres returns it. */
export interface SagaRow {
	id: string;
	name: string;
	version: number;
	status: SagaStatus;
	current_step: number;
	data: SagaData;
	failure_reason: string | null;
	errors: SagaErrorRecord[];
	attempts: number;
	lease_owner: string | null;
	lease_expires_at: Date | null;
	deadline_at: Date;
	request_id: string | null;
	parent_span_id?: string | null;
	redrives?: number;
	created_at: Date;
	updated_at: Date;
}

/** A `saga_steps` row as Postgres returns it (`id` is a bigserial: a string). */
interface SagaStepRow {
	id: string | number;
	saga_id: string;
	step_index: number;
	step_name: string;
	phase: SagaStepLogEntry["phase"];
	status: SagaStepLogEntry["status"];
	attempt: number;
	result: unknown;
	error: SagaErrorRecord | null;
	started_at: Date;
	finished_at: Date | null;
}

export function toInstance(r: SagaRow): SagaInstance {
	return {
		id: r.id,
		name: r.name,
		version: r.version,
		status: r.status,
		currentStep: r.current_step,
		data: r.data,
		failureReason: r.failure_reason,
		errors: r.errors,
		attempts: r.attempts,
		leaseOwner: r.lease_owner,
		leaseExpiresAt: r.lease_expires_at,
		deadlineAt: r.deadline_at,
		requestId: r.request_id,
		parentSpanId: r.parent_span_id ?? null,
		redrives: r.redrives ?? 0,
		createdAt: r.created_at,
		updatedAt: r.updated_at
	};
}

/** A new saga row as `insertSaga` writes it. */
export interface NewSaga {
	readonly id: string;
	readonly def: SagaDefinition;
	readonly data: SagaData;
	readonly deadlineMs: number;
	readonly requestId: string | null;
	readonly parentSpanId: string | null;
	/** The lease: this node's owner token and its length in ms. */
	readonly owner: string;
	readonly leaseMs: number;
	/** The first step's name when its intent is recorded in the same statement, else null. */
	readonly firstStep: string | null;
	readonly with: readonly DeferredWrite[];
	readonly transaction?: Transaction;
}

/**
 * Records a new saga (RUNNING, leased to `owner`) and, with `firstStep`, that step's intent, in
 * one statement with the caller's own writes. @returns the saga and the intent's log id
 */
export async function insertSaga(
	seq: ShopDatabase,
	s: NewSaga
): Promise<SagaInstance & { firstLogId: number | null }> {
	const { def, id, data } = s;
	const first = s.firstStep;
	const statement = prependWrites(
		`WITH s AS (
						INSERT INTO sagas (id, name, version, status, current_step, data, deadline_at, request_id,
							lease_owner, lease_expires_at, parent_span_id, attempts)
						VALUES ($1, $2, $3, 'RUNNING', 0, $4::jsonb, now() + ($5 || ' milliseconds')::interval, $6,
							$7, now() + ($8 || ' milliseconds')::interval, $9, CASE WHEN $10::text IS NULL THEN 0 ELSE 1 END)
						RETURNING *),
					 f AS (
						INSERT INTO saga_steps (saga_id, step_index, step_name, phase, status, attempt)
						SELECT id, 0, $10, 'forward', 'STARTED', 1 FROM s WHERE $10::text IS NOT NULL RETURNING id)
					 SELECT s.*, (SELECT id FROM f) AS first_log_id FROM s`,
		[
			id,
			def.name,
			def.version,
			JSON.stringify(data),
			String(s.deadlineMs),
			s.requestId,
			s.owner,
			String(s.leaseMs),
			s.parentSpanId,
			first
		],
		s.with
	);
	const rows = (await fastQuery(seq, statement.sql, {
		bind: statement.bind,
		type: QueryTypes.SELECT,
		transaction: s.transaction
	})) as (SagaRow & { first_log_id: string | number | null })[];
	const firstLogId = rows[0]!.first_log_id;
	return {
		...toInstance(rows[0]!),
		firstLogId: firstLogId === null ? null : Number(firstLogId)
	};
}

export async function readSaga(seq: ShopDatabase, id: string): Promise<SagaInstance | null> {
	const rows = (await fastQuery(seq, "SELECT * FROM sagas WHERE id = $1", {
		bind: [id],
		type: QueryTypes.SELECT
	})) as SagaRow[];
	return rows[0] ? toInstance(rows[0]) : null;
}

export async function readSagaSteps(seq: ShopDatabase, id: string): Promise<SagaStepLogEntry[]> {
	const rows = (await fastQuery(seq, "SELECT * FROM saga_steps WHERE saga_id = $1 ORDER BY id", {
		bind: [id],
		type: QueryTypes.SELECT
	})) as SagaStepRow[];
	return rows.map(r => ({
		id: Number(r.id),
		sagaId: r.saga_id,
		stepIndex: r.step_index,
		stepName: r.step_name,
		phase: r.phase,
		status: r.status,
		attempt: r.attempt,
		result: r.result,
		error: r.error,
		startedAt: r.started_at,
		finishedAt: r.finished_at
	}));
}

/**
 * Claims the saga (it is unowned, its lease expired, or `owner` holds it) and renews the lease.
 * @returns the saga, or null when another node holds it or it has ended
 */
export async function claimSaga(
	seq: ShopDatabase,
	id: string,
	owner: string,
	leaseMs: number
): Promise<SagaInstance | null> {
	const rows = (await fastQuery(
		seq,
		`UPDATE sagas SET lease_owner = $2, lease_expires_at = now() + ($3 || ' milliseconds')::interval
					 WHERE id = $1 AND status IN ('RUNNING','COMPENSATING')
					   AND (lease_owner = $2 OR lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < now())
					 RETURNING *`,
		{ bind: [id, owner, String(leaseMs)], type: QueryTypes.SELECT }
	)) as SagaRow[];
	return rows[0] ? toInstance(rows[0]) : null;
}

/** Claims up to `limit` sagas whose lease expired, oldest change first. @returns their ids */
export async function claimExpiredSagas(
	seq: ShopDatabase,
	owner: string,
	leaseMs: number,
	limit: number
): Promise<string[]> {
	const rows = (await fastQuery(
		seq,
		`UPDATE sagas SET lease_owner = $1, lease_expires_at = now() + ($2 || ' milliseconds')::interval
						 WHERE id IN (
							SELECT id FROM sagas
							WHERE status IN ('RUNNING','COMPENSATING')
							  AND (lease_expires_at IS NULL OR lease_expires_at < now())
							ORDER BY updated_at LIMIT $3
							FOR UPDATE SKIP LOCKED)
						 RETURNING id`,
		{ bind: [owner, String(leaseMs), limit], type: QueryTypes.SELECT }
	)) as { id: string }[];
	return rows.map(r => r.id);
}

/** Hands back `owner`'s leases of running sagas, so another node resumes them at once. */
export async function handBackLeases(seq: ShopDatabase, owner: string): Promise<void> {
	await fastQuery(
		seq,
		`UPDATE sagas SET lease_expires_at = now() WHERE lease_owner = $1 AND status IN ('RUNNING','COMPENSATING')`,
		{ bind: [owner] }
	);
}

/** Parked (`FAILED`) sagas, by saga name. */
export async function countParkedSagas(seq: ShopDatabase): Promise<{ name: string; n: number }[]> {
	return (await fastQuery(
		seq,
		"SELECT name, count(*)::int AS n FROM sagas WHERE status = 'FAILED' GROUP BY name",
		{ type: QueryTypes.SELECT }
	)) as { name: string; n: number }[];
}
