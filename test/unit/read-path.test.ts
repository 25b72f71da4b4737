/**
 * What the cached read's per-request path was made cheaper with (docs/performance.md, "The cached
 * read's remaining cost"), checked against what it replaced:
 *
 * - `traceparentOf` writes exactly the header @opentelemetry/core's propagator writes;
 * - the memory cacher's `frozenCopy` stores a frozen copy and answers hits without copying, on a
 *   real broker with moleculer.config.ts's cacher;
 * - `RequestContextMiddleware` keeps a nested call's request id right when it skips `run`;
 * - the JSON logs: `cachedIsoTime` is pino's `isoTime`, and a process that exits, throws or
 *   rejects right after logging still has every line read, in order, from its stdout pipe by a
 *   slow reader (the built logger, `dist/`, in a child process).
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ROOT_CONTEXT, trace, TraceFlags } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { ServiceBroker, type BrokerOptions, type Context } from "moleculer";
import pino from "pino";
import { cachedIsoTime } from "../../platform/logger";
import { currentRequestId, RequestContextMiddleware } from "../../platform/request-context";
import { frozenCopy } from "../../platform/resilient-cacher";
import { traceparentOf, w3cSpanId, w3cTraceId } from "../../platform/tracing/trace-context";

describe("traceparentOf", () => {
	const propagator = new W3CTraceContextPropagator();
	/** The header as the propagator writes it for the same ids and flags. */
	const byPropagator = (traceId: string, spanId: string, sampled: boolean): string => {
		const carrier: Record<string, string> = {};
		propagator.inject(
			trace.setSpanContext(ROOT_CONTEXT, {
				traceId,
				spanId,
				traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE
			}),
			carrier,
			{ set: (c, k, v) => void (c[k] = v) }
		);
		return carrier.traceparent!;
	};

	it("is the propagator's header for request ids and span ids of every form", () => {
		const ids = [
			randomUUID(),
			randomUUID().toUpperCase(),
			"4bf92f3577b34da6a3ce929d0e0e4736",
			"4BF92F3577B34DA6A3CE929D0E0E4736",
			"00f067aa0ba902b7",
			"0".repeat(32),
			"00000000-0000-0000-0000-000000000000",
			"client-request-42",
			"ünïcode-id"
		];
		for (const requestID of [...ids, null])
			for (const id of ids)
				for (const span of [null, { id, sampled: true }, { id, sampled: false }]) {
					const got = traceparentOf({ id, requestID, span });
					expect(got).toBe(
						byPropagator(
							w3cTraceId(requestID ?? id),
							w3cSpanId(span?.id ?? id),
							span?.sampled ?? false
						)
					);
					expect(got).toMatch(/^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-0[01]$/);
				}
	});
});

describe("the memory cacher's frozenCopy", () => {
	it("copies and freezes what is stored, returns a stored value as it is", () => {
		const result = { id: "p1", tags: ["a", { b: 1 }], at: new Date(0) };
		const stored = frozenCopy(result);
		expect(stored).toEqual(result);
		expect(stored).not.toBe(result);
		expect(Object.isFrozen(result)).toBe(false);
		expect(Object.isFrozen(stored) && Object.isFrozen(stored.tags)).toBe(true);
		expect(Object.isFrozen(stored.tags[1])).toBe(true);
		// Not a plain object: shared, not frozen.
		expect(stored.at).toBe(result.at);
		expect(frozenCopy(stored)).toBe(stored);
		expect(() => {
			(stored as { id: string }).id = "p2";
		}).toThrow(TypeError);
		expect(frozenCopy(null)).toBeNull();
		expect(frozenCopy("s")).toBe("s");
		const buf = Buffer.from("x");
		expect(frozenCopy({ buf }).buf).toBe(buf);
	});

	it("answers hits of a cached action without copying, as moleculer.config.ts sets it up", async () => {
		const config = require("../../moleculer.config") as BrokerOptions;
		expect((config.cacher as { options: { clone: unknown } }).options.clone).toBe(frozenCopy);
		let runs = 0;
		const broker = new ServiceBroker({
			logger: false,
			cacher: { type: "Memory", options: { ttl: 30, clone: frozenCopy } }
		});
		broker.createService({
			name: "things",
			actions: {
				get: {
					cache: { keys: ["id"] },
					handler: (ctx: Context<{ id: string }>) => {
						runs++;
						return { id: ctx.params.id, nested: { n: runs } };
					}
				}
			}
		});
		await broker.start();
		type Thing = { id: string; nested: { n: number } };
		const get = (): Promise<Thing> =>
			broker.call<Thing, { id: string }>("things.get", { id: "a" });
		try {
			const first = await get();
			expect(Object.isFrozen(first)).toBe(false);
			const hit1 = await get();
			const hit2 = await get();
			expect(runs).toBe(1);
			expect(hit1).toEqual({ id: "a", nested: { n: 1 } });
			expect(hit2).toBe(hit1);
			expect(Object.isFrozen(hit1.nested)).toBe(true);
			// The first caller's copy is its own: changing it does not reach the cache.
			first.nested.n = 99;
			expect(await get()).toEqual({
				id: "a",
				nested: { n: 1 }
			});
		} finally {
			await broker.stop();
		}
	});
});

describe("RequestContextMiddleware", () => {
	it("runs nested local calls with their own request id, the same one without a new store", async () => {
		const broker = new ServiceBroker({
			logger: false,
			middlewares: [RequestContextMiddleware]
		});
		const seen: Record<string, (string | undefined)[]> = {};
		const note = (k: string): void => void (seen[k] ??= []).push(currentRequestId());
		broker.createService({
			name: "rc",
			actions: {
				outer: async (ctx: Context) => {
					note("outer");
					await ctx.call("rc.inner");
					await ctx.call("rc.inner", {}, { requestID: "other" });
					note("outer");
					return null;
				},
				inner: async (ctx: Context) => {
					note(`inner:${ctx.requestID}`);
					await new Promise(r => setImmediate(r));
					note(`inner:${ctx.requestID}`);
					return null;
				}
			}
		});
		await broker.start();
		try {
			await broker.call("rc.outer", {}, { requestID: "r1" });
			await Promise.all([
				broker.call("rc.inner", {}, { requestID: "c1" }),
				broker.call("rc.inner", {}, { requestID: "c2" })
			]);
		} finally {
			await broker.stop();
		}
		expect(seen).toEqual({
			outer: ["r1", "r1"],
			"inner:r1": ["r1", "r1"],
			"inner:other": ["other", "other"],
			"inner:c1": ["c1", "c1"],
			"inner:c2": ["c2", "c2"]
		});
	});
});

describe("the JSON log destination", () => {
	it("cachedIsoTime is pino's isoTime, computed once per millisecond", () => {
		let now = Date.parse("2026-12-02T10:00:00.123Z");
		const time = cachedIsoTime(() => now);
		const a = time();
		expect(a).toBe(',"time":"2026-12-02T10:00:00.123Z"');
		expect(time()).toBe(a);
		now += 1;
		expect(time()).toBe(',"time":"2026-12-02T10:00:00.124Z"');
		expect(pino.stdTimeFunctions.isoTime()).toMatch(/^,"time":"\d{4}-\d\d-\d\dT[\d:.]+Z"$/);
	});

	const built = path.resolve(__dirname, "../../dist/platform/logger.js");
	const ends = ["exit", "throw", "reject", "end"] as const;
	(fs.existsSync(built) ? it : it.skip).each(ends)(
		"a process that logs 20 000 lines to a pipe and then ends (%s) has them all read",
		async end => {
			const script = `
				const { ServiceBroker } = require("moleculer");
				const { shopLogger } = require(${JSON.stringify(built)});
				const broker = new ServiceBroker({ logger: shopLogger({ logFormat: "json", logLevel: "info" }) });
				const log = broker.getLogger("t");
				let i = 0;
				(function burst() {
					for (let k = 0; k < 2000; k++, i++) log.info("line " + i);
					if (i < 20000) return setImmediate(burst);
					${
						{
							exit: "process.exit(0);",
							throw: 'throw new Error("boom");',
							reject: 'Promise.reject(new Error("boom"));',
							end: ""
						}[end]
					}
				})();`;
			const child = spawn(process.execPath, ["-e", script], {
				cwd: path.resolve(__dirname, "../.."),
				stdio: ["ignore", "pipe", "ignore"]
			});
			let out = "";
			child.stdout.setEncoding("utf8");
			// A slow reader: the pipe fills, the process's writes must wait for it.
			child.stdout.on("data", (d: string) => {
				out += d;
				child.stdout.pause();
				setTimeout(() => child.stdout.resume(), 2);
			});
			await new Promise(r => child.once("close", r));
			const lines = out
				.split("\n")
				.filter(l => l.startsWith("{"))
				.map(l => (JSON.parse(l) as { msg: string }).msg)
				.filter(m => m.startsWith("line ")); // not the broker's own start lines
			expect(lines).toHaveLength(20000);
			expect(lines.every((m, i) => m === `line ${i}`)).toBe(true);
		},
		60_000
	);
});
