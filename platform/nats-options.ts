/**
 * Connection options of the `nats` client from the shop's settings, shared by the Moleculer
 * transporter (moleculer.config.ts), the JetStream connection of durable events (platform/events/jetstream.ts)
 * and the cluster supervisor's broker (tools/cluster.ts), so that all three authenticate alike.
 *
 * - `TRANSPORTER=nats://host:4222[,nats://host2:4222]`: the servers (`tls://...` requires TLS).
 * - Credentials in the URL: `nats://user:password@host` (user and password) or
 *   `nats://token@host` (a user without a password is a token, as in the NATS Go client), or
 *   `NATS_TOKEN`. Percent-encoded characters are decoded.
 * - TLS: `NATS_TLS_CA` (a PEM file of the CA that signed the server's certificate; otherwise the
 *   system's CAs), `NATS_TLS_CERT` + `NATS_TLS_KEY` (a client certificate, for servers that
 *   verify clients). Any of them, or a `tls://` URL, makes the client require TLS.
 *
 * The options carry no URL, so nothing that logs the transporter's options (Moleculer, moleculer-
 * runner, the `nats` client's status messages) sees credentials in a URL.
 *
 * A cluster of servers (docs/nats-cluster.md): `TRANSPORTER` lists them, comma-separated (spaces
 * after the commas are allowed: `nats://a:4222, nats://b:4222`); credentials and TLS apply to
 * every server. The client connects to one, learns the cluster's other servers from it (the
 * server's `connect_urls`) and, when it loses its server, reconnects to another with the same
 * subscriptions. The reconnect settings (`NATS_RECONNECT`, the same for the Moleculer transporter
 * and the JetStream connection of durable events), chosen for a server lost in a cluster of three:
 * - `maxReconnectAttempts: -1`: never give up; a node without NATS is useless, and an orchestrator
 *   restarting it would not make NATS come back sooner.
 * - `reconnectTimeWait: 500` ms between two attempts on the SAME server (the `nats` client tries
 *   another server of the list at once: losing one of three costs one round trip, not 500 ms);
 *   a whole cluster restarting is retried twice a second.
 * - `reconnectJitter: 250` ms (`reconnectJitterTLS: 1000` ms, a TLS handshake costs the server
 *   more), added at random to that wait, so that the hundreds of clients of a dead server do not
 *   retry its restart in lockstep.
 * - `waitOnFirstConnect: false`: at start-up, when no server of the list answers, `connect()`
 *   fails with the reason (refused, authorization violation), which Moleculer's transit logs and
 *   retries every 5 s; a server that did not answer is left out until the cluster announces it
 *   again (its `connect_urls`, as soon as it is back). The JetStream connection
 *   (platform/events/jetstream.ts) sets it to true: it is opened once the transporter is up.
 * - `timeout: 2000` ms per connection attempt: a server whose host is gone (no TCP reset) costs 2 s
 *   before the next one is tried, not the client's default 20 s.
 * - `pingInterval: 5000` ms, `maxPingOut: 3`: a connection to a server that went silent (host
 *   lost, network cut) is declared dead within 15 to 20 s, not the default 4 min.
 * The list is shuffled (the `nats` client's default) so that nodes spread over the servers;
 * `NATS_RANDOMIZE=false` keeps the listed order (the first server preferred, e.g. one per zone).
 */

/** The reconnect settings of every shop connection to NATS (see the module comment). */
export const NATS_RECONNECT = Object.freeze({
	maxReconnectAttempts: -1,
	reconnectTimeWait: 500,
	reconnectJitter: 250,
	reconnectJitterTLS: 1_000,
	waitOnFirstConnect: false,
	timeout: 2_000,
	pingInterval: 5_000,
	maxPingOut: 3
});

/** Credentials and TLS files besides the URL (platform/config.ts: `NATS_TOKEN`, `NATS_TLS_*`). */
export interface NatsSecurity {
	/** Token of a server started with `--auth` / `authorization { token }`. */
	readonly token?: string | null;
	/** PEM file of the CA that signed the server's certificate. */
	readonly tlsCaFile?: string | null;
	/** PEM file of this client's certificate (with `tlsKeyFile`). */
	readonly tlsCertFile?: string | null;
	/** PEM file of this client's private key. */
	readonly tlsKeyFile?: string | null;
}

/** TLS options of the `nats` client (it reads the files itself). */
export interface NatsTlsOptions {
	caFile?: string;
	certFile?: string;
	keyFile?: string;
}

/** What the `nats` client's `connect()` (and Moleculer's NATS transporter) takes from us. */
export interface NatsConnectionOptions {
	/** `host:port` of every server. */
	servers: string[];
	user?: string;
	pass?: string;
	token?: string;
	tls?: NatsTlsOptions;
}

/**
 * Maps a transporter URL (one or a comma-separated list) and the security settings to `nats`
 * client options. Credentials come from the first URL that has any; `security.token` wins over
 * a token in a URL.
 * @throws Error on a URL that does not parse, or a token together with a user and password
 */
export function natsConnectionOptions(
	url: string,
	security: NatsSecurity = {}
): NatsConnectionOptions {
	const servers: string[] = [];
	let user: string | undefined;
	let pass: string | undefined;
	let tlsScheme = false;
	for (const part of url.split(",")) {
		const raw = part.trim();
		if (!raw) continue;
		let u: URL;
		try {
			u = new URL(raw);
		} catch {
			throw new Error(`Not a NATS URL: ${redactUrl(raw)}`);
		}
		servers.push(`${u.hostname}:${u.port || 4222}`);
		if (u.protocol === "tls:") tlsScheme = true;
		if (user === undefined && u.username) {
			user = decodeURIComponent(u.username);
			pass = u.password ? decodeURIComponent(u.password) : undefined;
		}
	}
	if (servers.length === 0) throw new Error("No NATS server in the transporter URL");
	const out: NatsConnectionOptions = { servers };
	if (security.token) {
		if (user !== undefined && pass !== undefined)
			throw new Error("NATS_TOKEN and a user:password in TRANSPORTER: use one of them");
		out.token = security.token;
	} else if (user !== undefined && pass === undefined) out.token = user;
	else if (user !== undefined) {
		out.user = user;
		out.pass = pass;
	}
	const tls: NatsTlsOptions = {};
	if (security.tlsCaFile) tls.caFile = security.tlsCaFile;
	if (security.tlsCertFile) tls.certFile = security.tlsCertFile;
	if (security.tlsKeyFile) tls.keyFile = security.tlsKeyFile;
	if (tlsScheme || Object.keys(tls).length > 0) out.tls = tls;
	return out;
}

/** What `connect()` of the `nats` client takes for one shop connection: servers, security, reconnects. */
export type NatsClientOptions = NatsConnectionOptions &
	typeof NATS_RECONNECT & {
		/** Keep the listed order of the servers (`NATS_RANDOMIZE=false`). */
		noRandomize: boolean;
		/** Shown in the server's `/connz` (a nodeID). */
		name?: string;
	};

/**
 * The full client options of a shop connection to NATS: `natsConnectionOptions` plus
 * `NATS_RECONNECT`, the servers shuffled unless `randomize` is false, and a connection name.
 * The Moleculer transporter (moleculer.config.ts) and the JetStream connection
 * (platform/events/jetstream.ts) both use it.
 * @throws Error as `natsConnectionOptions`
 */
export function natsClientOptions(
	url: string,
	security: NatsSecurity = {},
	opts: { randomize?: boolean; name?: string | null } = {}
): NatsClientOptions {
	const out: NatsClientOptions = {
		...natsConnectionOptions(url, security),
		...NATS_RECONNECT,
		noRandomize: opts.randomize === false
	};
	if (opts.name) out.name = opts.name;
	return out;
}

/**
 * A URL fit for a log line: any user and password replaced by `***` (`nats://***@host:4222`).
 * Strings that do not parse as a URL are cut to their part after the last `@`.
 */
export function redactUrl(url: string): string {
	return url
		.split(",")
		.map(part => {
			try {
				const u = new URL(part.trim());
				if (!u.username && !u.password) return part.trim();
				return `${u.protocol}//***@${u.host}${u.pathname === "/" ? "" : u.pathname}`;
			} catch {
				const at = part.lastIndexOf("@");
				return at < 0 ? part.trim() : `***${part.slice(at)}`;
			}
		})
		.join(",");
}

/** The NATS security settings of a loaded config (platform/config.ts). */
export function natsSecurity(c: {
	readonly natsToken: string | null;
	readonly natsTlsCa: string | null;
	readonly natsTlsCert: string | null;
	readonly natsTlsKey: string | null;
}): NatsSecurity {
	return {
		token: c.natsToken,
		tlsCaFile: c.natsTlsCa,
		tlsCertFile: c.natsTlsCert,
		tlsKeyFile: c.natsTlsKey
	};
}
