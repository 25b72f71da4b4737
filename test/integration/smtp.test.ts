/**
 * Notifications send real e-mail: the notifications service (real Postgres) with `SMTP_URL`
 * pointing at a real SMTP server started here (the `smtp-server` package as the sink, with
 * AUTH), through a TCP proxy this file controls (to cut a connection mid-message). Asserts what
 * the sink receives (envelope, From, To, Subject, Message-ID, body), that a message arrives only
 * once its notification is committed and only once per notification, that a transient refusal
 * (451) is retried with backoff and then delivered once, that a server that keeps refusing (550)
 * gets `SMTP_MAX_ATTEMPTS` sends and then a dead letter an admin can replay, and that an outcome
 * the client cannot know (the connection lost mid-message, or a claim whose node stopped
 * mid-send) is dead-lettered at once and never sent again by itself (at most once).
 */
import crypto from "node:crypto";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { SMTPServer, type SMTPServerSession } from "smtp-server";
import type { ServiceBroker } from "moleculer";
import { deliverLocally, type DomainEvent } from "../../mixins/events.mixin";
import { fastQuery, QueryTypes } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";
import type { Order } from "../../services/orders/orders.model";
import { admin, customer, startTestBroker, waitFor, type TestBroker } from "../support/broker";
import {
	EMAIL_CONSUMER,
	EMAIL_FAILED_EVENT,
	emailRetryDelayMs
} from "../../services/notifications/email-sender";
import { ConfigError, loadConfig } from "../../platform/config";

const FROM = "Shop Test <orders@shop.test>";
const MAX_ATTEMPTS = 3;
const RETRY_DELAY_MS = 200;

/** A message as the sink received it. */
interface Received {
	at: number;
	session: string;
	user: string | undefined;
	mailFrom: string;
	rcptTo: string[];
	headers: Record<string, string>;
	body: string;
	/** Whether its notification row was visible (committed) in the database when it arrived. */
	committed: boolean;
}

/** Splits a raw RFC 5322 message into unfolded headers (lower-case names) and its text body. */
function parseMessage(raw: string): { headers: Record<string, string>; body: string } {
	const end = raw.indexOf("\r\n\r\n");
	const head = raw.slice(0, end).replace(/\r\n[ \t]+/g, " ");
	const headers: Record<string, string> = {};
	for (const line of head.split("\r\n")) {
		const i = line.indexOf(":");
		headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
	}
	let body = raw.slice(end + 4);
	if (/quoted-printable/i.test(headers["content-transfer-encoding"] ?? ""))
		body = Buffer.from(
			body
				.replace(/=\r\n/g, "")
				.replace(/=([0-9A-F]{2})/gi, (_m, h: string) =>
					String.fromCharCode(parseInt(h, 16))
				),
			"latin1"
		).toString("utf8");
	return { headers, body };
}

/** An SMTP reply error for smtp-server's callbacks. */
function reply(code: number, text: string): Error {
	return Object.assign(new Error(text), { responseCode: code });
}

/**
 * A TCP proxy in front of the sink. With `cutAfterData`, a connection that sends the end of a
 * message (`\r\n.\r\n`) is destroyed before that end reaches the server: the client has handed
 * the message over and never hears back.
 */
async function startProxy(target: number): Promise<{
	port: number;
	cutAfterData: Set<string>;
	cuts: number;
	close(): Promise<void>;
}> {
	const state = { cutAfterData: new Set<string>(), cuts: 0 };
	const sockets = new Set<net.Socket>();
	const server = net.createServer(client => {
		const upstream = net.connect(target, "127.0.0.1");
		sockets.add(client).add(upstream);
		let tail = "";
		let cut = false;
		client.on("data", (chunk: Buffer) => {
			const text = tail + chunk.toString("latin1");
			tail = text.slice(-4);
			// The recipient of this transaction decides (RCPT TO:<...> went through earlier).
			if (
				[...state.cutAfterData].some(r => (client as { rcpt?: string }).rcpt === r) &&
				text.includes("\r\n.\r\n")
			) {
				cut = true;
				state.cuts++;
				client.destroy();
				upstream.destroy();
				return;
			}
			const rcpt = /RCPT TO:<([^>]+)>/i.exec(text)?.[1];
			if (rcpt) (client as { rcpt?: string }).rcpt = rcpt;
			upstream.write(chunk);
		});
		upstream.on("data", (chunk: Buffer) => {
			if (!cut) client.write(chunk);
		});
		const end = (): void => {
			client.destroy();
			upstream.destroy();
			sockets.delete(client);
			sockets.delete(upstream);
		};
		client.on("close", end).on("error", end);
		upstream.on("close", end).on("error", end);
	});
	await new Promise<void>(r => server.listen(0, "127.0.0.1", r));
	return {
		port: (server.address() as AddressInfo).port,
		cutAfterData: state.cutAfterData,
		get cuts() {
			return state.cuts;
		},
		close: () =>
			new Promise<void>(r => {
				for (const s of sockets) s.destroy();
				server.close(() => r());
			})
	};
}

/** An `order.confirmed` event for a fresh customer. */
function confirmedEvent(): { event: DomainEvent; email: string; orderId: string } {
	const user = customer();
	const now = new Date().toISOString();
	const order: Order & { customerEmail: string } = {
		id: crypto.randomUUID(),
		userId: user.id,
		status: "CONFIRMED",
		items: [
			{
				productId: crypto.randomUUID(),
				sku: "KB-MECH-87",
				name: "Tenkeyless Mechanical Keyboard",
				quantity: 2,
				unitPrice: 8999,
				lineTotal: 17998
			}
		],
		total: 17998,
		currency: "USD",
		paymentMethod: "tok_visa",
		cancellationReason: null,
		cancelRequested: false,
		createdAt: now,
		updatedAt: now,
		customerEmail: user.email
	};
	return {
		email: user.email,
		orderId: order.id,
		event: {
			id: crypto.randomUUID(),
			name: "order.confirmed",
			source: "orders",
			aggregateId: order.id,
			occurredAt: now,
			requestId: null,
			data: { order }
		}
	};
}

interface EmailRow {
	id: string;
	email_status: string | null;
	email_attempts: number;
	email_message_id: string | null;
	email_sent_at: Date | null;
	email_error: string | null;
}

describe("notifications send e-mail over SMTP (a real smtp-server sink)", () => {
	let sink: SMTPServer;
	let proxy: Awaited<ReturnType<typeof startProxy>>;
	let t: TestBroker;
	let broker: ServiceBroker;
	let db: ShopDatabase;
	const received: Received[] = [];
	/** RCPT TO attempts and DATA attempts, by recipient. */
	const rcptAttempts = new Map<string, number[]>();
	const dataAttempts = new Map<string, number>();
	/** Recipients refused at RCPT TO with 451 this many more times. */
	const refuseRcpt = new Map<string, number>();
	/** Recipients whose messages are refused after DATA with 550. */
	const refuseData = new Set<string>();

	const row = async (orderId: string): Promise<EmailRow | undefined> =>
		(
			(await fastQuery(
				db,
				`SELECT id, email_status, email_attempts, email_message_id, email_sent_at, email_error
				 FROM notifications WHERE order_id = $1`,
				{ bind: [orderId], type: QueryTypes.SELECT }
			)) as EmailRow[]
		)[0];
	const messagesTo = (email: string): Received[] =>
		received.filter(m => m.rcptTo.includes(email));

	beforeAll(async () => {
		sink = new SMTPServer({
			logger: false,
			disabledCommands: ["STARTTLS"],
			allowInsecureAuth: true,
			onAuth(auth, _session, cb) {
				if (auth.username === "shop" && auth.password === "s3cret")
					return cb(null, { user: "shop" });
				cb(reply(535, "Authentication failed"));
			},
			onRcptTo(address, _session, cb) {
				const to = address.address;
				rcptAttempts.set(to, [...(rcptAttempts.get(to) ?? []), Date.now()]);
				const left = refuseRcpt.get(to) ?? 0;
				if (left > 0) {
					refuseRcpt.set(to, left - 1);
					return cb(reply(451, "4.7.1 Greylisted, try again later"));
				}
				cb();
			},
			onData(stream, session: SMTPServerSession, cb) {
				const chunks: Buffer[] = [];
				stream.on("data", (c: Buffer) => chunks.push(c));
				stream.on("end", () => {
					const rcptTo = session.envelope.rcptTo.map(a => a.address);
					for (const to of rcptTo) dataAttempts.set(to, (dataAttempts.get(to) ?? 0) + 1);
					if (rcptTo.some(to => refuseData.has(to)))
						return cb(reply(550, "5.1.1 Mailbox unavailable"));
					const { headers, body } = parseMessage(Buffer.concat(chunks).toString("utf8"));
					const mailFrom = session.envelope.mailFrom;
					const id = /^<([^@>]+)@/.exec(headers["message-id"] ?? "")?.[1] ?? "";
					fastQuery(db, "SELECT 1 FROM notifications WHERE id::text = $1", {
						bind: [id],
						type: QueryTypes.SELECT
					})
						.then(found => {
							received.push({
								at: Date.now(),
								session: session.id,
								user: session.user as string | undefined,
								mailFrom: mailFrom ? mailFrom.address : "",
								rcptTo,
								headers,
								body,
								committed: found.length === 1
							});
							cb();
						})
						.catch((err: Error) => cb(err));
				});
			}
		});
		await new Promise<void>(r => sink.listen(0, "127.0.0.1", () => r()));
		const sinkPort = (sink.server.address() as AddressInfo).port;
		proxy = await startProxy(sinkPort);
		t = await startTestBroker(["notifications"], {
			env: {
				SMTP_URL: `smtp://shop:s3cret@127.0.0.1:${proxy.port}`,
				SMTP_FROM: FROM,
				SMTP_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
				SMTP_RETRY_DELAY_MS: String(RETRY_DELAY_MS)
			}
		});
		broker = t.broker;
		db = (broker.getLocalService("notifications") as unknown as { db: ShopDatabase }).db;
	});
	afterAll(async () => {
		await t?.stop();
		for (const k of ["SMTP_URL", "SMTP_FROM", "SMTP_MAX_ATTEMPTS", "SMTP_RETRY_DELAY_MS"])
			delete process.env[k];
		await proxy?.close();
		await new Promise<void>(r => (sink ? sink.close(() => r()) : r()));
	});

	it("sends one e-mail per notification once it is committed: envelope, From, To, Subject, Message-ID, body", async () => {
		const { event, email, orderId } = confirmedEvent();
		// The same event three times (two at once): one notification, one e-mail.
		await Promise.all([deliverLocally(broker, event), deliverLocally(broker, event)]);
		await deliverLocally(broker, event);
		const sent = await waitFor(
			() => row(orderId),
			r => r?.email_status === "SENT"
		);
		expect(sent).toMatchObject({
			email_status: "SENT",
			email_attempts: 1,
			email_message_id: `<${sent!.id}@shop.test>`,
			email_sent_at: expect.any(Date),
			email_error: null
		});
		// Polls after the send find nothing more to do.
		await new Promise(r => setTimeout(r, 3 * RETRY_DELAY_MS));
		const mails = messagesTo(email);
		expect(mails).toHaveLength(1);
		const m = mails[0]!;
		expect(m.committed).toBe(true);
		expect(m.user).toBe("shop");
		expect(m.mailFrom).toBe("orders@shop.test");
		expect(m.rcptTo).toEqual([email]);
		expect(m.headers.from).toMatch(/^"?Shop Test"? <orders@shop\.test>$/);
		expect(m.headers.to).toBe(email);
		expect(m.headers.subject).toBe(`Order ${orderId.slice(0, 8)} confirmed`);
		expect(m.headers["message-id"]).toBe(`<${sent!.id}@shop.test>`);
		expect(m.headers["content-type"]).toMatch(/^text\/plain/);
		expect(m.body).toContain("Thank you for your order.");
		expect(m.body).toContain("2 x Tenkeyless Mechanical Keyboard (KB-MECH-87) 179.98 USD");
		expect(m.body).toContain("Total: 179.98 USD");
	});

	it("retries a transient refusal (451) with backoff, then delivers it once", async () => {
		const { event, email, orderId } = confirmedEvent();
		refuseRcpt.set(email, 2);
		await deliverLocally(broker, event);
		const sent = await waitFor(
			() => row(orderId),
			r => r?.email_status === "SENT"
		);
		expect(sent!.email_attempts).toBe(3);
		const tries = rcptAttempts.get(email)!;
		expect(tries).toHaveLength(3);
		// Backoff: RETRY_DELAY_MS, then twice that.
		expect(tries[1]! - tries[0]!).toBeGreaterThanOrEqual(RETRY_DELAY_MS - 20);
		expect(tries[2]! - tries[1]!).toBeGreaterThanOrEqual(2 * RETRY_DELAY_MS - 20);
		await new Promise(r => setTimeout(r, 3 * RETRY_DELAY_MS));
		expect(messagesTo(email)).toHaveLength(1);
		expect(messagesTo(email)[0]!.headers["message-id"]).toBe(`<${sent!.id}@shop.test>`);
	});

	it("dead-letters an e-mail the server keeps refusing (550) after SMTP_MAX_ATTEMPTS sends; an admin's replay sends it once", async () => {
		const { event, email, orderId } = confirmedEvent();
		refuseData.add(email);
		await deliverLocally(broker, event);
		const failed = await waitFor(
			() => row(orderId),
			r => r?.email_status === "FAILED"
		);
		expect(failed!.email_attempts).toBe(MAX_ATTEMPTS);
		expect(failed!.email_error).toMatch(/550 5\.1\.1 Mailbox unavailable/);
		expect(dataAttempts.get(email)).toBe(MAX_ATTEMPTS);
		expect(messagesTo(email)).toHaveLength(0);
		// No further attempt by itself.
		await new Promise(r => setTimeout(r, 4 * RETRY_DELAY_MS));
		expect(dataAttempts.get(email)).toBe(MAX_ATTEMPTS);

		const letters: {
			rows: {
				id: string;
				consumer: string;
				eventId: string;
				eventName: string;
				error: string;
				deliveries: number;
				event: DomainEvent;
			}[];
		} = await broker.call("notifications.listDeadLetters", {}, { meta: { user: admin } });
		const letter = letters.rows.find(l => l.event.aggregateId === failed!.id)!;
		expect(letter).toMatchObject({
			consumer: EMAIL_CONSUMER,
			eventId: `${failed!.id}:${MAX_ATTEMPTS}`,
			eventName: EMAIL_FAILED_EVENT,
			deliveries: MAX_ATTEMPTS,
			error: expect.stringMatching(/refused 3 times, last: .*550/)
		});
		expect(letter.event.data).toMatchObject({ orderId, to: email, kind: "ORDER_CONFIRMED" });

		// A customer may not replay it (the mixin's check), and nothing is queued.
		await expect(
			broker.call(
				"notifications.replayDeadLetter",
				{ id: letter.id },
				{ meta: { user: customer() } }
			)
		).rejects.toMatchObject({ type: "AUTH_FORBIDDEN" });
		expect((await row(orderId))!.email_status).toBe("FAILED");

		// The cause fixed, an admin replays it: queued again, sent once, same Message-ID.
		refuseData.delete(email);
		const replayed: { replayedAt: string | null } = await broker.call(
			"notifications.replayDeadLetter",
			{ id: letter.id },
			{ meta: { user: admin } }
		);
		expect(replayed.replayedAt).toEqual(expect.any(String));
		const sent = await waitFor(
			() => row(orderId),
			r => r?.email_status === "SENT"
		);
		expect(sent!.email_attempts).toBe(1);
		// A second replay is a no-op.
		await broker.call(
			"notifications.replayDeadLetter",
			{ id: letter.id },
			{ meta: { user: admin } }
		);
		await new Promise(r => setTimeout(r, 3 * RETRY_DELAY_MS));
		expect(messagesTo(email)).toHaveLength(1);
		expect(messagesTo(email)[0]!.headers["message-id"]).toBe(`<${failed!.id}@shop.test>`);
		expect(dataAttempts.get(email)).toBe(MAX_ATTEMPTS + 1);
	});

	it("dead-letters at once, unretried, an e-mail whose connection was lost after it was handed over (outcome unknown)", async () => {
		const { event, email, orderId } = confirmedEvent();
		proxy.cutAfterData.add(email);
		const cutsBefore = proxy.cuts;
		await deliverLocally(broker, event);
		const failed = await waitFor(
			() => row(orderId),
			r => r?.email_status === "FAILED"
		);
		expect(proxy.cuts - cutsBefore).toBe(1);
		expect(failed!.email_attempts).toBe(1);
		expect(failed!.email_error).toMatch(/^outcome unknown: .*not sent again$/);
		await new Promise(r => setTimeout(r, 4 * RETRY_DELAY_MS));
		expect(rcptAttempts.get(email)).toHaveLength(1);
		expect((await row(orderId))!.email_status).toBe("FAILED");
		const letters: { rows: { eventId: string; error: string }[] } = await broker.call(
			"notifications.listDeadLetters",
			{},
			{ meta: { user: admin } }
		);
		expect(letters.rows.find(l => l.eventId === `${failed!.id}:1`)?.error).toMatch(
			/outcome unknown/
		);
		proxy.cutAfterData.delete(email);
	});

	it("dead-letters a claim still SENDING past its lease (its node stopped mid-send) without sending it", async () => {
		const id = crypto.randomUUID();
		const orderId = crypto.randomUUID();
		const email = `stale-${id.slice(0, 8)}@example.com`;
		await fastQuery(
			db,
			`INSERT INTO notifications (id, user_id, order_id, kind, recipient, subject, body,
				email_status, email_attempts, email_claimed_at)
			 VALUES ($1, $2, $3, 'ORDER_CONFIRMED', $4, 'Order confirmed', 'Thanks',
				'SENDING', 1, now() - interval '1 hour')`,
			{ bind: [id, crypto.randomUUID(), orderId, email] }
		);
		const failed = await waitFor(
			() => row(orderId),
			r => r?.email_status === "FAILED"
		);
		expect(failed!.email_error).toMatch(/^outcome unknown: still SENDING .*stopped mid-send/);
		expect(failed!.email_attempts).toBe(1);
		expect(rcptAttempts.get(email)).toBeUndefined();
		const letters: { rows: { eventId: string }[] } = await broker.call(
			"notifications.listDeadLetters",
			{},
			{ meta: { user: admin } }
		);
		expect(letters.rows.map(l => l.eventId)).toContain(`${id}:1`);
	});
});

describe("SMTP settings", () => {
	const base = { JWT_SECRET: "s".repeat(32) };

	it("default to no e-mail (the record alone), 8 attempts, 60 s doubling to at most 1 h", () => {
		const c = loadConfig(base);
		expect(c.smtpUrl).toBeNull();
		expect(c.smtpFrom).toBe('"Moleculer Shop" <shop@example.com>');
		expect(c.smtpMaxAttempts).toBe(8);
		expect(c.smtpRetryDelayMs).toBe(60_000);
		expect([1, 2, 3, 7, 8].map(n => emailRetryDelayMs(60_000, n))).toEqual([
			60_000, 120_000, 240_000, 3600_000, 3600_000
		]);
	});

	it("read SMTP_URL (smtp: or smtps:), SMTP_FROM, SMTP_MAX_ATTEMPTS, SMTP_RETRY_DELAY_MS", () => {
		const c = loadConfig({
			...base,
			SMTP_URL: "smtps://user:pass@mail.example.com:465",
			SMTP_FROM: "orders@shop.example",
			SMTP_MAX_ATTEMPTS: "3",
			SMTP_RETRY_DELAY_MS: "1000"
		});
		expect(c).toMatchObject({
			smtpUrl: "smtps://user:pass@mail.example.com:465",
			smtpFrom: "orders@shop.example",
			smtpMaxAttempts: 3,
			smtpRetryDelayMs: 1000
		});
	});

	it.each([
		["SMTP_URL", "http://mail.example.com"],
		["SMTP_URL", "not a url"],
		["SMTP_FROM", "no address"],
		["SMTP_FROM", "Shop <not-an-address>"],
		["SMTP_MAX_ATTEMPTS", "0"],
		["SMTP_RETRY_DELAY_MS", "5"]
	])("refuse %s=%s", (name, value) => {
		expect(() => loadConfig({ ...base, [name]: value })).toThrow(ConfigError);
	});
});
