/**
 * The reservation sweeper: RESERVED → EXPIRED once a reservation's TTL (`expires_at`, on the
 * database's clock) has passed, its units given back (`reserved -= quantity`).
 *
 * Every `RESERVATION_SWEEP_INTERVAL_MS` (a timeout re-armed after each sweep: runs never overlap;
 * one sweep at a time per node, none while stopping; `runOnce` runs one on demand), batch by
 * batch: it first asks the orders service which of the due reservations may lapse
 * (`orders.lapseReservations`, which fences those orders off their pivot in the same step); a
 * reservation of an order past its pivot (its card charged) is kept, with `expires_at` cleared,
 * so its saga can always commit it; without an answer nothing expires. It then claims the others,
 * still RESERVED and due, with `FOR UPDATE SKIP LOCKED` (so nodes sweeping together never take
 * the same one, nor wait on a reservation a call is changing), locks their stock rows in
 * ascending product-id order like `reserve`, gives the units back and marks them EXPIRED, in one
 * transaction; then emits `stock.released` `{ orderId, items, reason: "EXPIRED" }` for each.
 * A semantic lock with a timeout, in the sense of Garcia-Molina & Salem's sagas.
 */
import type { ServiceBroker } from "moleculer";
import { countMetric } from "../../platform/metrics";
import type { ReservationItem } from "./inventory.model";
import { normaliseItems } from "./reservations";
import { adjustStock, type StockWriter } from "./stock-levels";

/** How many expired reservations one sweep transaction claims. */
const SWEEP_BATCH = 100;

/** What the sweeper needs of the service. */
export interface SweeperHost extends StockWriter {
	readonly broker: ServiceBroker;
	readonly logger: { info(...args: unknown[]): void; warn(...args: unknown[]): void };
}

/** One batch's result: how many were due, and the reservations expired. */
interface SweepBatch {
	due: number;
	expired: { orderId: string; items: ReservationItem[] }[];
}

export class ReservationSweeper {
	private timer: NodeJS.Timeout | null = null;
	private inFlight: Promise<number> | null = null;
	private stopping = false;

	constructor(
		private readonly host: SweeperHost,
		/** RESERVATION_SWEEP_INTERVAL_MS. */
		private readonly intervalMs: number
	) {}

	/** Starts the timer (after the database is connected). */
	start(): void {
		this.stopping = false;
		this.schedule();
	}

	/** Stops the timer and waits for a sweep in flight (before the database is closed). */
	async stop(): Promise<void> {
		this.stopping = true;
		if (this.timer) clearTimeout(this.timer);
		this.timer = null;
		await this.inFlight?.catch(() => undefined);
	}

	/**
	 * One sweep, never two at once on this node: waits for a sweep in flight, then runs.
	 * @returns how many reservations this sweep expired
	 */
	async runOnce(): Promise<number> {
		while (this.inFlight) await this.inFlight.catch(() => undefined);
		const run = this.sweep();
		this.inFlight = run;
		try {
			return await run;
		} finally {
			if (this.inFlight === run) this.inFlight = null;
		}
	}

	/** Arms the next run (a timeout re-armed after each sweep: runs never overlap). */
	private schedule(): void {
		if (this.stopping) return;
		this.timer = setTimeout(() => {
			this.timer = null;
			if (this.stopping) return;
			void this.runOnce()
				.catch(err => this.host.logger.warn("Sweeping expired reservations failed", err))
				.finally(() => this.schedule());
		}, this.intervalMs);
	}

	/** Expires due reservations batch by batch (one transaction each); emits after each commit. */
	private async sweep(): Promise<number> {
		const { broker } = this.host;
		let released = 0;
		for (;;) {
			const batch = await this.sweepBatch(SWEEP_BATCH);
			if (!batch) return released;
			released += batch.expired.length;
			if (batch.expired.length > 0)
				countMetric(broker, "reservations", { outcome: "expired" }, batch.expired.length);
			for (const r of batch.expired)
				await broker.emit("stock.released", {
					orderId: r.orderId,
					items: r.items,
					reason: "EXPIRED"
				});
			if (batch.due < SWEEP_BATCH || this.stopping) return released;
		}
	}

	/**
	 * One batch of the sweep: up to `limit` RESERVED reservations past their `expires_at` (on
	 * the database's clock). Their orders' saga decides first (`orders.lapseReservations`,
	 * which also fences those orders off their pivot): the reservations of orders past their
	 * pivot are kept (`expires_at` cleared: they no longer expire, their saga commits them or
	 * an operator resolves it); the others are claimed (`SKIP LOCKED`: those another
	 * transaction holds are left for the next sweep), their units given back and marked
	 * EXPIRED, in one transaction. Stock rows are locked in ascending product-id order, after
	 * the reservation rows, as `reserve` and `release`/`commit` do.
	 * @returns how many were due and the ones expired; null when the orders service did not
	 *   answer (nothing expires without its word: the next sweep asks again)
	 */
	private async sweepBatch(limit: number): Promise<SweepBatch | null> {
		const { repo, broker, logger } = this.host;
		const orderIds = await repo.dueReservations(limit);
		if (orderIds.length === 0) return { due: 0, expired: [] };
		let kept: string[];
		try {
			({ kept } = await broker.call<{ kept: string[] }, { orderIds: string[] }>(
				"orders.lapseReservations",
				{ orderIds },
				{ timeout: 10_000, retries: 0 }
			));
		} catch (err) {
			logger.warn(
				`Sweep: ${orderIds.length} reservation(s) due, but the orders service did not say which may lapse; kept for now`,
				err
			);
			return null;
		}
		if (kept.length > 0) {
			await repo.keepPastTtl(kept);
			logger.info(
				`Sweep: ${kept.length} reservation(s) of orders past their pivot kept past their TTL`
			);
		}
		const keep = new Set(kept);
		const lapse = orderIds.filter(id => !keep.has(id));
		if (lapse.length === 0) return { due: orderIds.length, expired: [] };
		const expired = await repo.transaction(async t => {
			const due = await repo.claimDue(t, limit, lapse);
			if (due.length === 0) return [];
			const totals = normaliseItems(due.flatMap(r => r.items));
			await repo.lockStock(
				totals.map(i => i.productId),
				t
			);
			await adjustStock(
				this.host,
				t,
				totals.map(i => ({ productId: i.productId, onHand: 0, reserved: -i.quantity })),
				null
			);
			await repo.markExpired(
				t,
				due.map(r => r.orderId)
			);
			return due;
		});
		return { due: orderIds.length, expired };
	}
}
