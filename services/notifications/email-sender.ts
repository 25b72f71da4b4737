/**
 * Sends the notifications' e-mails, after their records are committed, at most once each.
 *
 * The notification row is the outbox and the send's idempotency record (`email_status`, migration
 * 003): a notification recorded with SMTP_URL set is PENDING; after the inbox transaction commits
 * the sender is woken (and it polls, for retries and for what another node left). For each due
 * e-mail it first CLAIMS the row in a statement of its own (SENDING, one more attempt, committed),
 * then talks to the server (mailer.ts), then records the outcome:
 * - accepted: SENT, with its Message-ID (`<notification id@domain>`) and the time;
 * - refused (a 4xx or 5xx reply) or never handed over (no connection, no greeting, login
 *   refused): PENDING again, due after a backoff (`SMTP_RETRY_DELAY_MS`, doubled per attempt,
 *   at most 1 h), until `SMTP_MAX_ATTEMPTS` sends; then FAILED and a dead letter;
 * - outcome unknown (the connection broke after the message transaction began, or the row is
 *   still SENDING {@link SEND_LEASE_MS} after its claim because its node stopped mid-send):
 *   FAILED and a dead letter at once, never sent again by itself.
 *
 * At most once, not at least once: SMTP gives no way to ask a server whether it took a message
 * whose reply was lost, and a receiving server does not drop a second copy by its Message-ID, so
 * sending again after an unknown outcome can deliver the e-mail twice (what RFC 5321 §6.1's
 * at-least-once retry accepts). The shop prefers a customer who may miss one e-mail (still
 * visible in `GET /api/notifications`, and listed for an operator) to one who gets it twice; every
 * retry it does make is after an answer that proves the server does not hold the message.
 *
 * Dead letters: the events engine's (platform/events/dead-letters.ts), consumer
 * {@link EMAIL_CONSUMER}, the "event" a DomainEvent naming the notification; admins see them in
 * `notifications.listDeadLetters`, and `notifications.replayDeadLetter` queues the e-mail again
 * (attempts from 0; its Message-ID stays the same), a choice the operator makes knowing an
 * `unknown` one may arrive twice.
 *
 * Pattern: the transactional outbox with a claim before the side effect (a "status column"
 * outbox as in Chris Richardson's microservices.io/patterns/data/transactional-outbox.html), at-
 * most-once by claiming before acting.
 */
import { recordDeadLetter } from "../../platform/events/dead-letters";
import type { DomainEvent, EventsHost } from "../../platform/events/domain-event";
import type { ClaimedEmail, NotificationsRepo } from "./notifications.repo";
import type { SmtpMailer } from "./mailer";
import { SOCKET_TIMEOUT_MS } from "./mailer";

/** The dead letters' consumer name. */
export const EMAIL_CONSUMER = "notifications.email";

/** Their "event" name. */
export const EMAIL_FAILED_EVENT = "notification.emailFailed";

/**
 * How long a claim may stay SENDING before its send counts as cut short by a stopped node, in
 * ms: well past the longest a live send can take (nodemailer's timeouts).
 */
export const SEND_LEASE_MS = 5 * SOCKET_TIMEOUT_MS;

/** Longest wait between two retries, in ms. */
export const MAX_RETRY_DELAY_MS = 3600_000;

/** Longest time between two polls, in ms. */
const MAX_POLL_MS = 5_000;

export interface EmailSenderOptions {
	/** Sends of one e-mail before it is dead-lettered (`SMTP_MAX_ATTEMPTS`). */
	readonly maxAttempts: number;
	/** Wait before the first retry, doubled for each next one, in ms (`SMTP_RETRY_DELAY_MS`). */
	readonly retryDelayMs: number;
	/** Claims older than this are dead-lettered as unknown, in ms (default {@link SEND_LEASE_MS}). */
	readonly leaseMs?: number;
}

/** Wait before the retry after `attempts` sends, in ms: `retryDelayMs × 2^(attempts-1)`, ≤ 1 h. */
export function emailRetryDelayMs(retryDelayMs: number, attempts: number): number {
	return Math.min(retryDelayMs * 2 ** Math.max(0, attempts - 1), MAX_RETRY_DELAY_MS);
}

/** What this node's sender did since it started. */
export interface EmailSenderStats {
	sent: number;
	retried: number;
	deadLettered: number;
}

/** The sender of one notifications node (see the module comment). */
export class EmailSender {
	readonly stats: EmailSenderStats = { sent: 0, retried: 0, deadLettered: 0 };
	private running: Promise<void> | null = null;
	private again = false;
	private stopping = false;
	private timer: NodeJS.Timeout | null = null;
	private readonly retryTimers = new Set<NodeJS.Timeout>();
	private readonly leaseMs: number;

	constructor(
		private readonly host: EventsHost,
		private readonly repo: NotificationsRepo,
		private readonly mailer: SmtpMailer,
		private readonly opts: EmailSenderOptions
	) {
		this.leaseMs = opts.leaseMs ?? SEND_LEASE_MS;
	}

	/** Starts polling (and sends what is due now). */
	start(): void {
		const every = Math.min(MAX_POLL_MS, Math.max(50, this.opts.retryDelayMs));
		this.timer = setInterval(() => this.kick(), every);
		this.timer.unref();
		this.kick();
	}

	/** Runs a pass now, or once more after the one in progress. */
	kick(): void {
		if (this.stopping) return;
		if (this.running) {
			this.again = true;
			return;
		}
		this.running = this.passes().finally(() => {
			this.running = null;
		});
	}

	/** Stops polling, waits for the send in progress, closes the transport. Idempotent. */
	async stop(): Promise<void> {
		this.stopping = true;
		if (this.timer) clearInterval(this.timer);
		for (const t of this.retryTimers) clearTimeout(t);
		this.retryTimers.clear();
		await this.running;
		this.mailer.close();
	}

	/** Passes until no kick came during the last one; a failure waits for the next poll. */
	private async passes(): Promise<void> {
		do {
			this.again = false;
			try {
				await this.pass();
			} catch (err) {
				// The database away, most likely: the rows stay as they are until the next poll.
				this.host.logger.warn(`E-mail sender: pass failed: ${(err as Error).message}`);
				return;
			}
		} while (this.again && !this.stopping);
	}

	/** Dead-letters stale claims, then sends every e-mail due, one at a time. */
	private async pass(): Promise<void> {
		for (const stale of await this.repo.staleSendingEmails(this.leaseMs))
			await this.giveUp(
				stale,
				`outcome unknown: still SENDING ${this.leaseMs} ms after its claim (its node stopped mid-send); the server may have accepted it`
			);
		while (!this.stopping) {
			const claimed = await this.repo.claimDueEmail();
			if (!claimed) return;
			await this.deliver(claimed);
		}
	}

	/** One send of a claimed e-mail and its outcome. */
	private async deliver(c: ClaimedEmail): Promise<void> {
		const { logger } = this.host;
		const outcome = await this.mailer.send({
			notificationId: c.id,
			to: c.recipient,
			subject: c.subject,
			text: c.body
		});
		if (outcome.status === "sent") {
			await this.repo.emailSent(c.id, outcome.messageId);
			this.stats.sent++;
			logger.info(
				`E-mail ${outcome.messageId} (${c.kind}, order ${c.orderId}) accepted: ${outcome.response}`
			);
			return;
		}
		if (outcome.status === "unknown") {
			await this.giveUp(
				c,
				`outcome unknown: ${outcome.error}; the server may have accepted it, not sent again`
			);
			return;
		}
		if (c.attempts >= this.opts.maxAttempts) {
			await this.giveUp(c, `refused ${c.attempts} times, last: ${outcome.error}`);
			return;
		}
		const delay = emailRetryDelayMs(this.opts.retryDelayMs, c.attempts);
		await this.repo.emailRetryLater(c.id, delay, outcome.error);
		this.stats.retried++;
		logger.warn(
			`E-mail of notification ${c.id}: send ${c.attempts} of ${this.opts.maxAttempts} failed, retry in ${delay} ms: ${outcome.error}`
		);
		const t = setTimeout(() => {
			this.retryTimers.delete(t);
			this.kick();
		}, delay);
		t.unref();
		this.retryTimers.add(t);
	}

	/** FAILED and a dead letter (recorded first: idempotent per notification and attempt). */
	private async giveUp(c: ClaimedEmail, error: string): Promise<void> {
		const { db, logger } = this.host;
		const event: DomainEvent = {
			id: `${c.id}:${c.attempts}`,
			name: EMAIL_FAILED_EVENT,
			source: "notifications",
			aggregateId: c.id,
			occurredAt: new Date().toISOString(),
			requestId: null,
			data: {
				notificationId: c.id,
				orderId: c.orderId,
				kind: c.kind,
				to: c.recipient,
				subject: c.subject
			}
		};
		await recordDeadLetter(db, null, {
			consumer: EMAIL_CONSUMER,
			eventId: event.id,
			eventName: event.name,
			event,
			error,
			deliveries: c.attempts
		});
		await this.repo.emailFailed(c.id, error);
		this.stats.deadLettered++;
		logger.error(`E-mail of notification ${c.id} dead-lettered: ${error}`);
	}
}
