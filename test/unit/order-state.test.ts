/**
 * services/orders/order.state.ts: the order's state machine is one table, and the saga's mirror,
 * the repository's SQL guards and the handlers' checks are all taken from it. No database: the
 * table, what is derived from it, and the statement texts.
 */
import { orderSaga } from "../../services/orders/order.saga";
import {
	BEFORE_PIVOT,
	FINAL_ORDER_STATUSES,
	OPEN_ORDER_STATUSES,
	ORDER_STATUSES,
	ORDER_TRANSITIONS,
	PIVOT_PASSED,
	isRefundStarted,
	mayTransition,
	orderMirror,
	outsideFrom,
	sqlStatuses,
	type OrderTransition
} from "../../services/orders/order.state";
import type { OrderStatus } from "../../services/orders/orders.model";
import { ORDERS_SQL } from "../../services/orders/orders.repo";

const transitions = Object.entries(ORDER_TRANSITIONS) as [string, OrderTransition][];

/** The statuses reachable from an order's creation. */
function reachable(): Set<OrderStatus> {
	const seen = new Set<OrderStatus>([ORDER_TRANSITIONS.place.to]);
	for (let grew = true; grew;) {
		grew = false;
		for (const [, t] of transitions)
			if (!seen.has(t.to) && t.from.some(s => seen.has(s))) {
				seen.add(t.to);
				grew = true;
			}
	}
	return seen;
}

describe("the order's state machine", () => {
	it("every status is reachable from the order's creation, and only creation starts from nothing", () => {
		expect([...reachable()].sort()).toEqual([...ORDER_STATUSES].sort());
		expect(transitions.filter(([, t]) => t.from.length === 0).map(([n]) => n)).toEqual([
			"place"
		]);
	});

	it("no transition leaves a final status, except an admin's refund of a CONFIRMED order", () => {
		const leaving = transitions
			.filter(([, t]) => t.from.some(s => FINAL_ORDER_STATUSES.includes(s) && s !== t.to))
			.map(([name, t]) => [name, t.from.filter(s => FINAL_ORDER_STATUSES.includes(s)), t.to]);
		expect(leaving).toEqual([["beginRefund", ["CONFIRMED"], "REFUNDING"]]);
		// REFUNDED is the end of everything.
		expect(transitions.filter(([, t]) => t.from.includes("REFUNDED"))).toEqual([]);
	});

	it("final and open statuses split the statuses; every open status has a way out", () => {
		expect([...FINAL_ORDER_STATUSES, ...OPEN_ORDER_STATUSES].sort()).toEqual(
			[...ORDER_STATUSES].sort()
		);
		for (const s of OPEN_ORDER_STATUSES)
			expect(transitions.some(([, t]) => t.from.includes(s) && t.to !== s)).toBe(true);
	});

	it("before the pivot an order may be cancelled; after it only confirmed, or cancelled by an operator", () => {
		expect(BEFORE_PIVOT).toEqual(["PENDING", "STOCK_RESERVED", "PAID"]);
		expect(PIVOT_PASSED).toEqual(["CONFIRMING", "CONFIRMED"]);
		for (const s of BEFORE_PIVOT) expect(mayTransition("cancel", s)).toBe(true);
		for (const s of PIVOT_PASSED) expect(mayTransition("cancel", s)).toBe(false);
		expect(mayTransition("operatorCancel", "CONFIRMING")).toBe(true);
		expect(mayTransition("operatorCancel", "CONFIRMED")).toBe(false);
		expect(outsideFrom("cancel")).toEqual(PIVOT_PASSED);
	});

	it("a refund starts only from CONFIRMED; REFUNDING and REFUNDED say it started", () => {
		for (const s of ORDER_STATUSES) {
			expect(mayTransition("beginRefund", s)).toBe(s === "CONFIRMED");
			expect(isRefundStarted(s)).toBe(s === "REFUNDING" || s === "REFUNDED");
		}
		expect(mayTransition("beginRefund", undefined)).toBe(false);
	});
});

describe("what is derived from the table", () => {
	it("the order saga's mirror: the statuses its steps write, keep and read as the pivot passed", () => {
		const m = orderMirror();
		expect(orderSaga().mirror).toEqual(m);
		expect(m.statusAfterStep).toEqual({
			reserveStock: "STOCK_RESERVED",
			chargePayment: "PAID"
		});
		expect(m.keepStatuses).toEqual(["CONFIRMING", "CONFIRMED", "CANCELLED"]);
		expect(m.pivotStatuses).toEqual(["CONFIRMING", "CONFIRMED"]);
		// Each mirrored status is the `to` of the transition its step makes, and each step exists.
		const steps = orderSaga().steps.map(s => s.name);
		for (const [step, status] of Object.entries(m.statusAfterStep)) {
			expect(steps).toContain(step);
			expect(transitions.some(([, t]) => t.afterStep === step && t.to === status)).toBe(true);
		}
	});

	it("every status the repository writes is the `to` of a transition, and every `to` is written", () => {
		const sql = Object.values(ORDERS_SQL).join("\n");
		const written = new Set(
			[...sql.matchAll(/UPDATE orders SET status = '([A-Z_]+)'/g)].map(
				m => m[1] as OrderStatus
			)
		);
		// The INSERT's status (the `place` transition).
		expect(ORDERS_SQL.insert).toContain(`$3::text, '${ORDER_TRANSITIONS.place.to}', $4::jsonb`);
		written.add(ORDER_TRANSITIONS.place.to);
		const tos = new Set(transitions.map(([, t]) => t.to));
		for (const s of written) expect(tos).toContain(s);
		// STOCK_RESERVED and PAID are written by the saga's mirror (its own statements).
		const mirrored = Object.values(orderMirror().statusAfterStep) as OrderStatus[];
		expect([...written, ...mirrored].sort()).toEqual([...tos].sort());
	});

	it("the repository's guards are the table's `from` lists", () => {
		const T = ORDER_TRANSITIONS;
		expect(sqlStatuses(BEFORE_PIVOT)).toBe("'PENDING', 'STOCK_RESERVED', 'PAID'");
		expect(ORDERS_SQL.passPivot).toContain(`SET status = 'CONFIRMING'`);
		expect(ORDERS_SQL.passPivot).toContain(`status IN (${sqlStatuses(T.passPivot.from)})`);
		expect(ORDERS_SQL.passPivot).toContain(
			"status IN ('PENDING', 'STOCK_RESERVED', 'PAID', 'CONFIRMING')"
		);
		expect(ORDERS_SQL.requestCancel).toContain(
			"status IN ('PENDING', 'STOCK_RESERVED', 'PAID')"
		);
		expect(ORDERS_SQL.lapseReservations).toContain(
			"WHERE status IN ('CONFIRMING', 'CONFIRMED')"
		);
		expect(ORDERS_SQL.cancel).toContain("status NOT IN ('CONFIRMING', 'CONFIRMED')");
		expect(ORDERS_SQL.cancel).toContain("OR (status = 'CONFIRMING' AND EXISTS");
		expect(ORDERS_SQL.beginRefund).toContain(
			"SET status = 'REFUNDING', updated_at = now()\n\t\t\t\t\t\t WHERE id = $1 AND status = 'CONFIRMED'"
		);
		expect(ORDERS_SQL.completeRefund).toContain(
			"SET status = 'REFUNDED', updated_at = now()\n\t\t\t\t WHERE id = $1 AND status = 'REFUNDING'"
		);
	});
});
