/**
 * The JetStream side of retention (platform/events/jetstream.ts): the streams have `max_bytes` (applied to
 * an existing stream too), and a consumer that falls behind the stream's retention is reported
 * (`consumerLag`), not silent. Real nats-server.
 */
import {
	EVENTS_STREAM,
	connectJetStream,
	consumerLag,
	ensureConsumer,
	eventSubject,
	type JetStreamBus
} from "../../platform/events/jetstream";
import { startNats, type NatsServer } from "../support/nats";

const delay = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

describe("retention: JetStream limits and consumer lag", () => {
	let nats: NatsServer;
	let bus: JetStreamBus | null = null;

	beforeAll(async () => {
		nats = await startNats();
		// An older shop created the stream without a size limit: the limits are applied on connect.
		const old = await connectJetStream(
			nats.url,
			"old",
			{},
			{ maxAgeMs: 7 * 24 * 3600_000, maxBytes: -1 }
		);
		await old.close();
		bus = await connectJetStream(
			nats.url,
			"retention-test",
			{},
			{ maxAgeMs: 3600_000, maxBytes: 65_536 }
		);
	}, 30_000);

	afterAll(async () => {
		await bus?.close();
		await nats?.stop();
	});

	it("a consumer whose oldest pending event is older than the alert is behind", async () => {
		const late = await ensureConsumer(bus!.jsm, "late", "late.happened", {
			maxDeliver: 5,
			ackWaitMs: 30_000
		});
		await bus!.js.publish(eventSubject("late.happened"), Buffer.from("{}"));
		expect(await consumerLag(bus!.jsm, late, 1_000)).toMatchObject({
			pending: 1,
			behind: false
		});
		await delay(1_200);
		const lag = await consumerLag(bus!.jsm, late, 1_000);
		expect(lag).toMatchObject({ pending: 1, lost: false, behind: true });
		expect(lag.oldestPendingAgeMs).toBeGreaterThanOrEqual(1_000);
	});

	it("a consumer whose unread events the stream dropped (max_bytes) is behind; one that keeps up is not", async () => {
		if (!bus) throw new Error("no bus");
		const info = await bus.jsm.streams.info(EVENTS_STREAM);
		expect(info.config.max_bytes).toBe(65_536);
		expect(info.config.max_age).toBe(3600_000 * 1_000_000);

		const slow = await ensureConsumer(bus.jsm, "slow", "thing.happened", {
			maxDeliver: 5,
			ackWaitMs: 30_000
		});
		const fast = await ensureConsumer(bus.jsm, "fast", "other.happened", {
			maxDeliver: 5,
			ackWaitMs: 30_000
		});
		expect(await consumerLag(bus.jsm, slow, 60_000)).toMatchObject({
			pending: 0,
			behind: false,
			lost: false
		});

		const body = Buffer.alloc(1024, 120);
		for (let i = 0; i < 100; i++) await bus.js.publish(eventSubject("thing.happened"), body);
		await bus.js.publish(eventSubject("other.happened"), body);
		// The fast consumer reads and acknowledges its event.
		const c = await bus.js.consumers.get(EVENTS_STREAM, fast);
		const m = await c.next({ expires: 5_000 });
		expect(m).not.toBeNull();
		await m!.ackAck();

		const state = (await bus.jsm.streams.info(EVENTS_STREAM)).state;
		expect(state.first_seq).toBeGreaterThan(1);
		const lag = await consumerLag(bus.jsm, slow, 60_000);
		expect(lag.lost).toBe(true);
		expect(lag.behind).toBe(true);
		expect(lag.pending).toBeLessThan(100);
		expect(await consumerLag(bus.jsm, fast, 60_000)).toMatchObject({
			pending: 0,
			behind: false
		});
	});
});
