/**
 * Fault injection for failure tests: a Moleculer middleware wrapping participants' LOCAL action
 * handlers (so the real service code and its real Postgres run; only the network's behaviour is
 * simulated). Rules per action name, consumed in order:
 * - `transient`: fail `times` calls with a retryable SERVICE_UNAVAILABLE before the handler runs;
 * - `down`: fail every call that way until `upAt` (ms epoch) if given;
 * - `loseAnswer`: run the handler (the effect commits) and then hold the answer `holdMs`, so a
 *   caller with a shorter timeout sees REQUEST_TIMEOUT: the answer is lost, the effect is not.
 */
import type { Middleware } from "moleculer";
import { shopError } from "../../platform/errors";

export type FaultRule =
	| { kind: "transient"; times: number }
	| { kind: "down"; upAt?: number }
	| { kind: "loseAnswer"; times: number; holdMs: number };

export class FaultPlan {
	private rules = new Map<string, FaultRule[]>();
	/** Calls seen per action, faulted or not. */
	readonly calls = new Map<string, number>();
	/** Faults injected, by kind. */
	readonly injected = { transient: 0, down: 0, loseAnswer: 0 };

	add(action: string, rule: FaultRule): this {
		const list = this.rules.get(action) ?? [];
		list.push({ ...rule });
		this.rules.set(action, list);
		return this;
	}

	clear(): void {
		this.rules.clear();
	}

	/** The fault for the next call of `action`, consuming one use of it. */
	next(action: string): FaultRule | null {
		this.calls.set(action, (this.calls.get(action) ?? 0) + 1);
		const list = this.rules.get(action);
		if (!list) return null;
		while (list.length > 0) {
			const r = list[0]!;
			if (r.kind === "down") {
				if (r.upAt === undefined || Date.now() < r.upAt) return r;
				list.shift();
				continue;
			}
			if (r.times <= 0) {
				list.shift();
				continue;
			}
			r.times--;
			return r;
		}
		return null;
	}

	middleware(): Middleware {
		// eslint-disable-next-line @typescript-eslint/no-this-alias
		const plan = this;
		return {
			name: "FaultInjection",
			localAction(next: (ctx: any) => Promise<unknown>, action: { name: string }) {
				return async function faulty(ctx: any): Promise<unknown> {
					const f = plan.next(action.name);
					if (!f) return next(ctx);
					if (f.kind === "transient" || f.kind === "down") {
						plan.injected[f.kind]++;
						throw shopError("SERVICE_UNAVAILABLE", `Injected fault on ${action.name}`);
					}
					plan.injected.loseAnswer++;
					const result = await next(ctx);
					await new Promise(r => setTimeout(r, f.holdMs));
					return result;
				};
			}
		} as unknown as Middleware;
	}
}
