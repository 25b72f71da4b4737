/**
 * Retention: each service's purge job, which deletes what the shop no longer needs (published
 * outbox rows, old inbox records, idempotency keys, finished sagas, replayed dead letters,
 * reservation tombstones) in small batches, on one node per service at a time.
 *
 * - Tasks: the mixins and services that own a table register a `RetentionTask` for it
 *   (`addRetentionTask(this, task)` in `created`); a service gets ONE job for all of them.
 * - Lease: a run holds `pg_try_advisory_xact_lock(hashtext('shop.retention:<service>'))` in a
 *   transaction of its own on the service's database for its whole duration; the node that does
 *   not get it skips the run. A node that dies drops its connection, and with it the lease.
 * - Batches: each statement deletes at most `RETENTION_BATCH_SIZE` rows (its own, autocommitted:
 *   short locks, no long transaction holding row versions) and the job pauses
 *   `RETENTION_BATCH_PAUSE_MS` between two, so customer traffic keeps the database.
 * - Clock: every cutoff is `now() - <window>` on the database's clock, never the node's.
 * - Schedule: the first run `min(interval, 60 s)` after the service started, then every
 *   `RETENTION_INTERVAL_MS`; runs never overlap on a node.
 * - Metrics (platform/metrics.ts): `shop_retention_purged_total{service,table}`,
 *   `shop_retention_last_run_seconds{service}`, `shop_retention_duration{service}`.
 *
 * Windows and their defaults: docs/retention.md.
 */
import type { ServiceBroker } from "moleculer";
import { config } from "./config";
import { fastQuery, QueryTypes } from "./db/fast-query";
import { countMetric, registerMetrics, setMetric } from "./metrics";
import type { ShopDatabase } from "./db/pool";

/** What one table's purge deletes. */
export interface RetentionTask {
	/** The table (the metric's `table` label). */
	readonly table: string;
	/**
	 * ONE batch: a DELETE of at most `$1` rows (the batch size) older than `$2` ms (the window),
	 * measured with the database's `now()`; e.g.
	 * `DELETE FROM t WHERE id IN (SELECT id FROM t WHERE at < now() - $2 * interval '1 millisecond' LIMIT $1)`.
	 */
	readonly sql: string;
	/** The window, in ms. */
	readonly windowMs: number;
}

/** `$2` ms before the database's now: the cutoff of a task's `sql`, on the database's clock. */
export const RETENTION_CUTOFF = "now() - $2::float8 * interval '1 millisecond'";

/** What one run did. */
export interface RetentionReport {
	/** False when another node held the lease (nothing was purged here). */
	readonly ran: boolean;
	/** Rows deleted per table. */
	readonly purged: Readonly<Record<string, number>>;
	/** Duration of the run, in ms. */
	readonly durationMs: number;
	/** When the run finished (ISO 8601). */
	readonly at: string;
}

/** The service side a job needs (`this` of a service with DbMixin). */
export interface RetentionHost {
	readonly name: string;
	readonly broker: ServiceBroker;
	readonly logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void };
	readonly db: ShopDatabase;
	/** DbMixin's flag: migrated and connected. */
	readonly $dbReady?: boolean;
}

export interface RetentionOptions {
	readonly intervalMs: number;
	readonly batchSize: number;
	readonly batchPauseMs: number;
}

const delay = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

/** One service's purge job (see the module comment). */
export class RetentionJob {
	private readonly tasks: RetentionTask[] = [];
	private timer: NodeJS.Timeout | null = null;
	private running: Promise<RetentionReport> | null = null;
	private stopping = false;
	private started = false;
	/** The last run that held the lease, or null. */
	last: RetentionReport | null = null;

	constructor(
		private readonly host: RetentionHost,
		private readonly opts: RetentionOptions
	) {}

	/** Adds a table's purge (once per table). */
	add(task: RetentionTask): void {
		if (!this.tasks.some(t => t.table === task.table)) this.tasks.push(task);
	}

	/** The tables this job purges, with their windows (ms). */
	windows(): Record<string, number> {
		return Object.fromEntries(this.tasks.map(t => [t.table, t.windowMs]));
	}

	/** Schedules the runs (idempotent). */
	start(): void {
		if (this.started || this.stopping) return;
		this.started = true;
		registerMetrics(this.host.broker, [
			"retentionPurged",
			"retentionLastRun",
			"retentionDuration"
		]);
		this.schedule(Math.min(this.opts.intervalMs, 60_000));
	}

	/** Stops scheduling and waits for a run in progress (it stops after its current batch). */
	async stop(): Promise<void> {
		this.stopping = true;
		if (this.timer) clearTimeout(this.timer);
		this.timer = null;
		await this.running?.catch(() => undefined);
	}

	/**
	 * Runs every task now, unless a run is in progress on this node (then its result) or another
	 * node holds the lease (`ran: false`).
	 * @returns what was purged
	 */
	runOnce(): Promise<RetentionReport> {
		if (!this.running)
			this.running = this.run().finally(() => {
				this.running = null;
			});
		return this.running;
	}

	private schedule(ms: number): void {
		if (this.stopping) return;
		this.timer = setTimeout(() => {
			this.runOnce()
				.catch((err: unknown) =>
					this.host.logger.warn(`Retention run of ${this.host.name} failed`, err)
				)
				.finally(() => this.schedule(this.opts.intervalMs));
		}, ms);
		this.timer.unref?.();
	}

	private async run(): Promise<RetentionReport> {
		const started = Date.now();
		const purged: Record<string, number> = {};
		const { db, broker, name } = this.host;
		if (this.host.$dbReady === false || this.tasks.length === 0)
			return { ran: false, purged, durationMs: 0, at: new Date().toISOString() };
		// The lease: a transaction-scoped advisory lock held by this (otherwise idle) transaction
		// while the batches run, each in a statement of its own.
		const ran = await db.transaction(async t => {
			const [row] = (await fastQuery(
				db,
				"SELECT pg_try_advisory_xact_lock(hashtext($1)) AS locked",
				{ bind: [`shop.retention:${name}`], type: QueryTypes.SELECT, transaction: t }
			)) as { locked: boolean }[];
			if (!row?.locked) return false;
			for (const task of this.tasks) {
				purged[task.table] = 0;
				for (;;) {
					if (this.stopping) break;
					const [, result] = await fastQuery(db, task.sql, {
						bind: [this.opts.batchSize, task.windowMs]
					});
					const n = (result as { rowCount: number | null }).rowCount ?? 0;
					purged[task.table] = (purged[task.table] ?? 0) + n;
					if (n > 0)
						countMetric(
							broker,
							"retentionPurged",
							{ service: name, table: task.table },
							n
						);
					if (n < this.opts.batchSize) break;
					await delay(this.opts.batchPauseMs);
				}
			}
			return true;
		});
		const report: RetentionReport = {
			ran,
			purged,
			durationMs: Date.now() - started,
			at: new Date().toISOString()
		};
		if (ran) {
			this.last = report;
			setMetric(broker, "retentionLastRun", Math.floor(Date.now() / 1000), { service: name });
			setMetric(broker, "retentionDuration", report.durationMs, { service: name });
			const total = Object.values(purged).reduce((a, b) => a + b, 0);
			if (total > 0)
				this.host.logger.info(
					`Retention: purged ${total} rows in ${report.durationMs} ms`,
					purged
				);
		}
		return report;
	}
}

const jobs = new WeakMap<object, RetentionJob>();

/** The purge job of service `host` (created on first use with the `RETENTION_*` settings). */
export function retentionJob(host: RetentionHost): RetentionJob {
	let job = jobs.get(host);
	if (!job) {
		const r = config().retention;
		job = new RetentionJob(host, {
			intervalMs: r.intervalMs,
			batchSize: r.batchSize,
			batchPauseMs: r.batchPauseMs
		});
		jobs.set(host, job);
	}
	return job;
}

/** Registers a table's purge with the service's job (call from `created`). */
export function addRetentionTask(host: RetentionHost, task: RetentionTask): void {
	retentionJob(host).add(task);
}

/** Starts the service's job (call from `started`; idempotent). */
export function startRetention(this: RetentionHost): void {
	retentionJob(this).start();
}

/**
 * Stops the service's job (a `stopped` handler: register it with `runStoppedFirst` so that it
 * runs while the database is still open; idempotent).
 */
export async function stopRetention(this: RetentionHost): Promise<void> {
	await jobs.get(this)?.stop();
}

/**
 * The actions every service with retention gets (mixins include them; identical definitions).
 * - `<service>.retentionStatus`: `{ windows: { <table>: ms }, last: RetentionReport | null }`
 * - `<service>.runRetention`: runs the purge now (operators, tests); answers the RetentionReport
 */
export function retentionActions(): Record<string, object> {
	return {
		retentionStatus: {
			visibility: "public",
			params: {},
			handler(this: RetentionHost): {
				windows: Record<string, number>;
				last: RetentionReport | null;
			} {
				const job = retentionJob(this);
				return { windows: job.windows(), last: job.last };
			}
		},
		runRetention: {
			visibility: "public",
			params: {},
			handler(this: RetentionHost): Promise<RetentionReport> {
				return retentionJob(this).runOnce();
			}
		}
	};
}
