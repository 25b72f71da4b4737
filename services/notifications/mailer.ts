/**
 * The notifications service's SMTP client: nodemailer's SMTP transport on `SMTP_URL`, one
 * connection per message, and what became of each message, told apart by whether it is safe to
 * send it again:
 * - `sent`: the server answered 2xx to the end of the message (it took responsibility for it);
 * - `refused`: the server answered a refusal (a 4xx or 5xx reply, `responseCode`) or the
 *   connection failed before the message transaction began (no server, greeting, TLS, login):
 *   the server does not hold the message, sending it again cannot make a second copy;
 * - `unknown`: the connection broke (reset, closed, timed out) after the message transaction
 *   began (`MAIL FROM` onward) without a reply: the server may have accepted the message, and a
 *   retry could deliver it twice (RFC 5321 §6.1 says a client must then assume it was not
 *   delivered and retry: at-least-once; the shop chooses at-most-once, see email-sender.ts).
 *   Conservative: a break between `MAIL FROM` and the message's end counts too, since nodemailer
 *   tells when it began the transaction (its `send` log entry, with the Message-ID), not when it
 *   finished writing the body.
 *
 * Every message has a Message-ID of its own notification (`<notification id@From's domain>`),
 * so the same notification, sent again by an operator's replay, keeps its Message-ID (RFC 5322
 * §3.6.4: one message, one id).
 */
import { createTransport } from "nodemailer";
import { redactUrl } from "../../platform/nats-options";

/** Longest wait for the TCP connection, in ms. */
const CONNECTION_TIMEOUT_MS = 10_000;
/** Longest wait for the server's greeting once connected, in ms. */
const GREETING_TIMEOUT_MS = 10_000;
/** Longest silence of the server during a send, in ms. */
export const SOCKET_TIMEOUT_MS = 60_000;

/** One e-mail of one notification. */
export interface OutgoingEmail {
	readonly notificationId: string;
	readonly to: string;
	readonly subject: string;
	/** Plain text. */
	readonly text: string;
}

/** What became of one send (see the module comment). */
export type SendOutcome =
	| { readonly status: "sent"; readonly messageId: string; readonly response: string }
	| { readonly status: "refused"; readonly error: string; readonly responseCode: number | null }
	| { readonly status: "unknown"; readonly error: string };

/** Where the mailer logs. */
export interface MailerLogger {
	debug(...args: unknown[]): void;
}

/** An SMTP error as nodemailer hands it over. */
interface SmtpError extends Error {
	code?: string;
	responseCode?: number;
	command?: string;
}

/** Sends notifications' e-mails over SMTP (see the module comment). */
export class SmtpMailer {
	/** The From header. */
	readonly from: string;
	/** The domain of the Message-IDs: the From address's. */
	readonly domain: string;
	/** Message-IDs whose message transaction has begun (nodemailer's `send` log entry). */
	private readonly begun = new Set<string>();
	private readonly transport: ReturnType<typeof createTransport>;

	/**
	 * @param url - `smtp://[user:pass@]host[:port]` or `smtps://...` (config `SMTP_URL`)
	 * @param from - the From header (config `SMTP_FROM`): `Name <address>` or an address
	 */
	constructor(url: string, from: string, logger: MailerLogger) {
		this.from = from;
		const address = /<([^<>]+)>\s*$/.exec(from)?.[1] ?? from;
		this.domain = address.slice(address.lastIndexOf("@") + 1).trim();
		const log =
			(level: string) =>
			(entry: { tnx?: string; messageId?: string } | undefined, ...msg: unknown[]): void => {
				if (entry?.tnx === "send" && entry.messageId) this.begun.add(entry.messageId);
				logger.debug(`smtp ${level}:`, ...msg);
			};
		this.transport = createTransport({
			url,
			connectionTimeout: CONNECTION_TIMEOUT_MS,
			greetingTimeout: GREETING_TIMEOUT_MS,
			socketTimeout: SOCKET_TIMEOUT_MS,
			logger: {
				trace: log("trace"),
				debug: log("debug"),
				info: log("info"),
				warn: log("warn"),
				error: log("error"),
				fatal: log("fatal")
			}
		});
		logger.debug(`E-mail over SMTP to ${redactUrl(url)} as ${from}`);
	}

	/** The Message-ID of a notification's e-mail: `<notification id@domain>`. */
	messageId(notificationId: string): string {
		return `<${notificationId}@${this.domain}>`;
	}

	/**
	 * Sends one e-mail; never throws.
	 * @returns `sent` with the Message-ID and the server's reply, `refused` (safe to send again)
	 *   with the reply code when the server gave one, or `unknown` (maybe delivered)
	 */
	async send(m: OutgoingEmail): Promise<SendOutcome> {
		const messageId = this.messageId(m.notificationId);
		this.begun.delete(messageId);
		try {
			const info = (await this.transport.sendMail({
				from: this.from,
				to: m.to,
				subject: m.subject,
				text: m.text,
				messageId
			})) as { response?: string };
			return { status: "sent", messageId, response: String(info.response ?? "") };
		} catch (e) {
			const err = e as SmtpError;
			const error = `${err.code ?? err.name}${err.command ? ` (${err.command})` : ""}: ${err.message}`;
			if (typeof err.responseCode === "number" && err.responseCode >= 400)
				return { status: "refused", error, responseCode: err.responseCode };
			if (!this.begun.has(messageId)) return { status: "refused", error, responseCode: null };
			return { status: "unknown", error };
		} finally {
			this.begun.delete(messageId);
		}
	}

	/** Closes the transport (nothing is pooled: no connection outlives its message). */
	close(): void {
		this.transport.close();
	}
}
