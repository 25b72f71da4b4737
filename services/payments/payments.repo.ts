/**
 * The payments database's statements: payments (one per order) and the append-only ledger
 * (`ledger_entries`), each a method of `PaymentsRepo` over the service's Sequelize instance, in
 * the caller's transaction where there is one. The repository pattern of the house style
 * (services/<name>/<name>.repo.ts: all of a service's SQL in one file). Money: integer cents
 * with an ISO 4217 currency (`char(3)`, hence the `trim()` of the views).
 */
import crypto from "node:crypto";
import { fastQuery, QueryTypes, type Transaction } from "../../platform/db/fast-query";
import { writeOrDefer } from "../../platform/db/deferred-writes";
import type { LedgerEntry, Payment, PaymentStatus } from "./payments.model";
import type { ShopDatabase } from "../../platform/db/pool";

/** A payment as stored. */
export interface PaymentRow {
	id: string;
	order_id: string;
	amount: number;
	currency: string;
	method: string;
	status: PaymentStatus;
	decline_code: string | null;
	created_at: Date;
	updated_at: Date;
}

/** A ledger entry as stored (`id` is a bigint: a string from the driver). */
interface LedgerRow {
	id: string | number;
	payment_id: string;
	kind: "CAPTURE" | "REFUND";
	amount: number;
	currency: string;
	created_at: Date;
}

/** A payment as the API shows it. */
export const paymentView = (r: PaymentRow): Payment => ({
	id: r.id,
	orderId: r.order_id,
	amount: r.amount,
	currency: r.currency.trim(),
	method: r.method,
	status: r.status,
	declineCode: r.decline_code,
	createdAt: new Date(r.created_at).toISOString(),
	updatedAt: new Date(r.updated_at).toISOString()
});

/** A ledger entry to write: integer cents, ISO 4217. */
export interface LedgerWrite {
	paymentId: string;
	orderId: string;
	amount: number;
	currency: string;
}

export class PaymentsRepo {
	constructor(private readonly db: ShopDatabase) {}

	/** Runs `work` in one transaction (commit, or rollback when it throws). */
	transaction<T>(work: (t: Transaction) => Promise<T>): Promise<T> {
		return this.db.transaction(work);
	}

	/**
	 * The read of the order's payment, to send behind a key's claim (`withIdempotency`'s
	 * `read`); `paymentOf` turns its rows into the payment.
	 */
	paymentRead(orderId: string): { sql: string; bind: unknown[] } {
		return { sql: "SELECT * FROM payments WHERE order_id = $1", bind: [orderId] };
	}

	/** The payment in `paymentRead`'s rows, or null. */
	paymentOf(rows: readonly object[] | undefined): PaymentRow | null {
		return (rows?.[0] as PaymentRow | undefined) ?? null;
	}

	/** The order's payment, or null. */
	async findPayment(orderId: string, t: Transaction): Promise<PaymentRow | null> {
		const { sql, bind } = this.paymentRead(orderId);
		return this.paymentOf(
			await fastQuery(this.db, sql, { bind, type: QueryTypes.SELECT, transaction: t })
		);
	}

	/** Stores a payment with a new id. @returns it as stored */
	async insertPayment(
		t: Transaction,
		p: Omit<PaymentRow, "id" | "created_at" | "updated_at">
	): Promise<PaymentRow> {
		const rows = (await fastQuery(
			this.db,
			`INSERT INTO payments (id, order_id, amount, currency, method, status, decline_code)
				 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
			{
				bind: [
					crypto.randomUUID(),
					p.order_id,
					p.amount,
					p.currency,
					p.method,
					p.status,
					p.decline_code
				],
				type: QueryTypes.SELECT,
				transaction: t
			}
		)) as PaymentRow[];
		return rows[0]!;
	}

	/** CAPTURED → REFUNDED. @returns the payment as updated */
	async markRefunded(t: Transaction, paymentId: string): Promise<PaymentRow> {
		const rows = (await fastQuery(
			this.db,
			`UPDATE payments SET status = 'REFUNDED', updated_at = now() WHERE id = $1 RETURNING *`,
			{ bind: [paymentId], type: QueryTypes.SELECT, transaction: t }
		)) as PaymentRow[];
		return rows[0]!;
	}

	/** The ledger's capture of a payment (with the key's record, platform/db/deferred-writes.ts). */
	async recordCapture(t: Transaction, entry: LedgerWrite): Promise<void> {
		await writeOrDefer(this.db, t, {
			sql: `INSERT INTO ledger_entries (payment_id, order_id, kind, amount, currency) VALUES ($1, $2, 'CAPTURE', $3, $4)`,
			bind: [entry.paymentId, entry.orderId, entry.amount, entry.currency]
		});
	}

	/** The ledger's refund of a payment in full (with the key's record). */
	async recordRefund(t: Transaction, entry: LedgerWrite): Promise<void> {
		await writeOrDefer(this.db, t, {
			sql: `INSERT INTO ledger_entries (payment_id, order_id, kind, amount, currency) VALUES ($1, $2, 'REFUND', $3, $4)`,
			bind: [entry.paymentId, entry.orderId, entry.amount, entry.currency]
		});
	}

	/** An order's payments and ledger entries, oldest first. */
	async forOrder(orderId: string): Promise<{ payments: PaymentRow[]; ledger: LedgerEntry[] }> {
		const [payments, ledger] = await Promise.all([
			fastQuery(
				this.db,
				"SELECT * FROM payments WHERE order_id = $1 ORDER BY created_at, id",
				{
					bind: [orderId],
					type: QueryTypes.SELECT
				}
			) as Promise<PaymentRow[]>,
			fastQuery(
				this.db,
				`SELECT id, payment_id, kind, amount, currency, created_at FROM ledger_entries
						 WHERE order_id = $1 ORDER BY id`,
				{ bind: [orderId], type: QueryTypes.SELECT }
			) as Promise<LedgerRow[]>
		]);
		return {
			payments,
			ledger: ledger.map(e => ({
				id: Number(e.id),
				paymentId: e.payment_id,
				kind: e.kind,
				amount: e.amount,
				currency: e.currency.trim(),
				createdAt: new Date(e.created_at).toISOString()
			}))
		};
	}

	/** The ledger's sums per currency and kind (cents; `total` a bigint as a string). */
	async ledgerTotals(): Promise<{ currency: string; kind: string; total: string }[]> {
		return (await fastQuery(
			this.db,
			`SELECT currency, kind, sum(amount)::bigint AS total FROM ledger_entries GROUP BY currency, kind`,
			{ type: QueryTypes.SELECT }
		)) as { currency: string; kind: string; total: string }[];
	}
}
