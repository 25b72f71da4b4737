import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { IncomingMessage } from "node:http";
import { ConfigError, loadConfig } from "../../platform/config";
import {
	NATS_RECONNECT,
	natsClientOptions,
	natsConnectionOptions,
	natsSecurity,
	redactUrl
} from "../../platform/nats-options";
import { Errors } from "moleculer";
import { reconnectedSubject, rejectPending } from "../../platform/nats-reconnect";

describe("NATS connection options (platform/nats-options.ts)", () => {
	it("maps servers, a user and password, percent-decoded", () => {
		expect(
			natsConnectionOptions("nats://shop:p%40ss%3Aword@nats-1:4222,nats://nats-2")
		).toEqual({ servers: ["nats-1:4222", "nats-2:4222"], user: "shop", pass: "p@ss:word" });
	});

	it("takes a user without a password as a token, like the NATS Go client", () => {
		expect(natsConnectionOptions("nats://s3cr3t-t0ken@127.0.0.1:4333")).toEqual({
			servers: ["127.0.0.1:4333"],
			token: "s3cr3t-t0ken"
		});
	});

	it("prefers NATS_TOKEN, and refuses it together with a user and password", () => {
		expect(
			natsConnectionOptions("nats://old@127.0.0.1:4222", { token: "from-env" })
		).toMatchObject({ token: "from-env" });
		expect(natsConnectionOptions("nats://127.0.0.1:4222", { token: "t" })).toEqual({
			servers: ["127.0.0.1:4222"],
			token: "t"
		});
		expect(() => natsConnectionOptions("nats://u:p@127.0.0.1:4222", { token: "t" })).toThrow(
			/NATS_TOKEN/
		);
	});

	it("maps the TLS files to the client's tls options; tls:// alone requires TLS", () => {
		expect(
			natsConnectionOptions("nats://127.0.0.1:4222", {
				tlsCaFile: "/etc/shop/ca.pem",
				tlsCertFile: "/etc/shop/node.pem",
				tlsKeyFile: "/etc/shop/node-key.pem"
			})
		).toEqual({
			servers: ["127.0.0.1:4222"],
			tls: {
				caFile: "/etc/shop/ca.pem",
				certFile: "/etc/shop/node.pem",
				keyFile: "/etc/shop/node-key.pem"
			}
		});
		expect(natsConnectionOptions("tls://nats.internal:4222")).toEqual({
			servers: ["nats.internal:4222"],
			tls: {}
		});
		expect(natsConnectionOptions("nats://127.0.0.1:4222")).not.toHaveProperty("tls");
	});

	it("carries no URL, so nothing logs credentials from it", () => {
		const opts = natsConnectionOptions("nats://user:hunter2-secret@127.0.0.1:4222");
		expect(JSON.stringify({ ...opts, pass: undefined })).not.toContain("hunter2-secret");
		expect(opts).not.toHaveProperty("url");
	});

	it("maps a cluster's list, spaces after the commas too; credentials and TLS for every server", () => {
		expect(
			natsConnectionOptions("nats://tok@n1:4222, nats://n2:4223 ,nats://n3", {
				tlsCaFile: "/ca.pem"
			})
		).toEqual({
			servers: ["n1:4222", "n2:4223", "n3:4222"],
			token: "tok",
			tls: { caFile: "/ca.pem" }
		});
		// A tls:// entry anywhere in the list makes TLS required on every connection.
		expect(natsConnectionOptions("nats://n1:4222,tls://n2:4222").tls).toEqual({});
		expect(() => natsConnectionOptions("nats://n1:4222,not a url")).toThrow(/Not a NATS URL/);
		expect(() => natsConnectionOptions(" , ")).toThrow(/No NATS server/);
	});

	it("adds the stated reconnect settings, shuffles unless told not to, names the connection", () => {
		expect(NATS_RECONNECT).toEqual({
			maxReconnectAttempts: -1,
			reconnectTimeWait: 500,
			reconnectJitter: 250,
			reconnectJitterTLS: 1_000,
			waitOnFirstConnect: false,
			timeout: 2_000,
			pingInterval: 5_000,
			maxPingOut: 3
		});
		expect(Object.isFrozen(NATS_RECONNECT)).toBe(true);
		const opts = natsClientOptions("nats://n1:4222,nats://n2:4222", { token: "t" });
		expect(opts).toEqual({
			servers: ["n1:4222", "n2:4222"],
			token: "t",
			...NATS_RECONNECT,
			noRandomize: false
		});
		expect(
			natsClientOptions("nats://n1:4222", {}, { randomize: false, name: "orders-1" })
		).toMatchObject({ noRandomize: true, name: "orders-1" });
		expect(natsClientOptions("nats://n1:4222", {}, { name: null })).not.toHaveProperty("name");
	});

	it("redacts credentials for log lines", () => {
		expect(redactUrl("nats://user:pw@h:4222,nats://tok@h2:4222")).toBe(
			"nats://***@h:4222,nats://***@h2:4222"
		);
		expect(redactUrl("nats://h:4222")).toBe("nats://h:4222");
		expect(redactUrl("not a url with secret@host")).toBe("***@host");
	});
});

describe("NATS settings in platform/config.ts", () => {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-nats-cfg-"));
	const ca = path.join(dir, "ca.pem");
	const cert = path.join(dir, "cert.pem");
	const key = path.join(dir, "key.pem");
	for (const f of [ca, cert, key]) fs.writeFileSync(f, "PEM\n");
	afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
	const base = { JWT_SECRET: "x".repeat(32), DATA_DIR: dir };

	it("reads NATS_TOKEN and the NATS_TLS_* files; the moleculer config maps them", () => {
		const c = loadConfig({
			...base,
			TRANSPORTER: "nats://127.0.0.1:4222",
			NATS_TOKEN: "tok",
			NATS_TLS_CA: ca,
			NATS_TLS_CERT: cert,
			NATS_TLS_KEY: key
		});
		expect(natsConnectionOptions(c.transporter!, natsSecurity(c))).toEqual({
			servers: ["127.0.0.1:4222"],
			token: "tok",
			tls: { caFile: ca, certFile: cert, keyFile: key }
		});
	});

	it("gives the moleculer transporter every server of a TRANSPORTER list, with NATS_TOKEN, TLS and the reconnect settings", () => {
		const c = loadConfig({
			...base,
			TRANSPORTER: "nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats://127.0.0.1:4224",
			NATS_TOKEN: "tok",
			NATS_TLS_CA: ca,
			NATS_RANDOMIZE: "false"
		});
		expect(
			natsClientOptions(c.transporter!, natsSecurity(c), { randomize: c.natsRandomize })
		).toEqual({
			servers: ["127.0.0.1:4222", "127.0.0.1:4223", "127.0.0.1:4224"],
			token: "tok",
			tls: { caFile: ca },
			...NATS_RECONNECT,
			noRandomize: true
		});
	});

	it.each([
		[
			"an unreadable NATS_TLS_CA",
			{ NATS_TLS_CA: path.join(dir, "missing.pem") },
			/NATS_TLS_CA/
		],
		[
			"a certificate without its key",
			{ NATS_TLS_CERT: cert },
			/NATS_TLS_CERT and NATS_TLS_KEY/
		],
		[
			"NATS_TOKEN with a user:password URL",
			{ TRANSPORTER: "nats://u:p@127.0.0.1:4222", NATS_TOKEN: "t" },
			/TRANSPORTER.*NATS_TOKEN/
		],
		[
			"a bad TRUSTED_PROXIES entry",
			{ TRUSTED_PROXIES: "10.0.0.1,proxy.local" },
			/TRUSTED_PROXIES/
		],
		["a negative LOGIN_BLOCK_MS", { LOGIN_BLOCK_MS: "-1" }, /LOGIN_BLOCK_MS/]
	])("refuses %s", (_name, env, message) => {
		expect(() => loadConfig({ ...base, ...env })).toThrow(ConfigError);
		expect(() => loadConfig({ ...base, ...env })).toThrow(message);
	});

	it("never repeats a URL's password in its error", () => {
		let message = "";
		try {
			loadConfig({ ...base, DATABASE_URL: "postgres://u:Pa55-secret@host:5432 oops" });
		} catch (err) {
			message = (err as Error).message;
		}
		expect(message).toMatch(/DATABASE_URL/);
		expect(message).not.toContain("Pa55-secret");
	});

	it("has login throttling defaults that leave the suites' few logins alone", () => {
		const c = loadConfig(base);
		expect(c).toMatchObject({
			loginMaxFailuresPerAccount: 10,
			loginMaxFailuresPerIp: 100,
			loginBlockMs: 900_000,
			loginFailureWindowMs: 86_400_000,
			trustedProxies: [],
			natsToken: null,
			natsTlsCa: null
		});
	});
});

describe("the client address the gateway passes as meta.clientIp", () => {
	const { clientAddress } = require("../../platform/web/client-address") as {
		clientAddress: (
			req: Pick<IncomingMessage, "socket" | "headers">,
			trusted?: readonly string[]
		) => string;
	};
	const req = (peer: string, xff?: string): Pick<IncomingMessage, "socket" | "headers"> =>
		({
			socket: { remoteAddress: peer },
			headers: xff === undefined ? {} : { "x-forwarded-for": xff }
		}) as unknown as Pick<IncomingMessage, "socket" | "headers">;

	it("is the TCP peer, X-Forwarded-For ignored, without trusted proxies", () => {
		expect(clientAddress(req("::ffff:192.0.2.10", "1.2.3.4"), [])).toBe("192.0.2.10");
		expect(clientAddress(req("2001:db8::1", "1.2.3.4"), [])).toBe("2001:db8::1");
	});

	it("is the right-most untrusted X-Forwarded-For entry behind a trusted proxy", () => {
		const trusted = ["10.0.0.5", "10.0.0.6"];
		expect(clientAddress(req("10.0.0.5", "6.6.6.6, 192.0.2.10, 10.0.0.6"), trusted)).toBe(
			"192.0.2.10"
		);
		// A peer that is not a trusted proxy cannot choose its address.
		expect(clientAddress(req("192.0.2.99", "10.0.0.5, 1.1.1.1"), trusted)).toBe("192.0.2.99");
	});
});

describe("calls pending across a NATS reconnect (platform/nats-reconnect.ts)", () => {
	/** A transit with one pending call per entry of `nodes` (ids r0, r1...); records rejections. */
	const transit = (nodes: (string | null)[]) => {
		const errors: Record<string, Error> = {};
		const pendingRequests = new Map(
			nodes.map((nodeID, i) => [
				`r${i}`,
				{
					nodeID,
					action: { name: "orders.get" },
					reject: (err: Error) => {
						errors[`r${i}`] = err;
					}
				}
			])
		);
		return {
			errors,
			pendingRequests,
			removePendingRequest: (id: string) => pendingRequests.delete(id),
			discoverNode: () => undefined
		};
	};

	it("rejects the chosen calls with Moleculer's retryable RequestRejectedError, and only them", () => {
		const t = transit(["orders-1", "inventory-1", "orders-1"]);
		expect(rejectPending(t, (_id, req) => req.nodeID === "orders-1")).toBe(2);
		expect(Object.keys(t.errors).sort()).toEqual(["r0", "r2"]);
		expect(t.errors.r0).toBeInstanceOf(Errors.RequestRejectedError);
		expect(t.errors.r0).toMatchObject({ code: 503, retryable: true });
		expect(t.errors.r0!.message).toMatch(/orders\.get.*orders-1/);
		expect([...t.pendingRequests.keys()]).toEqual(["r1"]);
		expect(rejectPending(t, (_id, req) => req.nodeID === "payments-1")).toBe(0);
		expect([...t.pendingRequests.keys()]).toEqual(["r1"]);
	});

	it("selects by context id, e.g. the calls sent before the connection broke", () => {
		const t = transit(["a", "b", "c"]);
		const sentAt = new Map([
			["r0", 100],
			["r1", 300]
		]);
		// r2's send time is unknown: taken as sent before.
		expect(rejectPending(t, id => (sentAt.get(id) ?? 0) < 200)).toBe(2);
		expect([...t.pendingRequests.keys()]).toEqual(["r1"]);
		expect(reconnectedSubject("MOL-shop")).toBe("MOL-shop.NATS-RECONNECTED");
	});
});
