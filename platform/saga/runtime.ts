/**
 * One service instance's saga engine: what it needs from its service (`SagaHost`: the broker,
 * the logger, the orchestrator's database, its deployed definitions) and what it keeps while
 * running (`SagaRuntime`: its lease owner token, the sagas it drives, whether it is stopping).
 * Every other file of platform/saga/ takes the runtime as its first argument; the mixin
 * (mixins/saga.mixin.ts) creates one per service instance in `created`.
 */
import crypto from "node:crypto";
import type { Logger, ServiceBroker } from "moleculer";
import { crashPoint, type CrashPoint } from "./faults";
import { findSagaDefinition } from "./definition";
import type { SagaDefinition, SagaEngineOptions, SagaInstance, SagaRegistry } from "./types";
import type { ShopDatabase } from "../db/pool";

/** The service side of the engine: `this` of a service with DbMixin and SagaMixin. */
export interface SagaHost {
	readonly broker: ServiceBroker;
	readonly logger: Logger;
	/** The orchestrator's own database, holding the saga tables (platform/saga/migrations.ts). */
	readonly db: ShopDatabase;
	readonly schema: { readonly sagas?: SagaRegistry };
	/** Emits a saga lifecycle event (a service may override it). */
	sagaEmit(event: string, saga: SagaInstance, extra?: Record<string, unknown>): Promise<void>;
	/** Called after a saga's final transaction commits (a service may override it). */
	sagaAfterCommit(saga: SagaInstance): Promise<void>;
}

/** A service method named in a definition (`beforeStep`, a hook, a step's `method`). */
export type SagaMethodCall = (name: string, ...args: unknown[]) => unknown;

export interface SagaRuntime {
	readonly host: SagaHost;
	/** This service instance's lease owner token. */
	readonly owner: string;
	/** How long a claim on a saga lasts without renewal (renewed at every step attempt), ms. */
	readonly leaseMs: number;
	/** How often to look for sagas whose lease expired, ms; 0: on start only. */
	readonly recoveryIntervalMs: number;
	readonly crashIf: CrashPoint;
	/** Calls the host's method `name` (as `this[name](...args)`). */
	readonly callMethod: SagaMethodCall;
	/** Background runs (`launchSaga`), awaited on stop. */
	readonly inFlight: Set<Promise<unknown>>;
	/** Sagas this instance is driving now: one run per saga per node. */
	readonly runs: Map<string, Promise<SagaInstance | null>>;
	stopping: boolean;
	recovering: boolean;
	/** The periodic recovery timer; `true` once recovery started without one. */
	recoveryTimer: ReturnType<typeof setInterval> | true | null;
}

/** The engine's options with their defaults applied, shared by a mixin's instances. */
export interface SagaEngineSettings {
	readonly leaseMs: number;
	readonly recoveryIntervalMs: number;
	readonly crashIf: CrashPoint;
}

export function sagaEngineSettings(opts: SagaEngineOptions): SagaEngineSettings {
	return {
		leaseMs: opts.leaseMs ?? 15_000,
		recoveryIntervalMs: opts.recoveryIntervalMs ?? 5_000,
		crashIf: crashPoint(opts)
	};
}

export function createSagaRuntime(
	host: SagaHost,
	settings: SagaEngineSettings,
	callMethod: SagaMethodCall
): SagaRuntime {
	return {
		host,
		// A fresh owner token per service instance: a restarted node with the same nodeID
		// does not mistake the dead process's leases for its own.
		owner: `${host.broker.nodeID}:${crypto.randomBytes(4).toString("hex")}`,
		leaseMs: settings.leaseMs,
		recoveryIntervalMs: settings.recoveryIntervalMs,
		crashIf: settings.crashIf,
		callMethod,
		inFlight: new Set(),
		runs: new Map(),
		stopping: false,
		recovering: false,
		recoveryTimer: null
	};
}

/** The definition of saga `name` deployed on this service: that version, or the highest. */
export function sagaDefinition(rt: SagaRuntime, name: string, version?: number): SagaDefinition {
	return findSagaDefinition(rt.host.schema.sagas, name, version);
}

/** Sagas this service instance is running or about to run now (launched or recovered). */
export function sagaLoad(rt: SagaRuntime): number {
	return Math.max(rt.inFlight.size, rt.runs.size);
}
