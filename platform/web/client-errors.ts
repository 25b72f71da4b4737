/**
 * `answerClientErrors(server)`: the gateway's answer to a request Node's HTTP parser refuses
 * (the server's `clientError` event): a bad request line, method or HTTP version; a bad, duplicate
 * or negative `Content-Length`, or one next to `Transfer-Encoding`; a bad chunked body; a header
 * with an invalid character or without a colon; the request line and headers over 16 KB; chunk
 * extensions over 16 KB; a client too slow to send its headers (`headersTimeout`).
 *
 * The rule is Node's own (lib/_http_server.js `socketOnError`, and the `clientError` section of
 * Node's HTTP docs): answer, then close, unless the response attached to the connection has
 * already sent its headers, in which case an answer would be spliced into it and the connection
 * is destroyed instead. A kept-alive connection that already carried whole exchanges is answered
 * like a fresh one (issue 21: the gateway used to hang up without a word whenever anything had
 * been written on the connection, i.e. on every reused one). What differs from Node's handler:
 *
 * - the answer is the CONTRACT's JSON error body with a stable `type` (`clientErrorResponse`):
 *   400 `REQUEST_MALFORMED`, 413 `REQUEST_BODY_TOO_LARGE` (`HPE_CHUNK_EXTENSIONS_OVERFLOW`), 431
 *   `REQUEST_HEADERS_TOO_LARGE` (`HPE_HEADER_OVERFLOW`), 408 `REQUEST_CLIENT_TIMEOUT`
 *   (`ERR_HTTP_REQUEST_TIMEOUT`), with `Connection: close`;
 * - the signal "a response is being written" comes from the public API (`request` events,
 *   `response.headersSent`, `response.writableFinished`), not `socket._httpMessage`; a response
 *   queued behind another (pipelining) that has its headers counts too, so an answer never
 *   overtakes queued responses;
 * - a request that already has its answer (the gateway answered before reading its whole body,
 *   then the rest of that body turned out malformed) gets no second one: the connection closes;
 * - the close is a lingering one, as Apache's and nginx's: the answer is sent with a FIN, what the
 *   client still sends is read and dropped until it closes its side or `CLIENT_ERROR_LINGER_MS`
 *   passes, then the socket is destroyed. Destroying it at once (as Node does) with unread bytes
 *   in the receive buffer sends a TCP RST, which can make the client lose the answer;
 * - the parser reports every later chunk of a refused connection again: only the first report
 *   counts.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { clientErrorResponse } from "./request-guards";

/** How long (ms) a refused connection is kept reading after its answer before it is destroyed. */
export const CLIENT_ERROR_LINGER_MS = 2_000;

/** What a connection is doing at the moment of a parse error, as far as answers are concerned. */
interface Exchanges {
	/** Responses not yet handed to the operating system in full. */
	open: Set<ServerResponse>;
	/** The connection's latest request and its response. */
	latest?: { req: IncomingMessage; res: ServerResponse };
}

/**
 * Installs the `clientError` handler described in this file's comment on `server` (and a
 * `request` listener that tracks each connection's responses). Call once per server, before it
 * accepts connections' requests; the server's own request handler is left as it is.
 * @param server - a node:http server (moleculer-web's, or any)
 * @param lingerMs - how long (ms) a refused connection may keep sending before it is destroyed
 */
export function answerClientErrors(server: Server, lingerMs = CLIENT_ERROR_LINGER_MS): void {
	const connections = new WeakMap<Duplex, Exchanges>();
	const refused = new WeakSet<Duplex>();

	server.on("request", (req: IncomingMessage, res: ServerResponse) => {
		let exchanges = connections.get(req.socket);
		if (!exchanges) {
			exchanges = { open: new Set() };
			connections.set(req.socket, exchanges);
		}
		exchanges.latest = { req, res };
		if (res.writableFinished) return;
		const open = exchanges.open;
		open.add(res);
		const done = (): void => void open.delete(res);
		res.once("finish", done);
		res.once("close", done);
	});

	server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
		if (refused.has(socket)) return;
		refused.add(socket);
		const exchanges = connections.get(socket);
		const midWrite = [...(exchanges?.open ?? [])].some(res => res.headersSent);
		if (err.code === "ECONNRESET" || !socket.writable || midWrite) {
			socket.destroy();
			return;
		}
		const latest = exchanges?.latest;
		const alreadyAnswered = latest && !latest.req.complete && latest.res.writableFinished;
		if (alreadyAnswered) socket.end();
		else socket.end(clientErrorResponse(err.code));
		const timer = setTimeout(() => socket.destroy(), lingerMs);
		timer.unref();
		socket.once("close", () => clearTimeout(timer));
	});
}
