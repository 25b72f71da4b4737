/**
 * The orders node dies mid-saga, for real: each service in its own `moleculer-runner` process over
 * NATS, and the orders node started with `SAGA_FAULTS=crash-before:chargePayment`, so it SIGKILLs
 * itself after the reservation is recorded and before the charge is invoked (no cleanup, nothing
 * flushed, its lease left behind). While it is down the gateway answers order calls with 503. It is
 * restarted without the fault: its recovery finds the saga whose lease expired and drives it on
 * from its log. The order ends, and stock, reservation, payment, saga and notification agree.
 */
import crypto from "node:crypto";
import { api } from "../support/shop-process";
import {
	CLUSTER_ADMIN,
	startCluster,
	until,
	withOutputOnFailure,
	type TestCluster
} from "../support/cluster";

interface OrderBody {
	id: string;
	status: string;
	total: number;
	currency: string;
	cancellationReason?: string | null;
}

describe("orders node SIGKILLed between the reservation and the charge", () => {
	let cluster: TestCluster;
	let base: string;

	beforeAll(async () => {
		cluster = await startCluster({
			env: { SAGA_DEADLINE_MS: "60000" },
			nodeEnv: {
				orders: {
					SAGA_FAULTS: "crash-before:chargePayment",
					SAGA_LEASE_MS: "1000",
					SAGA_RECOVERY_INTERVAL_MS: "200"
				}
			}
		});
		base = cluster.url!;
	}, 120_000);
	afterAll(async () => cluster?.stop(), 60_000);

	it(
		"resumes the saga from its log after a restart; the order, stock and payment agree",
		() =>
			withOutputOnFailure(cluster, async () => {
				const admin = await api(base, "POST", "/api/users/login", { body: CLUSTER_ADMIN });
				expect(admin.status).toBe(200);
				const reg = await api(base, "POST", "/api/users/register", {
					body: {
						email: `crash-${crypto.randomBytes(4).toString("hex")}@example.com`,
						password: "correct horse battery",
						name: "Crash"
					}
				});
				expect(reg.status).toBe(201);
				const token: string = reg.body.token;
				const product = await api(base, "POST", "/api/products", {
					token: admin.body.token,
					body: {
						sku: `CRASH-${crypto.randomBytes(4).toString("hex")}`,
						name: "Crash test dummy",
						description: "Survives the orders node",
						price: 1250,
						currency: "EUR",
						stock: 10
					}
				});
				expect(product.status).toBe(201);
				const productId: string = product.body.id;

				const orders = cluster.node("orders-1");
				const firstPid = orders.pid;
				const placed = await api(base, "POST", "/api/orders", {
					token,
					headers: { "Idempotency-Key": `crash-${productId}` },
					body: { items: [{ productId, quantity: 3 }], paymentMethod: "tok_visa" }
				});
				expect(placed.status).toBe(202);
				const orderId: string = placed.body.id;

				// The node kills itself with SIGKILL at the fault point.
				await until(
					async () => orders.running,
					running => !running,
					20_000
				);
				expect(orders.exit).toEqual({ code: null, signal: "SIGKILL" });

				// Frozen mid-saga: stock reserved, no payment yet; the order is not readable meanwhile.
				const reservation: { status: string } | null = await cluster.broker.call(
					"inventory.getReservation",
					{ orderId }
				);
				expect(reservation?.status).toBe("RESERVED");
				expect(await cluster.broker.call("payments.get", { orderId })).toBeNull();
				const level = await api(base, "GET", `/api/inventory/${productId}`);
				expect(level.body).toMatchObject({ onHand: 10, reserved: 3, available: 7 });
				// Once the registry has dropped the dead node (heartbeat timeout), the gateway answers
				// 503 SERVICE_NOT_AVAILABLE (with Retry-After), not 404 and not 500.
				const whileDown = await until(
					() => api(base, "GET", `/api/orders/${orderId}`, { token }),
					r => r.status !== 504,
					40_000,
					200
				);
				expect([whileDown.status, whileDown.body.type]).toEqual([
					503,
					"SERVICE_NOT_AVAILABLE"
				]);
				expect(whileDown.headers.get("retry-after")).toBe("1");

				// Restarted without the fault: recovery resumes the saga whose lease expired.
				await orders.restart({ SAGA_FAULTS: "" });
				expect(orders.pid).not.toBe(firstPid);
				const ended = await until(
					() => api(base, "GET", `/api/orders/${orderId}`, { token }),
					r => r.status === 200 && ["CONFIRMED", "CANCELLED"].includes(r.body.status),
					30_000,
					200
				);
				const order = ended.body as OrderBody;
				expect(order.status).toBe("CONFIRMED");
				expect(order.total).toBe(3 * 1250);

				// Everything agrees: stock sold, reservation committed, one capture of the total.
				const after = await api(base, "GET", `/api/inventory/${productId}`);
				expect(after.body).toMatchObject({ onHand: 7, reserved: 0, available: 7 });
				expect(
					await cluster.broker.call("inventory.getReservation", { orderId })
				).toMatchObject({ status: "COMMITTED" });
				expect(await cluster.broker.call("payments.get", { orderId })).toMatchObject({
					status: "CAPTURED",
					amount: order.total,
					currency: "EUR"
				});

				// The saga: completed, and its log shows the reservation recorded once, before the crash.
				const sagas: { rows: { id: string; orderId: string; status: string }[] } =
					await cluster.broker.call("orders.listSagas", { pageSize: 50 });
				const sagaRow = sagas.rows.find(s => s.orderId === orderId);
				expect(sagaRow?.status).toBe("COMPLETED");
				const saga: { steps: { stepName: string; phase: string; status: string }[] } =
					await cluster.broker.call("orders.getSaga", { id: sagaRow!.id });
				const forward = saga.steps.filter(s => s.phase === "forward");
				expect(forward.filter(s => s.stepName === "reserveStock")).toHaveLength(1);
				expect(
					forward.filter(s => s.stepName === "chargePayment" && s.status === "SUCCEEDED")
				).toHaveLength(1);

				// Exactly one notification, once it has arrived.
				const notes = await until(
					() => api(base, "GET", "/api/notifications", { token }),
					r => r.status === 200 && r.body.total >= 1,
					10_000,
					200
				);
				expect(notes.body.rows.map((n: { kind: string }) => n.kind)).toEqual([
					"ORDER_CONFIRMED"
				]);
				console.log(
					`orders crash: order ${orderId} ${order.status} after SIGKILL of pid ${firstPid} ` +
						`and restart as pid ${orders.pid}; saga log ${saga.steps.length} entries`
				);
			}),
		120_000
	);
});
