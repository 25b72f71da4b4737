/**
 * `answerClientErrors` (platform/web/client-errors.ts) on a real node:http server over real
 * sockets, for what the one-process shop cannot show quickly or at all (the framing errors
 * themselves, on the shop, are test/e2e/framing.e2e.test.ts):
 * - a client too slow to send its headers gets 408 `REQUEST_CLIENT_TIMEOUT`, on a fresh and on
 *   a reused connection (the server's `headersTimeout` shortened to 400 ms);
 * - no answer is spliced into a response whose headers are out (a stream): the connection is cut;
 * - a request the server answered before reading its body gets no second answer when that body
 *   turns out malformed;
 * - the close lingers: a client still sending after the error gets its answer and a FIN, not a
 *   reset, and exactly one answer although the parser reports each later chunk again;
 * - a client that keeps its side open is cut once the linger time is over.
 */
import http, { type ServerResponse } from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { answerClientErrors } from "../../platform/web/client-errors";
import { rawExchange } from "../support/raw-http";

const LINGER_MS = 300;

describe("answerClientErrors", () => {
	let server: http.Server;
	let port: number;
	const held: ServerResponse[] = [];

	beforeAll(async () => {
		server = http.createServer(
			{ headersTimeout: 400, requestTimeout: 800, connectionsCheckingInterval: 50 },
			(req, res) => {
				if (req.url === "/stream") {
					// A response being written: headers and a first chunk out, the rest to come.
					res.writeHead(200, { "Content-Type": "text/plain" });
					res.write("first chunk\n");
					held.push(res);
				} else if (req.url === "/early") {
					// Answered before the body is read (as a gateway refusing a content type).
					res.writeHead(415, { "Content-Length": "0" });
					res.end();
				} else {
					req.resume();
					req.on("end", () => {
						res.writeHead(200, { "Content-Length": "2" });
						res.end("ok");
					});
				}
			}
		);
		answerClientErrors(server, LINGER_MS);
		await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
		port = (server.address() as AddressInfo).port;
	});
	afterAll(async () => {
		for (const res of held) res.destroy();
		server.closeAllConnections();
		await new Promise(resolve => server.close(resolve));
	});

	const OK = "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n";
	const typeOf = (body: string): unknown => (JSON.parse(body) as { type?: unknown }).type;

	it("answers on a reused connection as on a fresh one", async () => {
		const fresh = await rawExchange(port, [{ send: "GET /ok HTTP/9.9\r\nHost: x\r\n\r\n" }]);
		const reused = await rawExchange(port, [
			{ send: OK },
			{ send: "GET /ok HTTP/9.9\r\nHost: x\r\n\r\n" }
		]);
		expect(fresh.responses.map(r => [r.status, typeOf(r.body)])).toEqual([
			[400, "REQUEST_MALFORMED"]
		]);
		expect(reused.responses.map(r => r.status)).toEqual([200, 400]);
		expect(typeOf(reused.responses[1]!.body)).toBe("REQUEST_MALFORMED");
		expect([fresh.closed, reused.closed, fresh.trailing, reused.trailing]).toEqual([
			"end",
			"end",
			"",
			""
		]);
	});

	it("answers 408 to headers that come too slowly, on a fresh and on a reused connection", async () => {
		const partial = "GET /ok HTTP/1.1\r\nHost: x\r\n"; // the blank line never comes
		const [fresh, reused] = await Promise.all([
			rawExchange(port, [{ send: partial }]),
			rawExchange(port, [{ send: OK }, { send: partial }])
		]);
		expect(fresh.responses.map(r => [r.status, typeOf(r.body)])).toEqual([
			[408, "REQUEST_CLIENT_TIMEOUT"]
		]);
		expect(reused.responses.map(r => r.status)).toEqual([200, 408]);
		expect(typeOf(reused.responses[1]!.body)).toBe("REQUEST_CLIENT_TIMEOUT");
		expect([fresh.closed, reused.closed]).toEqual(["end", "end"]);
	});

	it("cuts a connection whose response is being written, without splicing an answer into it", async () => {
		const x = await rawExchange(port, [
			{
				send: "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n",
				until: got => got.includes("first chunk")
			},
			{ send: "GET /ok HTTP/9.9\r\nHost: x\r\n\r\n" }
		]);
		expect(x.closed).not.toBe("timeout");
		expect(x.closedAfterMs).toBeLessThan(LINGER_MS);
		expect(x.trailing.match(/HTTP\/1\.1 \d{3}/g)).toEqual(["HTTP/1.1 200"]);
		expect(x.trailing).not.toContain("REQUEST_MALFORMED");
	});

	it("gives a request answered before its body was read no second answer", async () => {
		const x = await rawExchange(port, [
			{ send: "POST /early HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" },
			{ send: "zz\r\nnot a chunk\r\n0\r\n\r\n" }
		]);
		expect(x.responses.map(r => r.status)).toEqual([415]);
		expect([x.trailing, x.closed]).toEqual(["", "end"]);
	});

	it("lingers: a client still sending gets its one answer and a FIN, not a reset", async () => {
		const junk = Buffer.alloc(4 * 1024 * 1024, "x");
		const x = await rawExchange(port, [
			{ send: OK },
			{ send: Buffer.concat([Buffer.from("GET /ok HTTP/9.9\r\nHost: x\r\n\r\n"), junk]) }
		]);
		expect(x.responses.map(r => r.status)).toEqual([200, 400]);
		expect([x.trailing, x.closed]).toEqual(["", "end"]);
	});

	it("destroys a refused connection the client keeps open once the linger time is over", async () => {
		const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
		try {
			let got = "";
			socket.on("data", d => (got += d.toString("latin1")));
			socket.write("GET /ok HTTP/9.9\r\nHost: x\r\n\r\n");
			await new Promise((resolve, reject) => {
				socket.once("end", resolve);
				setTimeout(() => reject(new Error("no answer in 3 s")), 3_000).unref();
			});
			expect(got).toMatch(/^HTTP\/1\.1 400 /);
			const open = (): Promise<number> =>
				new Promise((resolve, reject) =>
					server.getConnections((err, n) => (err ? reject(err) : resolve(n)))
				);
			expect(await open()).toBeGreaterThanOrEqual(1);
			await new Promise(resolve => setTimeout(resolve, LINGER_MS + 200));
			expect(await open()).toBe(0);
		} finally {
			socket.destroy();
		}
	});
});
