/**
 * Password hashing for `users`: Argon2id (the `argon2` package) with the OWASP Password Storage
 * Cheat Sheet's first configuration, m = 19 MiB (19456 KiB), t = 2, p = 1
 * (https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html#argon2id),
 * run in a bounded pool (a bulkhead) so that a burst of sign-ups or logins queues for a while and
 * is then refused, instead of every request slowing down together until all of them time out.
 *
 * Why these parameters: the library's defaults (m = 64 MiB, t = 3, p = 4) cost about 0.42 s of
 * CPU (0.24 s wall, on 4 threads) per hash on the CI's 2 cores, so 50 concurrent sign-ups took
 * 11 s of CPU-bound work and the gateway timed them out at 10 s. The OWASP parameters cost about
 * 25 ms of CPU per hash on one thread there (docs/security.md has the figures and the command);
 * RFC 9106 and OWASP regard them as equivalent in strength for interactive logins.
 *
 * The pool: at most `concurrency` hashes or verifications at once (argon2 runs them on libuv's
 * thread pool, 4 threads by default, which file I/O and DNS lookups share, hence the default of
 * the available CPUs but at most 3), at most `maxQueue` waiting, each waiting at most `maxWaitMs`.
 * A task that finds the queue full, or that waits too long, is refused with 429 `USERS_BUSY`
 * (retryable; the gateway sends `Retry-After`). 429 rather than 503: the node is healthy and
 * shedding load as designed, so the callers' circuit breakers (which count 5xx) must not open on
 * it; Moleculer's own bulkhead answers a full queue the same way (`QUEUE_FULL`, 429).
 *
 * The shop's own bounded wait for a slot (platform/admission-queue.ts, as the orders' admission,
 * here with a fixed limit and queue) rather than a library: p-limit and p-queue are ESM-only (Jest's
 * CommonJS runtime cannot load them), neither bounds the queue nor its wait, and Moleculer's
 * bulkhead is per action (register and login would get a pool each, oversubscribing the CPUs)
 * and would hold the database round trips too, not only the hash.
 *
 * Hashes made with other parameters (the former defaults) still verify: Argon2's PHC string
 * carries its own parameters. `needsRehash` tells which stored hashes to replace after a
 * successful login.
 */
import argon2 from "argon2";
import { AdmissionQueue } from "../../platform/admission-queue";
import { shopError } from "../../platform/errors";

/** The Argon2id parameters of new hashes (OWASP's first choice; memory in KiB). */
export const PASSWORD_HASH_PARAMS = Object.freeze({
	type: argon2.argon2id,
	memoryCost: 19_456,
	timeCost: 2,
	parallelism: 1
});

/** Settings of the pool (platform/config.ts: `PASSWORD_HASH_*`). */
export interface PasswordHasherOptions {
	/** Hashes and verifications running at once (≥ 1). */
	readonly concurrency: number;
	/** Tasks that may wait for a free slot; past it a task is refused at once (≥ 0). */
	readonly maxQueue: number;
	/** Longest wait for a slot, in ms; a task still waiting then is refused. */
	readonly maxWaitMs: number;
}

/** Argon2id hashing and verification in a bounded pool; see the module's comment. */
export class PasswordHasher {
	/** The pool's slots: a task holds its ticket while it runs. */
	private readonly slots: AdmissionQueue;

	constructor(opts: PasswordHasherOptions) {
		if (!(opts.concurrency >= 1)) throw new RangeError("concurrency must be at least 1");
		this.slots = new AdmissionQueue({
			load: () => 0,
			limit: () => opts.concurrency,
			maxWaitMs: opts.maxWaitMs,
			maxWaiting: () => opts.maxQueue
		});
	}

	/**
	 * Hashes a password with `PASSWORD_HASH_PARAMS` (a fresh random salt each time).
	 * @returns the PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`)
	 * @throws USERS_BUSY (429) when the pool's queue is full or the wait exceeds `maxWaitMs`
	 */
	hash(password: string): Promise<string> {
		return this.run(() => argon2.hash(password, PASSWORD_HASH_PARAMS));
	}

	/**
	 * Checks a password against a stored hash, whatever parameters made it.
	 * @returns whether it matches; `false` for a malformed hash too
	 * @throws USERS_BUSY (429) as `hash`
	 */
	verify(hash: string, password: string): Promise<boolean> {
		return this.run(() => argon2.verify(hash, password).catch(() => false));
	}

	/** Whether a stored hash was made with other parameters than `PASSWORD_HASH_PARAMS`. */
	needsRehash(hash: string): boolean {
		if (!hash.startsWith("$argon2id$")) return true;
		try {
			return argon2.needsRehash(hash, PASSWORD_HASH_PARAMS);
		} catch {
			return true;
		}
	}

	/** Tasks running and waiting now (for tests and metrics). */
	get load(): { running: number; queued: number } {
		return { running: this.slots.admitted, queued: this.slots.waiting };
	}

	/** Runs `task` when a slot is free; refuses it when the queue is full or the wait too long. */
	private async run<T>(task: () => Promise<T>): Promise<T> {
		const slot = await this.slots.enter();
		if (!slot) throw busy();
		try {
			return await task();
		} finally {
			slot.done();
		}
	}
}

function busy(): Error {
	return shopError(
		"USERS_BUSY",
		"Too many password checks at once (the queue is full or the wait too long); try again soon."
	);
}
