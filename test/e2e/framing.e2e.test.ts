/**
 * Every request Node's HTTP parser refuses gets an answer (issue 21, part 2), on the production
 * one-process shop (`startShopProcess`, dist/): a URL or headers over 16 KB, a bad request line or
 * HTTP version, a bad, negative or duplicate `Content-Length`, `Content-Length` with
 * `Transfer-Encoding`, a bad chunked body, chunk extensions over 16 KB, invalid characters in a
 * header. Each is sent on a raw socket twice: on a fresh connection, and on a kept-alive one right
 * after a whole `GET /api/products` exchange, as browsers and fetch reuse connections. Each time
 * exactly one more well-formed answer comes back, with the expected status, the CONTRACT's error
 * body (`type`, `code` equal to the status) and `Connection: close`, and the gateway then closes
 * the connection. Before the fix the gateway hung up without a word on every reused connection.
 * The rule's other side (no answer spliced into a response being written), the 408 and the
 * lingering close are test/unit/client-errors.test.ts.
 */
import fs from "node:fs";
import { rawExchange, type RawExchange } from "../support/raw-http";
import { startShopProcess, type ShopProcess } from "../support/shop-process";

const WARM_UP = "GET /api/products?pageSize=1 HTTP/1.1\r\nHost: shop\r\n\r\n";
const LOGIN = '{"email":"ann@example.com","password":"x"}';
const post = (headers: string, body: string): string =>
	`POST /api/users/login HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n${headers}\r\n${body}`;
const get = (line: string, headers = ""): string => `${line}\r\nHost: shop\r\n${headers}\r\n`;

const MALFORMED = { status: 400, type: "REQUEST_MALFORMED" };
const HEADERS_TOO_LARGE = { status: 431, type: "REQUEST_HEADERS_TOO_LARGE" };
const BODY_TOO_LARGE = { status: 413, type: "REQUEST_BODY_TOO_LARGE" };

/** [label, bytes, expected answer]. */
const CASES: [string, string, { status: number; type: string }][] = [
	[
		"a URL over 16 KB",
		get(`GET /api/products?search=${"a".repeat(20_000)} HTTP/1.1`),
		HEADERS_TOO_LARGE
	],
	[
		"one header over 16 KB",
		get("GET /api/products HTTP/1.1", `Cookie: a=${"b".repeat(20_000)}\r\n`),
		HEADERS_TOO_LARGE
	],
	[
		"200 headers of 100 bytes",
		get(
			"GET /api/products HTTP/1.1",
			Array.from({ length: 200 }, (_, i) => `X-Pad-${i}: ${"p".repeat(90)}\r\n`).join("")
		),
		HEADERS_TOO_LARGE
	],
	["HTTP/9.9", get("GET /api/products HTTP/9.9"), MALFORMED],
	["HTTP/1.x", get("GET /api/products HTTP/1.x"), MALFORMED],
	["bare LF line ends", "GET /api/products HTTP/1.1\nHost: shop\n\n", MALFORMED],
	["a bad method", get("G(T /api/products HTTP/1.1"), MALFORMED],
	["a space in the path", get("GET /api/products /x HTTP/1.1"), MALFORMED],
	["a Content-Length that is not a number", post("Content-Length: abc\r\n", LOGIN), MALFORMED],
	["a negative Content-Length", post("Content-Length: -1\r\n", LOGIN), MALFORMED],
	[
		"two different Content-Length headers",
		post(`Content-Length: 5\r\nContent-Length: ${LOGIN.length}\r\n`, LOGIN),
		MALFORMED
	],
	[
		"two equal Content-Length headers",
		post(`Content-Length: ${LOGIN.length}\r\nContent-Length: ${LOGIN.length}\r\n`, LOGIN),
		MALFORMED
	],
	[
		"Content-Length and Transfer-Encoding",
		post(`Content-Length: ${LOGIN.length}\r\nTransfer-Encoding: chunked\r\n`, LOGIN),
		MALFORMED
	],
	[
		"a Transfer-Encoding that does not end in chunked",
		post("Transfer-Encoding: gzip\r\n", LOGIN),
		MALFORMED
	],
	[
		"a bad chunk size",
		post("Transfer-Encoding: chunked\r\n", `zz\r\n${LOGIN}\r\n0\r\n\r\n`),
		MALFORMED
	],
	[
		"a chunk longer than its size",
		post("Transfer-Encoding: chunked\r\n", `5\r\n${LOGIN}\r\n0\r\n\r\n`),
		MALFORMED
	],
	[
		"chunk extensions over 16 KB",
		post("Transfer-Encoding: chunked\r\n", `2;${"e".repeat(20_000)}\r\n{}\r\n0\r\n\r\n`),
		BODY_TOO_LARGE
	],
	[
		"a NUL in a header",
		get("GET /api/products HTTP/1.1", "X-Request-ID: a\u0000b\r\n"),
		MALFORMED
	],
	[
		"a control character in a header",
		get("GET /api/products HTTP/1.1", "X-Request-ID: a\u0001b\r\n"),
		MALFORMED
	],
	["a space in a header name", get("GET /api/products HTTP/1.1", "X Bad: 1\r\n"), MALFORMED],
	["a header without a colon", get("GET /api/products HTTP/1.1", "X-Request-ID\r\n"), MALFORMED],
	[
		"a folded header line (obs-fold)",
		get("GET /api/products HTTP/1.1", "X-Request-ID: a\r\n  b\r\n"),
		MALFORMED
	]
];

/** What is wrong with the answers on one connection (`before` whole exchanges came first). */
function problemsOf(
	label: string,
	x: RawExchange,
	before: number,
	expected: { status: number; type: string }
): string[] {
	const out: string[] = [];
	const say = (what: string): number =>
		out.push(
			`${label}: ${what} (${x.responses.length} answers: ${x.responses
				.map(r => `${r.status} ${r.body.slice(0, 80)}`)
				.join(" | ")}; trailing ${JSON.stringify(x.trailing.slice(0, 60))}; ${x.closed})`
		);
	if (x.responses.length !== before + 1) say(`${before + 1} answers expected`);
	if (x.trailing !== "") say("bytes after the last whole answer");
	if (x.closed === "timeout") say("the connection stayed open");
	const answer = x.responses[before];
	if (!answer) return out;
	let body: { type?: unknown; code?: unknown; name?: unknown; message?: unknown } = {};
	try {
		body = JSON.parse(answer.body) as typeof body;
	} catch {
		say("no JSON body");
	}
	if (answer.status !== expected.status) say(`status ${expected.status} expected`);
	if (body.type !== expected.type) say(`type ${expected.type} expected`);
	if (body.code !== answer.status) say("code differs from the status");
	if (typeof body.name !== "string" || typeof body.message !== "string") say("no name/message");
	if (answer.headers.connection !== "close") say("no Connection: close");
	if (!/^application\/json/.test(answer.headers["content-type"] ?? "")) say("not JSON");
	return out;
}

describe("framing errors get an answer, on fresh and on reused connections", () => {
	let shop: ShopProcess;
	let port: number;

	beforeAll(async () => {
		shop = await startShopProcess();
		port = Number(new URL(shop.url).port);
	}, 120_000);
	afterAll(async () => {
		await shop?.stop();
		if (shop) fs.rmSync(shop.dataDir, { recursive: true, force: true });
	});

	it("answers each on a fresh connection, then closes it", async () => {
		const out: string[] = [];
		for (const [label, bytes, expected] of CASES)
			out.push(...problemsOf(label, await rawExchange(port, [{ send: bytes }]), 0, expected));
		expect(out).toEqual([]);
	});

	it("answers each on a kept-alive connection after a whole exchange, then closes it", async () => {
		const out: string[] = [];
		let answered = 0;
		for (const [label, bytes, expected] of CASES) {
			const x = await rawExchange(port, [{ send: WARM_UP }, { send: bytes }]);
			const warm = x.responses[0];
			// The precondition: the first exchange went through and left the connection open.
			if (warm?.status !== 200 || warm.headers.connection === "close")
				out.push(`${label}: the warm-up was ${warm?.status} ${warm?.headers.connection}`);
			const p = problemsOf(`${label} (reused)`, x, 1, expected);
			if (p.length === 0) answered++;
			out.push(...p);
		}
		expect([`${answered} of ${CASES.length} answered`, out]).toEqual([
			`${CASES.length} of ${CASES.length} answered`,
			[]
		]);
	});

	it("keeps serving: the shop answers normally afterwards", async () => {
		const x = await rawExchange(port, [{ send: WARM_UP }], 1_000);
		expect(x.responses.map(r => r.status)).toEqual([200]);
	});
});
