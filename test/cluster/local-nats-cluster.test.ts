/**
 * The local NATS cluster `npm run cluster -- --nats 3` starts (tools/nats-cluster.ts), on real
 * nats-server processes: three servers routed to each other, a JetStream meta group of three with a
 * leader once started; a stream of three replicas takes writes with one server SIGKILLed (2 of 3
 * are a quorum) and none with two gone; the killed server restarts on its ports and store, rejoins
 * and holds every message again.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { connect, type NatsConnection } from "nats";
import { startNatsCluster, type NatsCluster } from "../../tools/nats-cluster";
import { until } from "../support/cluster";

const STREAM = "LOCAL_CLUSTER_TEST";

/** A member's monitoring answer at `path`. */
async function monitor<T>(monitorUrl: string, p: string): Promise<T> {
	const res = await fetch(`${monitorUrl}${p}`, { signal: AbortSignal.timeout(3_000) });
	return (await res.json()) as T;
}

interface StreamDetail {
	name: string;
	state: { messages: number };
	cluster?: { leader?: string; replicas?: { name: string; current: boolean }[] };
	config?: { num_replicas: number };
}

/** The stream as one member's `/jsz` reports it (null when that member holds no replica). */
async function streamOn(monitorUrl: string): Promise<StreamDetail | null> {
	const jsz = await monitor<{
		account_details?: { stream_detail?: StreamDetail[] }[];
	}>(monitorUrl, "/jsz?streams=true&config=true");
	return (
		(jsz.account_details ?? [])
			.flatMap(a => a.stream_detail ?? [])
			.find(s => s.name === STREAM) ?? null
	);
}

describe("a local NATS cluster of three (tools/nats-cluster.ts)", () => {
	let storeDir: string;
	let cluster: NatsCluster;
	let nc: NatsConnection;

	beforeAll(async () => {
		storeDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-local-nats-cluster-"));
		cluster = await startNatsCluster({ size: 3, storeDir });
		nc = await connect({
			servers: cluster.url.split(",").map(u => u.replace("nats://", "")),
			maxReconnectAttempts: -1,
			reconnectTimeWait: 200
		});
	}, 60_000);

	afterAll(async () => {
		await nc?.close();
		await cluster?.stop();
		fs.rmSync(storeDir, { recursive: true, force: true });
	}, 30_000);

	it("routes every server to the two others and elects one JetStream meta leader of three", async () => {
		expect(cluster.url.split(",")).toHaveLength(3);
		expect(new Set(cluster.members.map(m => m.name)).size).toBe(3);
		for (const m of cluster.members) {
			expect(m.running).toBe(true);
			// Each keeps its own store under the root.
			expect(fs.existsSync(path.join(storeDir, m.name))).toBe(true);
			const routez = await monitor<{ num_routes: number }>(m.monitorUrl, "/routez");
			expect({ m: m.name, routes: routez.num_routes }).toEqual({ m: m.name, routes: 2 });
		}
		const metas = await Promise.all(
			cluster.members.map(m =>
				monitor<{ meta_cluster: { leader: string; cluster_size: number } }>(
					m.monitorUrl,
					"/jsz"
				)
			)
		);
		expect(metas.map(j => j.meta_cluster.cluster_size)).toEqual([3, 3, 3]);
		const leaders = new Set(metas.map(j => j.meta_cluster.leader));
		expect(leaders.size).toBe(1);
		expect(cluster.members.map(m => m.name)).toContain([...leaders][0]);
	});

	it("keeps an R3 stream writable with one server SIGKILLed, not with two; a restart catches up", async () => {
		const jsm = await nc.jetstreamManager();
		await jsm.streams.add({ name: STREAM, subjects: [`${STREAM}.>`], num_replicas: 3 });
		const js = nc.jetstream();
		for (let i = 0; i < 10; i++)
			await js.publish(`${STREAM}.a`, new TextEncoder().encode(`${i}`));
		for (const m of cluster.members)
			expect(
				(
					await until(
						() => streamOn(m.monitorUrl),
						s => s?.state.messages === 10,
						10_000
					)
				)?.state.messages
			).toBe(10);

		// One server gone (no goodbye): the two others elect a leader if needed and take writes.
		const [first, second, third] = cluster.members;
		await first!.kill("SIGKILL");
		expect(first!.running).toBe(false);
		let stored = 10;
		const end = Date.now() + 20_000;
		while (stored < 20 && Date.now() < end) {
			try {
				await js.publish(`${STREAM}.b`, new TextEncoder().encode(`${stored}`), {
					msgID: `b-${stored}`,
					timeout: 2_000
				});
				stored++;
			} catch {
				await new Promise(r => setTimeout(r, 200)); // a leader election in progress
			}
		}
		expect(stored).toBe(20);

		// Two gone: no quorum, a write is not acknowledged (the stream is not lost, only stalled).
		await second!.kill("SIGKILL");
		await expect(
			js.publish(`${STREAM}.c`, new TextEncoder().encode("x"), { timeout: 3_000 })
		).rejects.toThrow();
		expect((await streamOn(third!.monitorUrl))?.state.messages).toBeLessThanOrEqual(21);

		// Back on their ports and stores: they rejoin and hold what was written meanwhile.
		await Promise.all([first!.start(), second!.start()]);
		await cluster.waitJetStreamReady(30_000);
		for (const m of cluster.members) {
			const s = await until(
				() => streamOn(m.monitorUrl).catch(() => null),
				x => (x?.state.messages ?? 0) >= 20,
				30_000,
				250
			);
			expect({ m: m.name, atLeast20: (s?.state.messages ?? 0) >= 20 }).toEqual({
				m: m.name,
				atLeast20: true
			});
		}
		await jsm.streams.delete(STREAM);
	}, 120_000);
});
