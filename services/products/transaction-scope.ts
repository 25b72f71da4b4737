/**
 * Sequelize's automatic passing of transactions ("CLS", Sequelize v6 manual, Transactions:
 * "Automatically pass transactions to all queries"), on Node's `AsyncLocalStorage`. With it,
 * moleculer-db's adapter calls, which take no transaction option (`this.adapter.insert`,
 * `updateById`, `removeById`, `findOne`), run in the managed transaction around them:
 *
 *     await this.sequelize.transaction(async t => {
 *         const doc = await this.adapter.insert(entity); // in t
 *         await this.enqueueEvent(t, "product.created", json, opts); // in t: one commit
 *     });
 *
 * Sequelize asks for a cls-hooked namespace (`run`, `bind`, `get`, `set`); `namespace` below is
 * that interface over `AsyncLocalStorage` (cls-hooked is unmaintained and rests on async_hooks'
 * `createHook`). A nested `run` sees its parent's values and shadows them (cls-hooked's rule).
 *
 * Process-wide: `Sequelize.useCLS` sets a static of the Sequelize class, so every Sequelize
 * instance of the process (users' too, which opens no managed transaction) reads it. Only a query
 * given no `transaction` option, made inside a managed transaction's callback, joins that
 * transaction; elsewhere `get` answers undefined and nothing changes. So such a callback must
 * query only its own service's models (products' do) and call no other service. An explicit
 * `transaction` (fastQuery's, the outbox's) is left as it is.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { Sequelize } from "sequelize";

type Scope = Record<string, unknown>;

const storage = new AsyncLocalStorage<Scope>();

/** cls-hooked's namespace interface, as Sequelize uses it. */
const namespace = {
	/** Runs `fn` (synchronously) in a new scope that inherits the current one. */
	run<T>(fn: (scope: Scope) => T): T {
		const scope = Object.create(storage.getStore() ?? null) as Scope;
		return storage.run(scope, () => fn(scope));
	},
	/** `fn`, bound to `scope` (default: the current one, or a new one). */
	bind<A extends unknown[], R>(fn: (...args: A) => R, scope?: Scope): (...args: A) => R {
		const bound = scope ?? storage.getStore() ?? (Object.create(null) as Scope);
		return (...args: A): R => storage.run(bound, () => fn(...args));
	},
	/** The value of `key` in the current scope; undefined outside any. */
	get(key: string): unknown {
		return storage.getStore()?.[key];
	},
	/** Sets `key` in the current scope; outside any, a no-op (nothing to carry it). */
	set<T>(key: string, value: T): T {
		const scope = storage.getStore();
		if (scope) scope[key] = value;
		return value;
	}
};

/**
 * Turns on Sequelize's automatic transaction passing for the process (idempotent). Called by the
 * products service when it is created.
 */
export function useTransactionScope(): void {
	const current = (Sequelize as unknown as { _cls?: unknown })._cls;
	if (current === namespace) return;
	Sequelize.useCLS(namespace as never);
}
