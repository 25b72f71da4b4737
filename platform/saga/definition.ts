/**
 * What the engine reads off a saga definition: which deployed version drives a saga, where its
 * pivot lies (the point of no return: Garcia-Molina & Salem's "Sagas", SIGMOD 1987, pivot
 * transactions), the idempotency key of each step call, and the error records of its log.
 */
import type {
	SagaDefinition,
	SagaErrorRecord,
	SagaInstance,
	SagaPhase,
	SagaRegistry
} from "./types";

/**
 * Whether step `i` lies after the saga's pivot: the first step following the last compensable
 * one. A failure up to the pivot is compensated; after it the saga can only go forward.
 */
export function sagaIsAfterPivot(
	def: { readonly steps: readonly { readonly compensation?: unknown }[] },
	i: number
): boolean {
	let lastCompensable = -1;
	def.steps.forEach((s, idx) => {
		if (s.compensation) lastCompensable = idx;
	});
	return i > lastCompensable + 1;
}

/**
 * The idempotency key of a step call: `<sagaId>:<step>` (`:compensate` for its compensation),
 * plus `:r<N>` once an operator has redriven the saga N times, so a redriven step is really
 * tried again instead of replaying the outcome that parked it.
 */
export function sagaStepKey(
	saga: Pick<SagaInstance, "id" | "redrives">,
	step: string,
	compensate = false
): string {
	return `${saga.id}:${step}${compensate ? ":compensate" : ""}${saga.redrives > 0 ? `:r${saga.redrives}` : ""}`;
}

/** Every deployed version of saga `name`. */
function versionsOf(sagas: SagaRegistry | undefined, name: string): readonly SagaDefinition[] {
	const entry = sagas?.[name];
	if (!entry) return [];
	return Array.isArray(entry) ? entry : [entry as SagaDefinition];
}

/**
 * The definition of saga `name`: the given version, or the highest deployed.
 * @throws Error when that version is not deployed on this node
 */
export function findSagaDefinition(
	sagas: SagaRegistry | undefined,
	name: string,
	version?: number
): SagaDefinition {
	const all = versionsOf(sagas, name);
	if (all.length === 0) throw new Error(`Unknown saga "${name}"`);
	if (version === undefined) return all.reduce((a, b) => (b.version > a.version ? b : a));
	const def = all.find(d => d.version === version);
	if (!def)
		throw new Error(
			`Saga "${name}" v${version} is not deployed here (have v${all.map(d => d.version).join(", v")})`
		);
	return def;
}

/** An error as the saga log keeps it. */
export function errorRecord(step: string, phase: SagaPhase, err: unknown): SagaErrorRecord {
	const e = (err ?? {}) as { type?: unknown; code?: unknown; message?: unknown; name?: unknown };
	return {
		step,
		phase,
		type: typeof e.type === "string" && e.type ? e.type : String(e.name ?? "Error"),
		code: typeof e.code === "number" ? e.code : null,
		message: String(e.message ?? err),
		at: new Date().toISOString()
	};
}

/** The error record of a saga whose deadline passed before forward step `step`. */
export function deadlineRecord(step: string): SagaErrorRecord {
	return {
		step,
		phase: "forward",
		type: "SAGA_DEADLINE_EXCEEDED",
		code: null,
		message: "The saga's deadline passed",
		at: new Date().toISOString()
	};
}
