/**
 * The client's address as a gateway should believe it (moved out of services/api/api.service.ts,
 * issue 17): the TCP peer, or `X-Forwarded-For` only through the configured `TRUSTED_PROXIES`.
 * The rate limit keys on it and users.login throttles failed logins per address with it
 * (`ctx.meta.clientIp`).
 */
import type { IncomingMessage } from "node:http";
import { config } from "../config";

/** `::ffff:1.2.3.4` (an IPv4 client of a dual-stack socket) as `1.2.3.4`. */
function normalizeIp(ip: string): string {
	return ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip;
}

/**
 * The client's address: the TCP peer, unless the peer is one of `trustedProxies`; then the
 * right-most `X-Forwarded-For` entry that is not a trusted proxy (entries further left were
 * written by the client and prove nothing). Without trusted proxies the header is ignored.
 */
export function clientAddress(
	req: Pick<IncomingMessage, "socket" | "headers">,
	trustedProxies: readonly string[] = config().trustedProxies
): string {
	const peer = normalizeIp(req.socket.remoteAddress ?? "");
	if (trustedProxies.length === 0 || !trustedProxies.includes(peer)) return peer;
	const header = req.headers["x-forwarded-for"];
	const hops = (Array.isArray(header) ? header.join(",") : (header ?? ""))
		.split(",")
		.map(s => normalizeIp(s.trim()))
		.filter(Boolean);
	for (let i = hops.length - 1; i >= 0; i--)
		if (!trustedProxies.includes(hops[i]!)) return hops[i]!;
	return hops[0] ?? peer;
}
