/**
 * Start-up against a JetStream that is not answering yet (platform/events/jetstream.ts
 * `whileJetStreamForms`): a request timeout (nats.js' own `NatsError` TIMEOUT) or the API's
 * 10008 "JetStream system temporarily unavailable" is retried until the call succeeds or the
 * forming time is over; any other error is raised at once. CI met the timeout as an inventory
 * node exiting at start on a freshly formed three-server cluster (test/cluster/nats-cluster).
 */
import { ErrorCode, NatsError } from "nats";
import { isJetStreamForming, whileJetStreamForms } from "../../platform/events/jetstream";

/** An operation failing with `errors` in turn, then answering "ok"; counts its calls. */
function flaky(errors: unknown[]): { op: () => Promise<string>; calls: () => number } {
	let n = 0;
	return {
		op: async () => {
			const err = errors[n++];
			if (err !== undefined) throw err;
			return "ok";
		},
		calls: () => n
	};
}

const timeout = (): NatsError => NatsError.errorForCode(ErrorCode.Timeout);
const temporarilyUnavailable = (): Error =>
	Object.assign(new Error("JetStream system temporarily unavailable"), {
		api_error: {
			code: 503,
			err_code: 10008,
			description: "JetStream system temporarily unavailable"
		}
	});

describe("whileJetStreamForms", () => {
	it("knows the forming answers from the others", () => {
		expect(isJetStreamForming(timeout())).toBe(true);
		expect(isJetStreamForming(temporarilyUnavailable())).toBe(true);
		expect(isJetStreamForming(NatsError.errorForCode(ErrorCode.NoResponders))).toBe(false);
		expect(isJetStreamForming(new Error("stream name already in use"))).toBe(false);
		expect(isJetStreamForming(undefined)).toBe(false);
	});

	it("retries timeouts and 10008 until the call answers", async () => {
		const f = flaky([timeout(), temporarilyUnavailable(), timeout()]);
		await expect(whileJetStreamForms(f.op, 10_000)).resolves.toBe("ok");
		expect(f.calls()).toBe(4);
	});

	it("raises any other error at once", async () => {
		const other = new Error("no suitable peers for placement");
		const f = flaky([other]);
		await expect(whileJetStreamForms(f.op, 10_000)).rejects.toBe(other);
		expect(f.calls()).toBe(1);
	});

	it("gives up with the last error once the forming time is over", async () => {
		const errs = Array.from({ length: 100 }, timeout);
		const f = flaky(errs);
		const t0 = Date.now();
		const raised = await whileJetStreamForms(f.op, 600).catch((e: unknown) => e);
		expect(raised).toBe(errs[f.calls() - 1]);
		expect(Date.now() - t0).toBeLessThan(5_000);
		// 250 ms, then 500 ms would pass 600 ms: two calls.
		expect(f.calls()).toBe(2);
	});
});
