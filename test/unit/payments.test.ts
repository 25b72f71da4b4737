import crypto from "node:crypto";
import type { Context, ServiceBroker } from "moleculer";
import type { Payment } from "../../services/payments/payments.model";
import { resetConfig } from "../../platform/config";
import { startTestBroker, waitFor, type TestBroker } from "../support/broker";

type Totals = Record<string, { captured: number; refunded: number }>;

describe("payments", () => {
	let t: TestBroker;
	let broker: ServiceBroker;
	/** Events the service emitted, by name, with their payloads. */
	const events: { name: string; payment: Payment }[] = [];

	beforeAll(async () => {
		t = await startTestBroker(["payments"], {
			extra: [
				{
					name: "payments-listener",
					events: {
						"payment.*"(this: unknown, ctx: Context<Payment>) {
							events.push({ name: String(ctx.eventName), payment: ctx.params });
						}
					}
				}
			]
		});
		broker = t.broker;
	});
	afterAll(async () => t?.stop());

	const charge = (
		orderId: string,
		amount: number,
		paymentMethod = "tok_visa",
		currency = "USD"
	): Promise<Payment> =>
		broker.call("payments.charge", { orderId, amount, currency, paymentMethod });
	const refund = (orderId: string): Promise<Payment> =>
		broker.call("payments.refund", { orderId });
	const totals = (): Promise<Totals> => broker.call("payments.totals");
	const usd = async (): Promise<{ captured: number; refunded: number }> =>
		(await totals()).USD ?? { captured: 0, refunded: 0 };
	const eventsOf = (orderId: string): string[] =>
		events.filter(e => e.payment.orderId === orderId).map(e => e.name);
	/** The order's events once `n` arrived (the outbox relay publishes after the commit). */
	const eventsOnceThere = (orderId: string, n: number): Promise<string[]> =>
		waitFor(
			async () => eventsOf(orderId),
			e => e.length >= n,
			5_000,
			10
		);

	describe("charge", () => {
		it("tok_visa captures; a repeat answers the same payment and the ledger has one CAPTURE", async () => {
			const before = await usd();
			const orderId = crypto.randomUUID();
			const p = await charge(orderId, 4321);
			expect(p).toMatchObject({
				id: expect.stringMatching(/^[0-9a-f-]{36}$/),
				orderId,
				amount: 4321,
				currency: "USD",
				method: "tok_visa",
				status: "CAPTURED",
				declineCode: null
			});
			const again = await charge(orderId, 4321);
			expect(again).toEqual(p);
			const concurrent = await Promise.all(
				Array.from({ length: 5 }, () => charge(orderId, 4321))
			);
			expect(new Set(concurrent.map(c => c.id))).toEqual(new Set([p.id]));
			expect(await usd()).toEqual({
				captured: before.captured + 4321,
				refunded: before.refunded
			});
			await expect(broker.call("payments.get", { orderId })).resolves.toEqual(p);
			expect(await eventsOnceThere(orderId, 1)).toEqual(["payment.captured"]);
		});

		it("concurrent first charges of one order capture once", async () => {
			const before = await usd();
			const orderId = crypto.randomUUID();
			const all = await Promise.all(Array.from({ length: 8 }, () => charge(orderId, 1000)));
			expect(new Set(all.map(p => p.id)).size).toBe(1);
			expect(await usd()).toEqual({
				captured: before.captured + 1000,
				refunded: before.refunded
			});
		});

		it("keeps currencies apart in the ledger", async () => {
			const before = (await totals()).EUR ?? { captured: 0, refunded: 0 };
			await charge(crypto.randomUUID(), 250, "tok_mastercard", "EUR");
			expect((await totals()).EUR).toEqual({
				captured: before.captured + 250,
				refunded: before.refunded
			});
		});

		it("tok_chargeDeclined: PAYMENTS_CARD_DECLINED 402 with data.declineCode, the same on a repeat", async () => {
			const before = await usd();
			const orderId = crypto.randomUUID();
			const declined = {
				type: "PAYMENTS_CARD_DECLINED",
				code: 402,
				retryable: false,
				data: { orderId, declineCode: "card_declined" }
			};
			await expect(charge(orderId, 999, "tok_chargeDeclined")).rejects.toMatchObject(
				declined
			);
			await expect(charge(orderId, 999, "tok_chargeDeclined")).rejects.toMatchObject(
				declined
			);
			// Once declined, the order's payment stays declined, even with a good card.
			await expect(charge(orderId, 999, "tok_visa")).rejects.toMatchObject(declined);
			await expect(broker.call("payments.get", { orderId })).resolves.toMatchObject({
				status: "DECLINED",
				declineCode: "card_declined"
			});
			expect(await usd()).toEqual(before);
			expect(await eventsOnceThere(orderId, 1)).toEqual(["payment.declined"]);
		});

		it("tok_chargeDeclinedInsufficientFunds declines with insufficient_funds", async () => {
			await expect(
				charge(crypto.randomUUID(), 999, "tok_chargeDeclinedInsufficientFunds")
			).rejects.toMatchObject({
				type: "PAYMENTS_CARD_DECLINED",
				data: { declineCode: "insufficient_funds" }
			});
		});

		it("an unknown token: PAYMENTS_INVALID_METHOD 422, nothing recorded", async () => {
			const orderId = crypto.randomUUID();
			await expect(charge(orderId, 999, "tok_unknown")).rejects.toMatchObject({
				type: "PAYMENTS_INVALID_METHOD",
				code: 422,
				data: { paymentMethod: "tok_unknown" }
			});
			await expect(broker.call("payments.get", { orderId })).resolves.toBeNull();
			// A good card afterwards still works: the bad token left no payment behind.
			await expect(charge(orderId, 999)).resolves.toMatchObject({ status: "CAPTURED" });
		});

		it("tok_processorUnavailable: PAYMENTS_PROCESSOR_UNAVAILABLE, retryable, nothing recorded", async () => {
			const before = await usd();
			const orderId = crypto.randomUUID();
			await expect(charge(orderId, 999, "tok_processorUnavailable")).rejects.toMatchObject({
				type: "PAYMENTS_PROCESSOR_UNAVAILABLE",
				code: 503,
				retryable: true
			});
			await expect(broker.call("payments.get", { orderId })).resolves.toBeNull();
			expect(await usd()).toEqual(before);
			// A retry once the processor answers captures normally.
			await expect(charge(orderId, 999)).resolves.toMatchObject({ status: "CAPTURED" });
		});

		it("tok_processorUnavailable's failure is tied to its payment (data.scope request), not the circuit breaker's business", async () => {
			await expect(
				charge(crypto.randomUUID(), 999, "tok_processorUnavailable")
			).rejects.toMatchObject({
				type: "PAYMENTS_PROCESSOR_UNAVAILABLE",
				data: { scope: "request" }
			});
		});

		describe("with simulated faults off (PAYMENTS_SIMULATED_FAULTS=false, production's default)", () => {
			const saved = process.env.PAYMENTS_SIMULATED_FAULTS;
			beforeAll(() => {
				process.env.PAYMENTS_SIMULATED_FAULTS = "false";
				resetConfig();
			});
			afterAll(() => {
				if (saved === undefined) delete process.env.PAYMENTS_SIMULATED_FAULTS;
				else process.env.PAYMENTS_SIMULATED_FAULTS = saved;
				resetConfig();
			});

			it("tok_processorUnavailable is refused like an unknown token: PAYMENTS_INVALID_METHOD 422, nothing recorded", async () => {
				const before = await usd();
				const orderId = crypto.randomUUID();
				await expect(
					charge(orderId, 999, "tok_processorUnavailable")
				).rejects.toMatchObject({
					type: "PAYMENTS_INVALID_METHOD",
					code: 422,
					message: expect.stringMatching(/PAYMENTS_SIMULATED_FAULTS/),
					data: { paymentMethod: "tok_processorUnavailable" }
				});
				await expect(broker.call("payments.get", { orderId })).resolves.toBeNull();
				expect(await usd()).toEqual(before);
				// Ordinary test cards are not faults: they work as before.
				await expect(charge(orderId, 999)).resolves.toMatchObject({ status: "CAPTURED" });
			});

			it("payments.simulateOutage is refused: AUTH_FORBIDDEN 403, and charges go on", async () => {
				await expect(
					broker.call("payments.simulateOutage", { durationMs: 60_000 })
				).rejects.toMatchObject({ type: "AUTH_FORBIDDEN", code: 403 });
				await expect(charge(crypto.randomUUID(), 999)).resolves.toMatchObject({
					status: "CAPTURED"
				});
			});
		});

		it("payments.simulateOutage: every card fails (data.scope processor) until it ends; a recorded payment still answers", async () => {
			const paid = crypto.randomUUID();
			await charge(paid, 700);
			const on = await broker.call<{ until: string | null }, { durationMs: number }>(
				"payments.simulateOutage",
				{
					durationMs: 60_000
				}
			);
			try {
				expect(Date.parse(on.until!)).toBeGreaterThan(Date.now());
				const orderId = crypto.randomUUID();
				await expect(
					broker.call(
						"payments.charge",
						{ orderId, amount: 999, currency: "USD", paymentMethod: "tok_visa" },
						{ retries: 0 }
					)
				).rejects.toMatchObject({
					type: "PAYMENTS_PROCESSOR_UNAVAILABLE",
					data: { scope: "processor" }
				});
				await expect(broker.call("payments.get", { orderId })).resolves.toBeNull();
				await expect(charge(paid, 700)).resolves.toMatchObject({ status: "CAPTURED" });
			} finally {
				const off = await broker.call<{ until: string | null }, { durationMs: number }>(
					"payments.simulateOutage",
					{
						durationMs: 0
					}
				);
				expect(off.until).toBeNull();
			}
			await expect(charge(crypto.randomUUID(), 999)).resolves.toMatchObject({
				status: "CAPTURED"
			});
		});

		it("the same order with another amount or currency: PAYMENTS_CONFLICT 409, ledger unchanged", async () => {
			const orderId = crypto.randomUUID();
			await charge(orderId, 5000);
			const before = await usd();
			await expect(charge(orderId, 5001)).rejects.toMatchObject({
				type: "PAYMENTS_CONFLICT",
				code: 409
			});
			await expect(charge(orderId, 5000, "tok_visa", "EUR")).rejects.toMatchObject({
				type: "PAYMENTS_CONFLICT"
			});
			expect(await usd()).toEqual(before);
			await expect(broker.call("payments.get", { orderId })).resolves.toMatchObject({
				amount: 5000,
				status: "CAPTURED"
			});
		});

		it.each([
			[{ amount: -1 }, "amount"],
			[{ amount: 1.5 }, "amount"],
			[{ currency: "usd" }, "currency"],
			[{ orderId: "nope" }, "orderId"]
		])("rejects %p with VALIDATION_ERROR 422", async (override, field) => {
			const params = {
				orderId: crypto.randomUUID(),
				amount: 100,
				currency: "USD",
				paymentMethod: "tok_visa",
				...override
			};
			await expect(broker.call("payments.charge", params)).rejects.toMatchObject({
				type: "VALIDATION_ERROR",
				code: 422,
				data: [expect.objectContaining({ field })]
			});
		});
	});

	describe("refund", () => {
		it("refunds a captured payment once: REFUNDED, and the ledger's refunded total grows once", async () => {
			const orderId = crypto.randomUUID();
			const captured = await charge(orderId, 7777);
			const before = await usd();
			const r = await refund(orderId);
			expect(r).toMatchObject({ id: captured.id, orderId, amount: 7777, status: "REFUNDED" });
			expect(await usd()).toEqual({
				captured: before.captured,
				refunded: before.refunded + 7777
			});

			const twice = await Promise.all([refund(orderId), refund(orderId)]);
			for (const again of twice)
				expect(again).toMatchObject({ id: captured.id, status: "REFUNDED" });
			expect(await usd()).toEqual({
				captured: before.captured,
				refunded: before.refunded + 7777
			});
			expect(await eventsOnceThere(orderId, 2)).toEqual([
				"payment.captured",
				"payment.refunded"
			]);
		});

		it("a charge after a refund is refused with PAYMENTS_CONFLICT", async () => {
			const orderId = crypto.randomUUID();
			await charge(orderId, 300);
			await refund(orderId);
			const before = await usd();
			await expect(charge(orderId, 300)).rejects.toMatchObject({
				type: "PAYMENTS_CONFLICT",
				code: 409,
				data: { orderId, status: "REFUNDED" }
			});
			expect(await usd()).toEqual(before);
		});

		it("a refund before the charge leaves VOIDED, and the late charge is refused with PAYMENTS_CONFLICT", async () => {
			const before = await usd();
			const orderId = crypto.randomUUID();
			await expect(refund(orderId)).resolves.toMatchObject({
				orderId,
				status: "VOIDED",
				amount: 0
			});
			await expect(refund(orderId)).resolves.toMatchObject({ orderId, status: "VOIDED" });
			await expect(charge(orderId, 1200)).rejects.toMatchObject({
				type: "PAYMENTS_CONFLICT",
				code: 409,
				data: { orderId, status: "VOIDED" }
			});
			expect(await usd()).toEqual(before);
			// Once the outbox has nothing left to publish, there is still no event.
			await waitFor(
				() => broker.call<{ pending: number }>("payments.outboxStatus"),
				s => s.pending === 0,
				5_000,
				10
			);
			expect(eventsOf(orderId)).toEqual([]);
		});

		it("refunding a declined payment moves no money and keeps it DECLINED", async () => {
			const before = await usd();
			const orderId = crypto.randomUUID();
			await expect(charge(orderId, 999, "tok_chargeDeclined")).rejects.toMatchObject({
				type: "PAYMENTS_CARD_DECLINED"
			});
			await expect(refund(orderId)).resolves.toMatchObject({ status: "DECLINED" });
			expect(await usd()).toEqual(before);
		});
	});

	it("ledger invariant: refunded never exceeds captured in any currency", async () => {
		const all = await totals();
		expect(Object.keys(all).length).toBeGreaterThan(0);
		for (const { captured, refunded } of Object.values(all))
			expect(refunded).toBeLessThanOrEqual(captured);
		expect(all.USD!.refunded).toBeGreaterThan(0);
	});
});
