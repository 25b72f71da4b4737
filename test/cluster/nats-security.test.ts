/**
 * NATS with authentication and TLS (issue #6, part 3), against real `nats-server` processes:
 *
 * - A server that requires a token (`--auth`, JetStream on): the shop's nodes, given the token in
 *   `TRANSPORTER` (`nats://<token>@host:port`), join and an order completes end to end (saga over
 *   the transporter, events over JetStream, notification stored); a broker or a `nats` client
 *   without the token, or with a wrong one, is refused and never sees a service.
 * - Every node runs at `LOGLEVEL=debug`; none of the secrets (the NATS token, JWT_SECRET,
 *   ADMIN_PASSWORD, the Postgres password of DATABASE_URL, a customer's password, a bearer token)
 *   appears in any node's output.
 * - A server that requires TLS (a CA and a server certificate made here with `openssl`) and a
 *   token: brokers and JetStream connect with `NATS_TLS_CA`'s mapping, a `moleculer-runner` node
 *   configured by `NATS_TLS_CA` serves calls and publishes its outbox to JetStream; a client that
 *   does not trust the CA is refused.
 */
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { connect } from "nats";
import { startCluster as startNodes, type Cluster } from "../../tools/cluster";
import { EVENTS_STREAM, connectJetStream } from "../../platform/events/jetstream";
import { natsConnectionOptions, type NatsSecurity } from "../../platform/nats-options";
import { api } from "../support/shop-process";
import {
	CLUSTER_ADMIN,
	CLUSTER_JWT_SECRET,
	startCluster,
	until,
	withOutputOnFailure,
	type TestCluster
} from "../support/cluster";
import { startNats, type NatsServer } from "../support/nats";
import { freePort } from "../support/ports";

const delay = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms));

/** The same URL without credentials. */
function anonymous(url: string): string {
	const u = new URL(url);
	return `nats://${u.host}`;
}

/** A broker of the shop's namespace on `url`; `start()` is raced against `ms`. */
async function tryBroker(
	nodeID: string,
	url: string,
	security: NatsSecurity = {},
	ms = 4_000
): Promise<{ broker: ServiceBroker; started: boolean }> {
	const broker = new ServiceBroker({
		namespace: "shop",
		nodeID,
		transporter: {
			type: "NATS",
			options: { ...natsConnectionOptions(url, security), maxReconnectAttempts: 3 }
		},
		// One attempt: a refused broker must not keep retrying after the test.
		transit: { disableReconnect: true },
		logger: false,
		skipProcessEventRegistration: true,
		metrics: { enabled: false },
		tracing: { enabled: false }
	});
	const started = await Promise.race([
		broker.start().then(
			() => true,
			() => false
		),
		delay(ms).then(() => false)
	]);
	return { broker, started };
}

describe("NATS that requires a token", () => {
	const token = `tok-${crypto.randomBytes(16).toString("hex")}`;
	let nats: NatsServer;
	let cluster: TestCluster;
	let customerToken = "";
	const PASSWORD = "nats-security customer pw 3c9d";

	beforeAll(async () => {
		nats = await startNats({ token });
		expect(nats.url).toContain(`${token}@`);
		cluster = await startCluster({ nats, env: { LOGLEVEL: "debug" } });
	}, 180_000);
	afterAll(async () => {
		await cluster?.stop();
		await nats?.stop();
	}, 60_000);

	it("nodes with the token join, and an order completes end to end", async () => {
		await withOutputOnFailure(cluster, async () => {
			const base = cluster.url!;
			const reg = await api(base, "POST", "/api/users/register", {
				body: { email: "nats-auth@example.com", password: PASSWORD, name: "Nats" }
			});
			expect(reg.status).toBe(201);
			const login = await api(base, "POST", "/api/users/login", {
				body: { email: "nats-auth@example.com", password: PASSWORD }
			});
			expect(login.status).toBe(200);
			customerToken = login.body.token;
			const products = await api(base, "GET", "/api/products?pageSize=5");
			const product = products.body.rows.find((p: { active: boolean }) => p.active);
			expect(product).toBeDefined();
			const order = await api(base, "POST", "/api/orders", {
				token: customerToken,
				headers: { "Idempotency-Key": `nats-auth-${crypto.randomUUID()}` },
				body: {
					items: [{ productId: product.id, quantity: 1 }],
					paymentMethod: "tok_visa"
				}
			});
			expect(order.status).toBe(202);
			const done = await until(
				() => api(base, "GET", `/api/orders/${order.body.id}`, { token: customerToken }),
				r => r.body.status === "CONFIRMED" || r.body.status === "CANCELLED",
				30_000
			);
			expect(done.body.status).toBe("CONFIRMED");
			// The confirmation travelled over JetStream (its connection authenticated too).
			const notes = await until(
				() =>
					api(base, "GET", `/api/notifications?orderId=${order.body.id}`, {
						token: customerToken
					}),
				r => r.status === 200 && r.body.total >= 1,
				30_000
			);
			expect(notes.body.total).toBeGreaterThanOrEqual(1);
		});
	}, 90_000);

	it("refuses a broker and a client without the token or with a wrong one; they see no service", async () => {
		const anon = anonymous(nats.url);
		for (const [name, url] of [
			["no token", anon],
			["a wrong token", anon.replace("nats://", "nats://not-the-token@")]
		] as const) {
			await expect(
				connect({ ...natsConnectionOptions(url), timeout: 2_000 })
			).rejects.toThrow(/authorization/i);
			const intruderID = `intruder-${crypto.randomBytes(3).toString("hex")}`;
			const { broker, started } = await tryBroker(intruderID, url);
			try {
				expect([name, started]).toEqual([name, false]);
				expect(
					broker.registry.getServiceList({ onlyAvailable: true }).map(s => s.name)
				).not.toContain("orders");
				await expect(
					broker.call("orders.list", {}, { timeout: 500, retries: 0 })
				).rejects.toThrow();
				// Nor does the cluster see it.
				expect(
					(
						cluster.broker.registry as unknown as {
							nodes: { get(id: string): unknown };
						}
					).nodes.get(intruderID)
				).toBeUndefined();
			} finally {
				await broker.stop().catch(() => undefined);
			}
		}
		// The control case: the same broker with the token joins and calls a service.
		const { broker, started } = await tryBroker(`guest-${process.pid}`, nats.url, {}, 15_000);
		try {
			expect(started).toBe(true);
			await broker.waitForServices(["products"], 10_000);
			await expect(broker.call("products.list", { pageSize: 1 })).resolves.toHaveProperty(
				"rows"
			);
		} finally {
			await broker.stop();
		}
	}, 60_000);

	it("logs none of the secrets in any node's output at LOGLEVEL=debug", async () => {
		const base = cluster.url!;
		const admin = await api(base, "POST", "/api/users/login", { body: CLUSTER_ADMIN });
		expect(admin.status).toBe(200);
		expect((await api(base, "GET", "/api/users/me", { token: admin.body.token })).status).toBe(
			200
		);
		expect((await api(base, "GET", "/api/orders", { token: customerToken })).status).toBe(200);
		await api(base, "POST", "/api/users/login", {
			body: { email: "nats-auth@example.com", password: "not the password at all" }
		});
		const databasePassword = decodeURIComponent(new URL(process.env.DATABASE_URL!).password);
		expect(databasePassword.length).toBeGreaterThan(8);
		await delay(500);
		const out = cluster.outputs();
		expect(out).toMatch(/DEBUG/);
		const secrets: Record<string, string> = {
			"NATS token": token,
			JWT_SECRET: CLUSTER_JWT_SECRET,
			ADMIN_PASSWORD: CLUSTER_ADMIN.password,
			"DATABASE_URL password": databasePassword,
			"a customer's password": PASSWORD,
			"a wrong password": "not the password at all",
			"the customer's bearer token": customerToken,
			"the admin's bearer token": admin.body.token
		};
		const leaked = Object.entries(secrets)
			.filter(([, v]) => out.includes(v))
			.map(([k]) => k);
		expect(leaked).toEqual([]);
	}, 30_000);
});

describe("NATS that requires TLS (and a token)", () => {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-nats-tls-"));
	const file = (n: string): string => path.join(dir, n);
	const token = `tls-${crypto.randomBytes(12).toString("hex")}`;
	let nats: NatsServer;
	let url: string;
	let nodes: Cluster | undefined;

	beforeAll(async () => {
		// A CA and a server certificate for 127.0.0.1, signed by it (valid one day).
		const openssl = (...args: string[]): void => {
			execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
		};
		openssl(
			"req",
			"-x509",
			"-newkey",
			"rsa:2048",
			"-nodes",
			"-keyout",
			"ca.key",
			"-out",
			"ca.pem",
			"-days",
			"1",
			"-subj",
			"/CN=shop-test-ca"
		);
		openssl(
			"req",
			"-newkey",
			"rsa:2048",
			"-nodes",
			"-keyout",
			"server.key",
			"-out",
			"server.csr",
			"-subj",
			"/CN=127.0.0.1"
		);
		fs.writeFileSync(file("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
		openssl(
			"x509",
			"-req",
			"-in",
			"server.csr",
			"-CA",
			"ca.pem",
			"-CAkey",
			"ca.key",
			"-CAcreateserial",
			"-out",
			"server.pem",
			"-days",
			"1",
			"-extfile",
			"san.ext"
		);
		nats = await startNats({
			token,
			tls: { certFile: file("server.pem"), keyFile: file("server.key") }
		});
		url = nats.url;
	}, 60_000);
	afterAll(async () => {
		await nodes?.stop();
		await nats?.stop();
		fs.rmSync(dir, { recursive: true, force: true });
	}, 60_000);

	it("brokers and JetStream connect with the CA of NATS_TLS_CA; a client that does not trust it is refused", async () => {
		const security = { tlsCaFile: file("ca.pem") };
		expect(natsConnectionOptions(url, security).tls).toEqual({ caFile: file("ca.pem") });
		const a = await tryBroker("tls-a", url, security, 10_000);
		const b = await tryBroker("tls-b", url, security, 10_000);
		try {
			expect([a.started, b.started]).toEqual([true, true]);
			a.broker.createService({
				name: "tlsecho",
				actions: { echo: (ctx: { params: { v: string } }) => `over tls: ${ctx.params.v}` }
			} as never);
			await b.broker.waitForServices(["tlsecho"], 10_000);
			await expect(b.broker.call("tlsecho.echo", { v: "hi" })).resolves.toBe("over tls: hi");
		} finally {
			await a.broker.stop();
			await b.broker.stop();
		}
		const bus = await connectJetStream(url, "tls-test", security);
		try {
			await expect(bus.jsm.streams.info(EVENTS_STREAM)).resolves.toBeDefined();
		} finally {
			await bus.close();
		}
		// Without the CA the server's certificate is not trusted; with it, no token: refused too.
		await expect(connect({ ...natsConnectionOptions(url), timeout: 3_000 })).rejects.toThrow();
		await expect(
			connect({ ...natsConnectionOptions(anonymous(url), security), timeout: 3_000 })
		).rejects.toThrow(/authorization/i);
	}, 60_000);

	it("a moleculer-runner node configured by NATS_TLS_CA serves calls and publishes its outbox to JetStream", async () => {
		const prefix = `tls${crypto.randomBytes(3).toString("hex")}_`;
		const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-tls-node-"));
		try {
			nodes = await startNodes({
				transporter: url,
				natsSecurity: { tlsCaFile: file("ca.pem") },
				databaseUrl: process.env.DATABASE_URL!,
				services: ["users", "products"],
				port: await freePort(),
				env: {
					NATS_TLS_CA: file("ca.pem"),
					DATABASE_PREFIX: prefix,
					DATA_DIR: dataDir,
					METRICS_PORT: "0",
					JWT_SECRET: CLUSTER_JWT_SECRET,
					ADMIN_PASSWORD: CLUSTER_ADMIN.password,
					OUTBOX_POLL_MS: "100"
				},
				readyTimeoutMs: 60_000
			});
			const reg = await nodes.broker.call<{ user: { email: string } }, object>(
				"users.register",
				{
					email: "tls@example.com",
					password: "tls customer password 77",
					name: "Tls"
				}
			);
			expect(reg.user.email).toBe("tls@example.com");
			const sku = `TLS-${crypto.randomBytes(3).toString("hex")}`;
			await nodes.broker.call(
				"products.create",
				{ sku, name: "Over TLS", price: 100 },
				{
					meta: {
						user: { id: crypto.randomUUID(), email: "a@b.c", name: "A", role: "admin" }
					}
				}
			);
			const bus = await connectJetStream(url, "tls-check", { tlsCaFile: file("ca.pem") });
			try {
				const info = await until(
					() => bus.jsm.streams.info(EVENTS_STREAM),
					i => i.state.messages > 0,
					20_000
				);
				expect(info.state.messages).toBeGreaterThan(0);
				const msg = await bus.jsm.streams.getMessage(EVENTS_STREAM, {
					last_by_subj: "shop.events.product.created"
				});
				expect(new TextDecoder().decode(msg.data)).toContain(sku);
			} finally {
				await bus.close();
			}
		} catch (err) {
			if (nodes) console.log(nodes.outputs());
			throw err;
		} finally {
			await nodes?.stop();
			nodes = undefined;
			fs.rmSync(dataDir, { recursive: true, force: true });
		}
	}, 120_000);
});
