/**
 * The saga mixin in isolation: a small orchestrator (`sagatest`, its saga log in a real Postgres
 * database) drives in-memory participants written here (`sagapart`). The participants are our
 * own fakes, scripted per saga; the database is never faked.
 *
 * The saga under test, `trip`, has the order saga's shape:
 *   reserve (compensation: unreserve) → charge (compensation: refund)
 *   → confirm (a local method, no compensation: the pivot) → ship (no compensation: after the pivot)
 */
import crypto from "node:crypto";
import {
	Errors,
	type Context,
	type Service,
	type ServiceBroker,
	type ServiceSchema
} from "moleculer";
import { DbMixin } from "../../mixins/db.mixin";
import {
	SagaMixin,
	backoffDelay,
	sagaIsAfterPivot,
	sagaMigrations,
	type SagaDefinition,
	type SagaInstance,
	type SagaMixinMethods,
	type SagaRetryPolicy
} from "../../mixins/saga.mixin";
import { isTransientError, shopError } from "../../platform/errors";
import { startTestBroker, waitFor, type TestBroker } from "../support/broker";
import { fastQuery, QueryTypes, type Transaction } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";

type Act = "reserve" | "unreserve" | "charge" | "refund" | "confirm" | "ship";
type PartCtx = Context<
	{ ref: string; key: string; reservationId?: string },
	{ idempotencyKey?: string }
>;
/** What a participant does on its `n`-th call (from 1) for one saga. */
type Behaviour = (n: number, call: Call) => unknown;

interface Call {
	act: Act;
	ref: string;
	/** `ctx.meta.idempotencyKey` as the participant received it. */
	metaKey: string | undefined;
	/** The key the saga handed to the step's params builder. */
	paramsKey: string;
	params: Record<string, unknown>;
	/** The status of this step's newest log row while the participant ran. */
	logStatusSeen?: string;
}

interface TripData extends Record<string, unknown> {
	ref: string;
	reservationId?: string;
	paymentId?: string;
}

/** Scripted behaviour per saga (`ref`) and participant; default: succeed. */
const plans = new Map<string, Partial<Record<Act, Behaviour>>>();
const calls: Call[] = [];
/** Hook invocations: `{ ref, hook, arg, statusInTx }`. */
const hooks: { ref: string; hook: string; arg: unknown; statusInTx?: string }[] = [];
/** `<ref>:<hook>:<step>` entries make that hook throw once (an infrastructure failure). */
const hookFailures = new Set<string>();
/** The test orchestrator as its tests see it: the saga mixin and DbMixin's database. */
type Orchestrator = SagaMixinMethods & { db: ShopDatabase };
/** `this` in the orchestrator's methods. */
type OrchestratorThis = Service & Orchestrator;

/** The orchestrator currently running, for participants to peek at the saga log. */
let orchestrator: Orchestrator | null = null;

const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));
const business = (): Error => new Errors.MoleculerClientError("Rejected", 409, "TRIP_REJECTED");
const retryable = (): Error =>
	new Errors.MoleculerRetryableError("Down", 503, "SERVICE_UNAVAILABLE");

const STEP_OF: Record<Act, string> = {
	reserve: "reserve",
	unreserve: "reserve",
	charge: "charge",
	refund: "charge",
	confirm: "confirm",
	ship: "ship"
};

async function behave(
	act: Act,
	ref: string,
	params: Record<string, unknown>,
	metaKey: string | undefined
): Promise<unknown> {
	const call: Call = { act, ref, metaKey, paramsKey: String(params.key), params };
	const sagaId = call.paramsKey.split(":")[0]!;
	if (orchestrator) {
		const log = await orchestrator.getSagaSteps(sagaId);
		call.logStatusSeen = log.filter(l => l.stepName === STEP_OF[act]).at(-1)?.status;
	}
	calls.push(call);
	const n = calls.filter(c => c.ref === ref && c.act === act).length;
	const plan = plans.get(ref)?.[act];
	const result = plan ? await plan(n, call) : undefined;
	return result ?? { id: `${act}-${n}`, act };
}

/** In-memory participants. */
function participantService(): Partial<ServiceSchema> {
	const action = (act: Act) => ({
		handler: (ctx: PartCtx) => behave(act, ctx.params.ref, ctx.params, ctx.meta.idempotencyKey)
	});
	return {
		name: "sagapart",
		actions: {
			reserve: action("reserve"),
			unreserve: action("unreserve"),
			charge: action("charge"),
			refund: action("refund"),
			ship: action("ship")
		}
	};
}

const RETRY: SagaRetryPolicy = { maxAttempts: 3, baseDelayMs: 5, maxDelayMs: 20 };

function tripSaga(): SagaDefinition<TripData> {
	const p = (d: TripData, key: string) => ({ ref: d.ref, key });
	return {
		name: "trip",
		version: 1,
		stepTimeoutMs: 2_000,
		retry: RETRY,
		businessErrors: ["TRIP_REJECTED"],
		failureReason: e =>
			e.type === "TRIP_REJECTED"
				? "REJECTED"
				: e.type === "SAGA_DEADLINE_EXCEEDED"
					? "TIMEOUT"
					: "PROCESSING_FAILED",
		steps: [
			{
				name: "reserve",
				action: "sagapart.reserve",
				params: p,
				result: (_d, r) => ({ reservationId: (r as { id: string }).id }),
				compensation: {
					action: "sagapart.unreserve",
					params: (d, key) => ({ ...p(d, key), reservationId: d.reservationId })
				}
			},
			{
				name: "charge",
				action: "sagapart.charge",
				params: p,
				result: (_d, r) => ({ paymentId: (r as { id: string }).id }),
				compensation: { action: "sagapart.refund", params: p }
			},
			{ name: "confirm", method: "confirmTrip", params: p },
			{ name: "ship", action: "sagapart.ship", params: p }
		],
		onStepSucceeded: "tripStep",
		onCompleted: "tripCompleted",
		onCompensated: "tripCompensated",
		onFailed: "tripFailed"
	};
}

/**
 * `tour`: the trip's steps with no hooks but a mirror: the `tours` row (id = ref) takes a status
 * after each step, and its `cancelled` flag refuses the steps up to the pivot.
 */
function tourSaga(): SagaDefinition<TripData> {
	const trip = tripSaga();
	return {
		name: "tour",
		version: 1,
		stepTimeoutMs: 2_000,
		retry: RETRY,
		businessErrors: ["TRIP_REJECTED", "ORDERS_CANCEL_REQUESTED"],
		failureReason: e => e.type,
		steps: trip.steps,
		mirror: {
			table: "tours",
			idField: "ref",
			statusColumn: "status",
			statusAfterStep: {
				reserve: "RESERVED",
				charge: "PAID",
				confirm: "CONFIRMED",
				ship: "SHIPPED"
			},
			keepStatuses: ["FROZEN"],
			updatedAtColumn: "updated_at",
			refuse: { column: "cancelled", error: "ORDERS_CANCEL_REQUESTED" }
		}
	};
}

const tourMigration = {
	name: "950-create-tours",
	up: `CREATE TABLE tours (id uuid PRIMARY KEY, status text NOT NULL, cancelled boolean NOT NULL DEFAULT false,
		updated_at timestamptz NOT NULL DEFAULT now())`,
	down: "DROP TABLE tours;"
};

/** The orchestrator under test: DbMixin on the `orders` database with the saga tables only. */
function orchestratorService(): Partial<ServiceSchema> {
	async function hook(
		this: OrchestratorThis,
		saga: SagaInstance<TripData>,
		name: string,
		arg: unknown,
		t: Transaction
	): Promise<void> {
		const rows = (await fastQuery(this.db, "SELECT status FROM sagas WHERE id = $1", {
			bind: [saga.id],
			type: QueryTypes.SELECT,
			transaction: t
		})) as { status: string }[];
		hooks.push({ ref: saga.data.ref, hook: name, arg, statusInTx: rows[0]?.status });
		const failure = `${saga.data.ref}:${name}:${typeof arg === "string" ? arg : ""}`;
		if (hookFailures.delete(failure)) throw new Error(`Injected failure in ${failure}`);
	}
	return {
		name: "sagatest",
		mixins: [
			DbMixin({ service: "orders", migrations: [...sagaMigrations, tourMigration] }),
			SagaMixin()
		],
		sagas: { trip: tripSaga(), tour: tourSaga() },
		methods: {
			/** The pivot, a local method step: `(saga, idempotencyKey, params)`. */
			async confirmTrip(
				saga: SagaInstance<TripData>,
				key: string,
				params: Record<string, unknown>
			): Promise<unknown> {
				expect(params).toEqual({ ref: saga.data.ref, key });
				return behave("confirm", saga.data.ref, params, key);
			},
			async tripStep(
				this: OrchestratorThis,
				saga: SagaInstance<TripData>,
				step: string,
				t: Transaction
			): Promise<void> {
				await hook.call(this, saga, "tripStep", step, t);
			},
			async tripCompleted(
				this: OrchestratorThis,
				saga: SagaInstance<TripData>,
				t: Transaction
			): Promise<void> {
				await hook.call(this, saga, "tripCompleted", null, t);
			},
			async tripCompensated(
				this: OrchestratorThis,
				saga: SagaInstance<TripData>,
				reason: string | null,
				t: Transaction
			): Promise<void> {
				await hook.call(this, saga, "tripCompensated", reason, t);
			},
			async tripFailed(
				this: OrchestratorThis,
				saga: SagaInstance<TripData>,
				t: Transaction
			): Promise<void> {
				await hook.call(this, saga, "tripFailed", null, t);
			}
		}
	};
}

async function startOrchestrator(prefix?: string): Promise<TestBroker> {
	const t = await startTestBroker([], {
		extra: [participantService(), orchestratorService()],
		prefix
	});
	orchestrator = t.broker.getLocalService("sagatest") as unknown as Orchestrator;
	return t;
}

const callsOf = (ref: string): string[] => calls.filter(c => c.ref === ref).map(c => c.act);
const hooksOf = (ref: string) => hooks.filter(h => h.ref === ref).map(h => [h.hook, h.arg]);

describe("saga mixin: pure functions", () => {
	const policy: SagaRetryPolicy = { maxAttempts: 5, baseDelayMs: 100, maxDelayMs: 1_000 };

	it("backoffDelay is full jitter below an exponential cap bounded by maxDelayMs", () => {
		const top = () => 0.999999;
		// Attempt 2 (the first retry) waits below base, then the cap doubles per attempt.
		expect(backoffDelay(policy, 2, top)).toBe(99);
		expect(backoffDelay(policy, 3, top)).toBe(199);
		expect(backoffDelay(policy, 4, top)).toBe(399);
		expect(backoffDelay(policy, 5, top)).toBe(799);
		expect(backoffDelay(policy, 6, top)).toBe(999);
		expect(backoffDelay(policy, 30, top)).toBe(999);
		// An attempt number below 2 never shrinks the cap under base.
		expect(backoffDelay(policy, 1, top)).toBe(99);
		// Jitter: the random draw scales the whole cap, down to zero.
		expect(backoffDelay(policy, 4, () => 0)).toBe(0);
		expect(backoffDelay(policy, 4, () => 0.5)).toBe(200);
		expect(backoffDelay(policy, 6, () => 0.25)).toBe(250);
	});

	it("backoffDelay with Math.random stays within [0, cap) and is an integer", () => {
		const seen = new Set<number>();
		for (let i = 0; i < 2_000; i++) {
			const d = backoffDelay(policy, 4);
			expect(Number.isInteger(d)).toBe(true);
			expect(d).toBeGreaterThanOrEqual(0);
			expect(d).toBeLessThan(400);
			seen.add(d);
		}
		// Jittered, not a constant.
		expect(seen.size).toBeGreaterThan(50);
	});

	it("isTransientError: retryable errors and the transient types, never business or client errors", () => {
		expect(isTransientError(new Errors.MoleculerRetryableError("x", 503, "ANYTHING"))).toBe(
			true
		);
		expect(
			isTransientError(new Errors.RequestTimeoutError({ action: "a.b", nodeID: "n" }))
		).toBe(true);
		expect(isTransientError(new Errors.ServiceNotAvailableError({ action: "a.b" }))).toBe(true);
		// A type from the list counts even when the class was lost crossing the transporter.
		expect(isTransientError({ type: "SERVICE_UNAVAILABLE", retryable: false })).toBe(true);
		expect(isTransientError({ type: "PAYMENTS_PROCESSOR_UNAVAILABLE" })).toBe(true);
		expect(isTransientError({ type: "REQUEST_TIMEOUT" })).toBe(true);
		expect(isTransientError(shopError("PAYMENTS_PROCESSOR_UNAVAILABLE"))).toBe(true);
		expect(isTransientError(shopError("INVENTORY_OUT_OF_STOCK"))).toBe(false);
		expect(isTransientError(new Errors.MoleculerClientError("x", 409, "TRIP_REJECTED"))).toBe(
			false
		);
		expect(isTransientError(new Errors.ValidationError("bad", "VALIDATION_ERROR", []))).toBe(
			false
		);
		expect(isTransientError(new Error("boom"))).toBe(false);
		expect(isTransientError(null)).toBe(false);
		expect(isTransientError(undefined)).toBe(false);
		expect(isTransientError("SERVICE_UNAVAILABLE")).toBe(false);
	});

	it("sagaIsAfterPivot: the pivot follows the last compensable step; only later steps are after it", () => {
		const trip = tripSaga();
		expect([0, 1, 2, 3].map(i => sagaIsAfterPivot(trip, i))).toEqual([
			false,
			false,
			false,
			true
		]);
		const step = (name: string, compensable: boolean) => ({
			name,
			action: "x.y",
			...(compensable ? { compensation: { action: "x.z", params: () => ({}) } } : {})
		});
		const def = (...c: boolean[]): SagaDefinition =>
			({ ...trip, steps: c.map((b, i) => step(`s${i}`, b)) }) as SagaDefinition;
		// Nothing compensable: the first step is the pivot.
		expect([0, 1, 2].map(i => sagaIsAfterPivot(def(false, false, false), i))).toEqual([
			false,
			true,
			true
		]);
		// A non-compensable step before a compensable one is not after the pivot.
		expect([0, 1, 2, 3].map(i => sagaIsAfterPivot(def(true, false, true, false), i))).toEqual([
			false,
			false,
			false,
			false
		]);
		// Everything compensable: no step is after the pivot.
		expect([0, 1].map(i => sagaIsAfterPivot(def(true, true), i))).toEqual([false, false]);
	});
});

describe("saga mixin on a real Postgres", () => {
	let t: TestBroker;
	let broker: ServiceBroker;
	let svc: SagaMixinMethods;

	beforeAll(async () => {
		t = await startOrchestrator();
		broker = t.broker;
		svc = orchestrator!;
	});
	afterAll(async () => t?.stop());

	/** A new saga with its script; returns its id and ref. */
	async function newTrip(
		plan: Partial<Record<Act, Behaviour>> = {},
		deadlineMs = 30_000
	): Promise<{ id: string; ref: string }> {
		const ref = crypto.randomUUID();
		plans.set(ref, plan);
		const saga = await svc.createSaga("trip", { ref }, { deadlineMs });
		expect(saga).toMatchObject({
			status: "RUNNING",
			currentStep: 0,
			data: { ref },
			attempts: 0,
			errors: []
		});
		return { id: saga.id, ref };
	}

	it("runs the steps in order; each is logged STARTED before its call and SUCCEEDED after", async () => {
		const { id, ref } = await newTrip();
		const done = await svc.runSaga(id);
		expect(done).toMatchObject({ status: "COMPLETED" });
		expect(callsOf(ref)).toEqual(["reserve", "charge", "confirm", "ship"]);
		// The intent was durable while each participant ran.
		expect(calls.filter(c => c.ref === ref).map(c => c.logStatusSeen)).toEqual([
			"STARTED",
			"STARTED",
			"STARTED",
			"STARTED"
		]);

		const saga = (await svc.getSaga(id))!;
		expect(saga).toMatchObject({
			status: "COMPLETED",
			currentStep: 4,
			failureReason: null,
			errors: [],
			attempts: 4,
			leaseOwner: null,
			leaseExpiresAt: null,
			// Step results merged into the data.
			data: { ref, reservationId: "reserve-1", paymentId: "charge-1" }
		});
		const log = await svc.getSagaSteps(id);
		expect(log.map(l => [l.stepIndex, l.stepName, l.phase, l.status, l.attempt])).toEqual([
			[0, "reserve", "forward", "SUCCEEDED", 1],
			[1, "charge", "forward", "SUCCEEDED", 1],
			[2, "confirm", "forward", "SUCCEEDED", 1],
			[3, "ship", "forward", "SUCCEEDED", 1]
		]);
		expect(log[0]!.result).toEqual({ id: "reserve-1", act: "reserve" });
		for (const l of log) expect(l.finishedAt).not.toBeNull();
		// Hooks ran inside the transition's transaction: the completion hook saw COMPLETED.
		expect(hooksOf(ref)).toEqual([
			["tripStep", "reserve"],
			["tripStep", "charge"],
			["tripStep", "confirm"],
			["tripStep", "ship"],
			["tripCompleted", null]
		]);
		expect(hooks.find(h => h.ref === ref && h.hook === "tripCompleted")!.statusInTx).toBe(
			"COMPLETED"
		);
		// A finished saga is not run again.
		await svc.runSaga(id);
		expect(callsOf(ref)).toHaveLength(4);
	});

	it("hands each step the idempotency key <sagaId>:<step> in ctx.meta and the params builder", async () => {
		const { id, ref } = await newTrip({ ship: () => Promise.reject(business()) });
		await svc.runSaga(id);
		const mine = calls.filter(c => c.ref === ref);
		const forward = mine.filter(c => ["reserve", "charge", "ship"].includes(c.act));
		expect(forward.map(c => c.metaKey)).toEqual([
			`${id}:reserve`,
			`${id}:charge`,
			`${id}:ship`
		]);
		expect(forward.map(c => c.paramsKey)).toEqual([
			`${id}:reserve`,
			`${id}:charge`,
			`${id}:ship`
		]);
		// The local method step gets it as an argument.
		expect(mine.find(c => c.act === "confirm")!.metaKey).toBe(`${id}:confirm`);
	});

	it("a business error at step 2 compensates steps 2 then 1 and ends COMPENSATED with its reason", async () => {
		const { id, ref } = await newTrip({ charge: () => Promise.reject(business()) });
		const done = await svc.runSaga(id);
		expect(done).toMatchObject({ status: "COMPENSATED", failureReason: "REJECTED" });
		// Not retried; the failed step is compensated too (its effect may have happened), in reverse.
		expect(callsOf(ref)).toEqual(["reserve", "charge", "refund", "unreserve"]);
		const unreserve = calls.find(c => c.ref === ref && c.act === "unreserve")!;
		// Compensations get their own key and the data the forward steps produced.
		expect(unreserve.metaKey).toBe(`${id}:reserve:compensate`);
		expect(unreserve.params).toMatchObject({ reservationId: "reserve-1" });

		const saga = (await svc.getSaga(id))!;
		expect(saga).toMatchObject({
			status: "COMPENSATED",
			failureReason: "REJECTED",
			leaseOwner: null
		});
		expect(saga.errors).toEqual([
			expect.objectContaining({
				step: "charge",
				phase: "forward",
				type: "TRIP_REJECTED",
				code: 409
			})
		]);
		const log = await svc.getSagaSteps(id);
		expect(log.map(l => [l.stepName, l.phase, l.status, l.attempt])).toEqual([
			["reserve", "forward", "SUCCEEDED", 1],
			["charge", "forward", "FAILED", 1],
			["charge", "compensate", "SUCCEEDED", 1],
			["reserve", "compensate", "SUCCEEDED", 1]
		]);
		expect(log[1]!.error).toMatchObject({ type: "TRIP_REJECTED" });
		expect(hooksOf(ref)).toEqual([
			["tripStep", "reserve"],
			["tripCompensated", "REJECTED"]
		]);
		expect(hooks.find(h => h.ref === ref && h.hook === "tripCompensated")!.statusInTx).toBe(
			"COMPENSATED"
		);
	});

	it("retries a transient error up to maxAttempts and goes on when the participant recovers", async () => {
		const { id, ref } = await newTrip({
			charge: n => (n <= 2 ? Promise.reject(retryable()) : undefined)
		});
		const done = await svc.runSaga(id);
		expect(done).toMatchObject({ status: "COMPLETED" });
		// Exactly maxAttempts calls: the saga's policy is the only retry layer.
		expect(callsOf(ref)).toEqual(["reserve", "charge", "charge", "charge", "confirm", "ship"]);
		const charge = (await svc.getSagaSteps(id)).filter(l => l.stepName === "charge");
		expect(charge.map(l => [l.status, l.attempt])).toEqual([
			["FAILED", 1],
			["FAILED", 2],
			["SUCCEEDED", 3]
		]);
		expect(charge[0]!.error).toMatchObject({
			type: "SERVICE_UNAVAILABLE",
			code: 503,
			phase: "forward"
		});
		// The same idempotency key on every attempt.
		expect(
			new Set(calls.filter(c => c.ref === ref && c.act === "charge").map(c => c.metaKey))
		).toEqual(new Set([`${id}:charge`]));
		const saga = (await svc.getSaga(id))!;
		expect(saga.attempts).toBe(6);
		expect(saga.errors.map(e => e.type)).toEqual([
			"SERVICE_UNAVAILABLE",
			"SERVICE_UNAVAILABLE"
		]);
	});

	it("a transient error that outlasts maxAttempts compensates", async () => {
		// A transient type without the retryable flag (its class lost on the way) counts too.
		const { id, ref } = await newTrip({
			charge: () =>
				Promise.reject(new Errors.MoleculerError("Down", 503, "SERVICE_UNAVAILABLE"))
		});
		const done = await svc.runSaga(id);
		expect(done).toMatchObject({ status: "COMPENSATED", failureReason: "PROCESSING_FAILED" });
		expect(callsOf(ref)).toEqual([
			"reserve",
			"charge",
			"charge",
			"charge",
			"refund",
			"unreserve"
		]);
		const log = await svc.getSagaSteps(id);
		expect(
			log.filter(l => l.phase === "forward" && l.stepName === "charge").map(l => l.attempt)
		).toEqual([1, 2, 3]);
		expect((await svc.getSaga(id))!.errors).toHaveLength(3);
	});

	it("a failing pivot step still compensates what came before it", async () => {
		const { id, ref } = await newTrip({ confirm: () => Promise.reject(business()) });
		expect(await svc.runSaga(id)).toMatchObject({
			status: "COMPENSATED",
			failureReason: "REJECTED"
		});
		expect(callsOf(ref)).toEqual(["reserve", "charge", "confirm", "refund", "unreserve"]);
	});

	it("a step after the pivot that keeps failing parks the saga FAILED instead of compensating", async () => {
		const { id, ref } = await newTrip({ ship: () => Promise.reject(retryable()) });
		const done = await svc.runSaga(id);
		expect(done).toMatchObject({ status: "FAILED" });
		expect(callsOf(ref)).toEqual(["reserve", "charge", "confirm", "ship", "ship", "ship"]);
		const saga = (await svc.getSaga(id))!;
		expect(saga).toMatchObject({
			status: "FAILED",
			failureReason: null,
			currentStep: 3,
			leaseOwner: null
		});
		expect(saga.errors.map(e => [e.step, e.phase, e.type])).toEqual([
			["ship", "forward", "SERVICE_UNAVAILABLE"],
			["ship", "forward", "SERVICE_UNAVAILABLE"],
			["ship", "forward", "SERVICE_UNAVAILABLE"]
		]);
		expect((await svc.getSagaSteps(id)).some(l => l.phase === "compensate")).toBe(false);
		expect(hooksOf(ref).at(-1)).toEqual(["tripFailed", null]);
		expect(hooks.find(h => h.ref === ref && h.hook === "tripFailed")!.statusInTx).toBe(
			"FAILED"
		);
		// A parked saga waits for an operator: running it again does nothing.
		expect(await svc.runSaga(id)).toMatchObject({ status: "FAILED" });
		expect(callsOf(ref)).toHaveLength(6);
	});

	it("a business error after the pivot parks at once (no retry, no compensation)", async () => {
		const { id, ref } = await newTrip({ ship: () => Promise.reject(business()) });
		expect(await svc.runSaga(id)).toMatchObject({ status: "FAILED" });
		expect(callsOf(ref)).toEqual(["reserve", "charge", "confirm", "ship"]);
	});

	it("a compensation that keeps failing parks the saga FAILED with its error history", async () => {
		const { id, ref } = await newTrip({
			charge: () => Promise.reject(business()),
			refund: () => Promise.reject(retryable())
		});
		const done = await svc.runSaga(id);
		expect(done).toMatchObject({ status: "FAILED", failureReason: "REJECTED" });
		// Compensations retry harder than steps (at least 8 attempts), then park; stopped at the
		// failing compensation: the older step is not compensated out of order.
		expect(callsOf(ref)).toEqual(["reserve", "charge", ...Array(8).fill("refund")]);
		const saga = (await svc.getSaga(id))!;
		expect(saga).toMatchObject({ status: "FAILED", failureReason: "REJECTED" });
		expect(saga.errors.map(e => [e.step, e.phase, e.type])).toEqual([
			["charge", "forward", "TRIP_REJECTED"],
			...Array(8).fill(["charge", "compensate", "SERVICE_UNAVAILABLE"])
		]);
		const comp = (await svc.getSagaSteps(id)).filter(l => l.phase === "compensate");
		expect(comp.map(l => [l.stepName, l.status, l.attempt])).toEqual(
			Array.from({ length: 8 }, (_, i) => ["charge", "FAILED", i + 1])
		);
		expect(hooksOf(ref).map(h => h[0])).toEqual(["tripStep", "tripFailed"]);
	});

	it("a deadline already passed compensates before any step runs (SAGA_DEADLINE_EXCEEDED)", async () => {
		const { id, ref } = await newTrip({}, 1);
		await sleep(10);
		const done = await svc.runSaga(id);
		expect(done).toMatchObject({ status: "COMPENSATED", failureReason: "TIMEOUT" });
		expect(callsOf(ref)).toEqual([]);
		const saga = (await svc.getSaga(id))!;
		expect(saga.errors).toEqual([
			expect.objectContaining({
				step: "reserve",
				phase: "forward",
				type: "SAGA_DEADLINE_EXCEEDED"
			})
		]);
		expect(await svc.getSagaSteps(id)).toEqual([]);
		expect(hooksOf(ref)).toEqual([["tripCompensated", "TIMEOUT"]]);
	});

	it("a deadline passing during a slow step compensates before the next step", async () => {
		const { id, ref } = await newTrip({ reserve: () => sleep(400) }, 150);
		const done = await svc.runSaga(id);
		expect(done).toMatchObject({ status: "COMPENSATED", failureReason: "TIMEOUT" });
		expect(callsOf(ref)).toEqual(["reserve", "unreserve"]);
		expect((await svc.getSaga(id))!.errors).toEqual([
			expect.objectContaining({ step: "charge", type: "SAGA_DEADLINE_EXCEEDED" })
		]);
	});

	it("a deadline passing after the pivot does not undo the saga: it goes forward", async () => {
		// The pivot is the point of no return: compensating after it would refund and release
		// an order its customer was already told is confirmed.
		// The deadline must pass during the pivot, not before it: the steps ahead of it get
		// 1.5 s (150 ms was too little on a loaded CI machine, which compensated before the pivot).
		const { id, ref } = await newTrip({ confirm: () => sleep(2_500) }, 1_500);
		const done = await svc.runSaga(id);
		expect(done).toMatchObject({ status: "COMPLETED" });
		expect(callsOf(ref)).toEqual(["reserve", "charge", "confirm", "ship"]);
	});

	it("a step whose success cannot be recorded is left to recovery and re-invoked with the same key", async () => {
		// The hook runs in the transaction that records the step's success; its failure rolls
		// that back. Recording is the orchestrator's business, not the step's: the saga stays
		// RUNNING at that step, and the next run invokes it again with the same idempotency key
		// (participants answer a repeat with the first outcome).
		const { id, ref } = await newTrip();
		hookFailures.add(`${ref}:tripStep:charge`);
		expect(await svc.runSaga(id)).toBeNull();
		expect(await svc.getSaga(id)).toMatchObject({ status: "RUNNING", currentStep: 1 });
		const log = await svc.getSagaSteps(id);
		expect(log.map(l => [l.stepName, l.status])).toEqual([
			["reserve", "SUCCEEDED"],
			["charge", "STARTED"]
		]);
		// Nothing of the rolled-back transition leaked: charge's result never reached the data.
		expect((await svc.getSaga(id))!.data).toEqual({ ref, reservationId: "reserve-1" });
		expect(await svc.runSaga(id)).toMatchObject({ status: "COMPLETED" });
		expect(callsOf(ref)).toEqual(["reserve", "charge", "charge", "confirm", "ship"]);
		const keys = calls.filter(c => c.ref === ref && c.act === "charge").map(c => c.metaKey);
		expect(keys).toEqual([`${id}:charge`, `${id}:charge`]);
	});

	it("a final transition whose hook fails rolls back, keeps the saga RUNNING and is redone by the next run", async () => {
		const { id, ref } = await newTrip();
		hookFailures.add(`${ref}:tripCompleted:`);
		// runSaga never throws: an orchestrator-side failure leaves the saga resumable.
		expect(await svc.runSaga(id)).toBeNull();
		// The last step's outcome is recorded in the completion's transaction: both rolled back,
		// the last step stays STARTED.
		expect(await svc.getSaga(id)).toMatchObject({ status: "RUNNING", currentStep: 3 });
		const log = await svc.getSagaSteps(id);
		expect(log.map(l => [l.stepName, l.status])).toEqual([
			["reserve", "SUCCEEDED"],
			["charge", "SUCCEEDED"],
			["confirm", "SUCCEEDED"],
			["ship", "STARTED"]
		]);
		expect(await svc.runSaga(id)).toMatchObject({ status: "COMPLETED" });
		// Only the last step ran again, with the same idempotency key (participants answer a
		// repeat with the first outcome).
		expect(callsOf(ref)).toEqual(["reserve", "charge", "confirm", "ship", "ship"]);
		const keys = calls.filter(c => c.ref === ref && c.act === "ship").map(c => c.metaKey);
		expect(keys).toEqual([`${id}:ship`, `${id}:ship`]);
		expect(hooksOf(ref).filter(h => h[0] === "tripCompleted")).toHaveLength(2);
	});

	it("launchSaga runs in the background", async () => {
		const { id, ref } = await newTrip();
		(broker.getLocalService("sagatest") as unknown as SagaMixinMethods).launchSaga(id);
		const saga = await waitFor(
			() => svc.getSaga(id),
			s => s?.status === "COMPLETED",
			5_000
		);
		expect(saga?.status).toBe("COMPLETED");
		expect(callsOf(ref)).toEqual(["reserve", "charge", "confirm", "ship"]);
	});
});

describe("saga mixin: a mirror kept in the saga's own statements", () => {
	let t: TestBroker;
	let svc: Orchestrator;

	beforeAll(async () => {
		t = await startOrchestrator();
		svc = orchestrator!;
	});
	afterAll(async () => t?.stop());

	const tourStatus = async (ref: string): Promise<string> =>
		(
			(await fastQuery(svc.db, "SELECT status FROM tours WHERE id = $1", {
				bind: [ref],
				type: QueryTypes.SELECT
			})) as { status: string }[]
		)[0]!.status;

	/** A participant behaviour that changes the calling tour's row (`set`: SQL assignments). */
	const onTour =
		(set: string): Behaviour =>
		async (_n, call) => {
			await fastQuery(svc.db, `UPDATE tours SET ${set} WHERE id = $1`, {
				bind: [call.ref]
			});
			return undefined;
		};

	/** Runs a tour as `launchSaga` would: owned, from its first step's recorded intent. */
	const run = async (c: { id: string; firstLogId: number | null }) =>
		svc.runSaga(c.id, (await svc.getSaga(c.id))!, c.firstLogId);

	/** A tour row and its saga created in one transaction, the first step's intent with them. */
	async function newTour(
		plan: Partial<Record<Act, Behaviour>> = {}
	): Promise<{ id: string; ref: string; firstLogId: number | null }> {
		const ref = crypto.randomUUID();
		plans.set(ref, plan);
		return svc.db.transaction(async tx => {
			await fastQuery(svc.db, "INSERT INTO tours (id, status) VALUES ($1, 'NEW')", {
				bind: [ref],
				transaction: tx
			});
			const saga = await svc.createSaga(
				"tour",
				{ ref },
				{ deadlineMs: 30_000, transaction: tx, startFirstStep: true }
			);
			return { id: saga.id, ref, firstLogId: saga.firstLogId };
		});
	}

	it("startFirstStep records step 1's intent with the saga; each step's status lands on the row", async () => {
		const seen: string[] = [];
		const peek = async (_n: number, call: Call): Promise<undefined> => {
			seen.push(`${call.act}:${await tourStatus(call.ref)}`);
			return undefined;
		};
		const { id, ref, firstLogId } = await newTour({ reserve: peek, charge: peek, ship: peek });
		expect(firstLogId).toEqual(expect.any(Number));
		const created = (await svc.getSaga(id))!;
		expect(created.attempts).toBe(1);
		expect((await svc.getSagaSteps(id)).map(l => [l.id, l.stepName, l.status])).toEqual([
			[firstLogId, "reserve", "STARTED"]
		]);

		(svc as unknown as SagaMixinMethods).launchSaga(id, {
			fresh: { ...created, firstLogId }
		});
		const done = await waitFor(
			() => svc.getSaga(id),
			s => s?.status === "COMPLETED",
			5_000
		);
		expect(done).toMatchObject({ status: "COMPLETED", attempts: 4 });
		expect(callsOf(ref)).toEqual(["reserve", "charge", "confirm", "ship"]);
		// Each participant ran after the previous step's status was committed with its outcome.
		expect(seen).toEqual(["reserve:NEW", "charge:RESERVED", "ship:CONFIRMED"]);
		expect(await tourStatus(ref)).toBe("SHIPPED");
		// The first step was not logged twice: its intent came from createSaga.
		expect((await svc.getSagaSteps(id)).map(l => [l.stepName, l.status, l.attempt])).toEqual([
			["reserve", "SUCCEEDED", 1],
			["charge", "SUCCEEDED", 1],
			["confirm", "SUCCEEDED", 1],
			["ship", "SUCCEEDED", 1]
		]);
	});

	it("a status in keepStatuses is left alone", async () => {
		const created = await newTour({ reserve: onTour("status = 'FROZEN'") });
		const ref = created.ref;
		expect(await run(created)).toMatchObject({ status: "COMPLETED" });
		expect(await tourStatus(ref)).toBe("FROZEN");
	});

	it("the refuse flag set during a step stops the next one in the same statement and compensates", async () => {
		const created = await newTour({ reserve: onTour("cancelled = true") });
		const ref = created.ref;
		const done = await run(created);
		expect(done).toMatchObject({
			status: "COMPENSATED",
			failureReason: "ORDERS_CANCEL_REQUESTED"
		});
		expect(callsOf(ref)).toEqual(["reserve", "unreserve"]);
		// No intent was recorded for `charge`: the outcome's statement refused it.
		expect(
			(await svc.getSagaSteps(created.id)).map(l => [l.stepName, l.phase, l.status])
		).toEqual([
			["reserve", "forward", "SUCCEEDED"],
			["reserve", "compensate", "SUCCEEDED"]
		]);
		expect(await tourStatus(ref)).toBe("RESERVED");
		expect((await svc.getSaga(created.id))!.errors.map(e => [e.step, e.type])).toEqual([
			["charge", "ORDERS_CANCEL_REQUESTED"]
		]);
	});

	it("the refuse flag is not checked after the pivot", async () => {
		const created = await newTour({ charge: onTour("cancelled = true") });
		const ref = created.ref;
		// Set during `charge`: `confirm` (the pivot) is refused and both steps are compensated.
		const refused = await run(created);
		expect(refused).toMatchObject({ status: "COMPENSATED" });
		expect(callsOf(ref)).toEqual(["reserve", "charge", "refund", "unreserve"]);

		// Set during `confirm` (the pivot itself): `ship` comes after the pivot and still runs.
		const second = await newTour({ confirm: onTour("cancelled = true") });
		const ref2 = second.ref;
		expect(await run(second)).toMatchObject({ status: "COMPLETED" });
		expect(callsOf(ref2)).toEqual(["reserve", "charge", "confirm", "ship"]);
		expect(await tourStatus(ref2)).toBe("SHIPPED");
	});
});

describe("saga mixin: state survives a restart", () => {
	const brokers: TestBroker[] = [];
	afterAll(async () => {
		for (const b of brokers) await b.broker.stop().catch(() => undefined);
	});

	async function start(prefix?: string): Promise<{ t: TestBroker; svc: SagaMixinMethods }> {
		const t = await startOrchestrator(prefix);
		brokers.push(t);
		return { t, svc: orchestrator! };
	}

	it("a saga recorded RUNNING by one broker is finished by runSaga on a new broker", async () => {
		const first = await start();
		const ref = crypto.randomUUID();
		plans.set(ref, {});
		const created = await first.svc.createSaga("trip", { ref }, { deadlineMs: 60_000 });
		await first.t.stop();
		expect(callsOf(ref)).toEqual([]);

		// The first broker handed its lease back on stop: the second resumes the saga by itself
		// (recovery on start), without anyone calling runSaga.
		const second = await start(first.t.prefix);
		expect(
			await waitFor(
				() => second.svc.getSaga(created.id),
				s => s?.status === "COMPLETED"
			)
		).toMatchObject({ status: "COMPLETED", data: { ref } });
		expect(callsOf(ref)).toEqual(["reserve", "charge", "confirm", "ship"]);
		await second.t.stop();
	});

	it("stopping the broker mid-step records the step in flight, starts no other, and a new broker resumes it", async () => {
		const first = await start();
		const ref = crypto.randomUUID();
		plans.set(ref, { charge: () => sleep(300) });
		const created = await first.svc.createSaga("trip", { ref }, { deadlineMs: 60_000 });
		first.svc.launchSaga(created.id);
		await waitFor(
			async () => callsOf(ref),
			c => c.includes("charge"),
			5_000,
			5
		);
		await first.t.stop();
		expect(callsOf(ref)).toEqual(["reserve", "charge"]);

		// The charge in flight at the stop was awaited and recorded (a durable point), and the
		// second broker resumes from there by itself (recovery on start).
		const second = await start(first.t.prefix);
		expect(
			await waitFor(
				() => second.svc.getSaga(created.id),
				s => s?.status === "COMPLETED"
			)
		).toMatchObject({ data: { ref, reservationId: "reserve-1", paymentId: "charge-1" } });
		expect(
			(await second.svc.getSagaSteps(created.id)).map(l => [l.stepName, l.status])
		).toEqual([
			["reserve", "SUCCEEDED"],
			["charge", "SUCCEEDED"],
			["confirm", "SUCCEEDED"],
			["ship", "SUCCEEDED"]
		]);
		// Steps already recorded as done were not repeated.
		expect(callsOf(ref)).toEqual(["reserve", "charge", "confirm", "ship"]);
		await second.t.stop();
	});
});
