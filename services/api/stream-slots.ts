/**
 * `StreamSlots`: how many order streams (`GET /api/orders/:id/events`) one user and one client
 * address hold on this gateway node, bounded by `ORDER_STREAMS_MAX_PER_USER` and
 * `ORDER_STREAMS_MAX_PER_ADDRESS` (services/api/order-streams.ts). Moved out of
 * mixins/web.mixin.ts (issue 17).
 */

/**
 * Order streams held per user and per client address on this gateway node, authorising ones
 * included: a slot is taken before the order lookup and given back when the lookup fails, the
 * client leaves during it, or the stream ends. A count that reaches 0 is deleted (no growth).
 * A limit of 0 turns that bound off.
 */
export class StreamSlots {
	private readonly users = new Map<string, number>();
	private readonly addresses = new Map<string, number>();

	constructor(
		private readonly maxPerUser: number,
		private readonly maxPerAddress: number
	) {}

	/**
	 * Takes a slot for `user` and `address`, or none when either is at its limit.
	 * @returns an idempotent release, or null (nothing taken) at a limit
	 */
	acquire(user: string, address: string): (() => void) | null {
		const u = this.users.get(user) ?? 0;
		const a = this.addresses.get(address) ?? 0;
		if (this.maxPerUser > 0 && u >= this.maxPerUser) return null;
		if (this.maxPerAddress > 0 && a >= this.maxPerAddress) return null;
		this.users.set(user, u + 1);
		this.addresses.set(address, a + 1);
		let released = false;
		return () => {
			if (released) return;
			released = true;
			StreamSlots.decrement(this.users, user);
			StreamSlots.decrement(this.addresses, address);
		};
	}

	/** Slots held: in total, and how many users and addresses hold any. */
	counts(): { held: number; users: number; addresses: number } {
		let held = 0;
		for (const n of this.users.values()) held += n;
		return { held, users: this.users.size, addresses: this.addresses.size };
	}

	private static decrement(map: Map<string, number>, key: string): void {
		const n = (map.get(key) ?? 0) - 1;
		if (n > 0) map.set(key, n);
		else map.delete(key);
	}
}
