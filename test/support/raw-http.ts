/**
 * HTTP/1.1 over a raw `net.Socket`, for the framing suites (test/e2e/framing.e2e.test.ts,
 * test/unit/client-errors.test.ts): bytes no HTTP client would send, on a fresh connection or on
 * one that has just carried a whole exchange, and every byte the server sends back, parsed into
 * responses, with how the connection ended.
 */
import net from "node:net";

/** One response read off the wire. */
export interface RawResponse {
	status: number;
	/** Lower-cased names; a repeated header keeps its last value. */
	headers: Record<string, string>;
	body: string;
}

/** What came back on one connection. */
export interface RawExchange {
	/** Every whole response, in order. */
	responses: RawResponse[];
	/** Bytes after the last whole response (a cut or malformed one), as latin1. */
	trailing: string;
	/** How the connection ended: the server's FIN, a reset, or not within the wait. */
	closed: "end" | "reset" | "timeout";
	/** Milliseconds from the last write to the end of the connection. */
	closedAfterMs: number;
}

/**
 * Parses consecutive HTTP/1.1 responses (bodies framed by Content-Length or chunked; interim 1xx
 * responses are skipped). Stops at the first one that is not whole.
 */
export function parseResponses(buf: Buffer): { responses: RawResponse[]; rest: Buffer } {
	const responses: RawResponse[] = [];
	let at = 0;
	for (;;) {
		const headEnd = buf.indexOf("\r\n\r\n", at);
		if (headEnd < 0) break;
		const lines = buf.subarray(at, headEnd).toString("latin1").split("\r\n");
		const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0] ?? "");
		if (!m) break;
		const headers: Record<string, string> = {};
		for (const line of lines.slice(1)) {
			const i = line.indexOf(":");
			headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
		}
		let next = headEnd + 4;
		let body: Buffer;
		const status = Number(m[1]);
		if (status < 200 || status === 204 || status === 304) body = Buffer.alloc(0);
		else if (/chunked/i.test(headers["transfer-encoding"] ?? "")) {
			const parts: Buffer[] = [];
			let whole = false;
			for (;;) {
				const lineEnd = buf.indexOf("\r\n", next);
				if (lineEnd < 0) break;
				const size = parseInt(buf.subarray(next, lineEnd).toString("latin1"), 16);
				if (Number.isNaN(size) || buf.length < lineEnd + 2 + size + 2) break;
				parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
				next = lineEnd + 2 + size + 2;
				if (size === 0) {
					whole = true;
					break;
				}
			}
			if (!whole) break;
			body = Buffer.concat(parts);
		} else if (headers["content-length"] !== undefined) {
			const length = Number(headers["content-length"]);
			if (buf.length < next + length) break;
			body = buf.subarray(next, next + length);
			next += length;
		} else break; // a body up to the close: never whole while the connection lives
		at = next;
		if (status >= 200) responses.push({ status, headers, body: body.toString("utf8") });
	}
	return { responses, rest: buf.subarray(at) };
}

/**
 * Opens a connection to `port` on 127.0.0.1; sends each of `steps` in turn, each after the
 * previous one's `until` holds for what was received so far (default: one more whole response);
 * then waits up to `waitMs` for the server to end the connection. Never rejects: a hang is a
 * `closed: "timeout"`. The socket is destroyed in every case.
 */
export function rawExchange(
	port: number,
	steps: { send: string | Buffer; until?: (received: Buffer) => boolean }[],
	waitMs = 5_000
): Promise<RawExchange> {
	return new Promise(resolve => {
		const socket = net.connect(port, "127.0.0.1");
		const chunks: Buffer[] = [];
		let closed: RawExchange["closed"] | null = null;
		let lastWrite = Date.now();
		let step = 0;
		let waiting: (() => boolean) | null = null;
		const received = (): Buffer => Buffer.concat(chunks);
		const finish = (how: RawExchange["closed"]): void => {
			if (closed) return;
			closed = how;
			clearTimeout(timer);
			socket.destroy();
			const { responses, rest } = parseResponses(received());
			resolve({
				responses,
				trailing: rest.toString("latin1"),
				closed: how,
				closedAfterMs: Date.now() - lastWrite
			});
		};
		let timer = setTimeout(() => finish("timeout"), waitMs);
		const sendNext = (): void => {
			const s = steps[step++];
			if (!s) return;
			const before = parseResponses(received()).responses.length;
			waiting = s.until
				? () => s.until!(received())
				: () => parseResponses(received()).responses.length > before;
			socket.write(s.send);
			lastWrite = Date.now();
			// Each step gets the whole wait again (a slow warm-up answer is not a hang).
			clearTimeout(timer);
			timer = setTimeout(() => finish("timeout"), waitMs);
			if (step < steps.length && waiting()) sendNext();
		};
		socket.on("connect", sendNext);
		socket.on("data", c => {
			chunks.push(c);
			if (step < steps.length && waiting?.()) {
				waiting = null;
				sendNext();
			}
		});
		socket.on("end", () => finish("end"));
		socket.on("error", () => finish("reset"));
		socket.on("close", () => finish("reset"));
	});
}
