/**
 * Crash injection for failure tests (`SAGA_FAULTS`, or the `faults` option): the engine asks at
 * two points of every forward step, before invoking it and right after recording its outcome,
 * whether to crash there. By default a crash is the process SIGKILLing itself (no cleanup,
 * nothing flushed), the crash-only software view (Candea & Fox, HotOS 2003).
 */
import type { SagaEngineOptions, SagaFaultKind } from "./types";

/** Crashes (`options.crash`) when the faults ask for it at this point; else nothing. */
export type CrashPoint = (kind: SagaFaultKind, step: string, sagaId: string) => void;

export function crashPoint(opts: SagaEngineOptions): CrashPoint {
	const faults = opts.faults ?? [];
	const crash = opts.crash ?? (() => process.kill(process.pid, "SIGKILL"));
	return (kind, step, sagaId) => {
		const hit =
			typeof faults === "function"
				? faults({ kind, step, sagaId })
				: faults.some(f => f.kind === kind && f.step === step);
		if (hit) crash();
	};
}
