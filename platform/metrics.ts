/**
 * The shop's business metrics, served with Moleculer's own by every node's Prometheus reporter
 * (`METRICS_PORT`, `/metrics`; dots and dashes become underscores, every series carries the
 * reporter's `nodeID` and `namespace` labels). Helpers are no-ops when metrics are off.
 *
 * | Prometheus name | type | labels | where |
 * |---|---|---|---|
 * | `shop_orders_created_total` | counter | | orders: an order accepted (202), not an idempotent repeat |
 * | `shop_orders_confirmed_total` | counter | | orders: an order's saga completed |
 * | `shop_orders_cancelled_total` | counter | `reason` | orders: an order cancelled (`OUT_OF_STOCK`, `PAYMENT_DECLINED`, ...) |
 * | `shop_orders_refunded_total` | counter | `restock` | orders: an order refunded by an admin (its refund saga completed; `restock`: `true`/`false`) |
 * | `shop_orders_stuck` | gauge | `status` | orders: orders in a non-terminal status (`PENDING`, `STOCK_RESERVED`, `PAID`, `CONFIRMING`, `REFUNDING`) past `ORDERS_STUCK_AFTER_MS` (the database's count, refreshed every `ORDERS_STUCK_CHECK_INTERVAL_MS`) |
 * | `shop_saga_step_duration_bucket` | histogram (ms) | `saga`, `step`, `phase`, `outcome` | orders: one step or compensation call (`forward`/`compensate`, `succeeded`/`failed`) |
 * | `shop_saga_compensations_total` | counter | `saga`, `reason` | orders: a saga started compensating |
 * | `shop_saga_parked_total` | counter | `saga` | orders: a saga parked as FAILED (an operator must redrive it) |
 * | `shop_sagas_parked` | gauge | `saga` | orders: sagas parked now (the database's count, refreshed by every recovery pass) |
 * | `shop_inventory_reservations_total` | counter | `outcome` | inventory: `reserved`, `out_of_stock`, `committed`, `released`, `expired` |
 * | `shop_payments_total` | counter | `outcome` | payments: `captured`, `declined`, `refunded` |
 * | `shop_retention_purged_total` | counter | `service`, `table` | every service with retention (platform/retention.ts): rows its purge job deleted |
 * | `shop_retention_last_run_seconds` | gauge (s) | `service` | when this node's purge job last finished a run (Unix time; only the node holding the lease runs) |
 * | `shop_retention_duration` | gauge (ms) | `service` | how long that run took |
 * | `shop_events_consumer_behind` | gauge | `service`, `consumer` | consumers (mixins/events.mixin.ts): 1 when a durable consumer is behind its stream's retention (its oldest unacknowledged event is older than `EVENTS_CONSUMER_LAG_ALERT_MS`, or the stream dropped events past its ack floor), else 0 |
 * | `shop_events_consumer_pending` | gauge | `service`, `consumer` | events of the consumer not yet acknowledged |
 * | `shop_events_consumer_oldest_pending_age` | gauge (ms) | `service`, `consumer` | age of its oldest unacknowledged event (0 when none) |
 *
 * Counters with a known label set start at 0 on the nodes that count them, so a rate is defined
 * before the first event.
 */
import type { ServiceBroker } from "moleculer";

type MetricType = "counter" | "gauge" | "histogram";

interface MetricDef {
	readonly type: MetricType;
	readonly name: string;
	readonly description: string;
	readonly labelNames: readonly string[];
	readonly unit?: string;
	readonly buckets?: readonly number[];
	/** Label sets registered at 0 by `registerMetrics`. */
	readonly zeros?: readonly Record<string, string>[];
}

/** Order cancellation reasons (services/orders/order.saga.ts `cancellationReason`). */
const CANCEL_REASONS = [
	"OUT_OF_STOCK",
	"PAYMENT_DECLINED",
	"PAYMENT_METHOD_INVALID",
	"CANCELLED_BY_CUSTOMER",
	"TIMEOUT",
	"PROCESSING_FAILED"
];

export const SHOP_METRICS = {
	ordersCreated: {
		type: "counter",
		name: "shop.orders.created.total",
		description: "Orders placed (accepted with 202; idempotent repeats not counted)",
		labelNames: [],
		zeros: [{}]
	},
	ordersConfirmed: {
		type: "counter",
		name: "shop.orders.confirmed.total",
		description: "Orders confirmed (their saga completed)",
		labelNames: [],
		zeros: [{}]
	},
	ordersCancelled: {
		type: "counter",
		name: "shop.orders.cancelled.total",
		description: "Orders cancelled, by cancellation reason",
		labelNames: ["reason"],
		zeros: CANCEL_REASONS.map(reason => ({ reason }))
	},
	ordersRefunded: {
		type: "counter",
		name: "shop.orders.refunded.total",
		description: "Orders refunded by an admin (their refund saga completed), by restock",
		labelNames: ["restock"],
		zeros: [{ restock: "true" }, { restock: "false" }]
	},
	ordersStuck: {
		type: "gauge",
		name: "shop.orders.stuck",
		description:
			"Orders in a non-terminal status past ORDERS_STUCK_AFTER_MS, by status (an operator must look at them)",
		labelNames: ["status"]
	},
	sagaStepDuration: {
		type: "histogram",
		name: "shop.saga.step.duration",
		description: "Duration of a saga step or compensation call (ms)",
		labelNames: ["saga", "step", "phase", "outcome"],
		unit: "milliseconds",
		buckets: [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
	},
	sagaCompensations: {
		type: "counter",
		name: "shop.saga.compensations.total",
		description: "Sagas that started compensating, by failure reason",
		labelNames: ["saga", "reason"]
	},
	sagaParked: {
		type: "counter",
		name: "shop.saga.parked.total",
		description: "Sagas parked as FAILED (an operator must look at them)",
		labelNames: ["saga"]
	},
	sagasParkedNow: {
		type: "gauge",
		name: "shop.sagas.parked",
		description: "Sagas parked as FAILED now, in the orchestrator's database",
		labelNames: ["saga"]
	},
	reservations: {
		type: "counter",
		name: "shop.inventory.reservations.total",
		description: "Stock reservations, by outcome",
		labelNames: ["outcome"],
		zeros: ["reserved", "out_of_stock", "committed", "released", "expired"].map(outcome => ({
			outcome
		}))
	},
	payments: {
		type: "counter",
		name: "shop.payments.total",
		description: "Payments, by outcome",
		labelNames: ["outcome"],
		zeros: ["captured", "declined", "refunded"].map(outcome => ({ outcome }))
	},
	retentionPurged: {
		type: "counter",
		name: "shop.retention.purged.total",
		description: "Rows deleted by the retention purge job, by table",
		labelNames: ["service", "table"]
	},
	retentionLastRun: {
		type: "gauge",
		name: "shop.retention.last.run.seconds",
		description: "When this node's retention purge job last finished a run (Unix time, s)",
		labelNames: ["service"]
	},
	retentionDuration: {
		type: "gauge",
		name: "shop.retention.duration",
		description: "Duration of this node's last retention purge run (ms)",
		labelNames: ["service"],
		unit: "milliseconds"
	},
	eventsConsumerBehind: {
		type: "gauge",
		name: "shop.events.consumer.behind",
		description:
			"1 when a durable event consumer is behind its stream's retention (events at risk or lost)",
		labelNames: ["service", "consumer"]
	},
	eventsConsumerPending: {
		type: "gauge",
		name: "shop.events.consumer.pending",
		description: "Events of a durable consumer not yet acknowledged",
		labelNames: ["service", "consumer"]
	},
	eventsConsumerOldestPendingAge: {
		type: "gauge",
		name: "shop.events.consumer.oldest.pending.age",
		description: "Age of a durable consumer's oldest unacknowledged event (ms)",
		labelNames: ["service", "consumer"],
		unit: "milliseconds"
	}
} as const satisfies Record<string, MetricDef>;

export type ShopMetric = keyof typeof SHOP_METRICS;

/** Registers `metric` once per broker; false when the broker's metrics are off. */
function ensure(broker: ServiceBroker, metric: ShopMetric): boolean {
	if (!broker.isMetricsEnabled()) return false;
	const def: MetricDef = SHOP_METRICS[metric];
	if (broker.metrics.getMetric(def.name)) return true;
	broker.metrics.register({
		type: def.type,
		name: def.name,
		description: def.description,
		labelNames: [...def.labelNames],
		unit: def.unit,
		...(def.buckets ? { buckets: [...def.buckets], quantiles: false } : {})
	} as Parameters<ServiceBroker["metrics"]["register"]>[0]);
	for (const labels of def.zeros ?? []) broker.metrics.increment(def.name, labels, 0);
	return true;
}

/** Registers the metrics a service counts, so that their known series start at 0. */
export function registerMetrics(broker: ServiceBroker, metrics: readonly ShopMetric[]): void {
	for (const m of metrics) ensure(broker, m);
}

/** Adds `value` (1) to a counter. */
export function countMetric(
	broker: ServiceBroker,
	metric: ShopMetric,
	labels: Record<string, string> = {},
	value = 1
): void {
	if (ensure(broker, metric)) broker.metrics.increment(SHOP_METRICS[metric].name, labels, value);
}

/** Records one observation of a histogram. */
export function observeMetric(
	broker: ServiceBroker,
	metric: ShopMetric,
	value: number,
	labels: Record<string, string> = {}
): void {
	if (ensure(broker, metric)) broker.metrics.observe(SHOP_METRICS[metric].name, value, labels);
}

/** Sets a gauge. */
export function setMetric(
	broker: ServiceBroker,
	metric: ShopMetric,
	value: number,
	labels: Record<string, string> = {}
): void {
	if (ensure(broker, metric)) broker.metrics.set(SHOP_METRICS[metric].name, value, labels);
}
