/**
 * The shop's REST API (docs/CONTRACT.md) as the web app uses it: JSON over fetch with the bearer
 * token of the signed-in user, and the order stream (Server-Sent Events read with fetch, which can
 * send the Authorization header where EventSource cannot).
 */
import { createStore, loadJson, saveJson } from "./store";

export interface User {
	id: string;
	email: string;
	name: string;
	role: "customer" | "admin";
}

export interface Session {
	token: string;
	user: User;
}

export interface Page<T> {
	rows: T[];
	total: number;
	page: number;
	pageSize: number;
	totalPages: number;
}

export interface Product {
	id: string;
	sku: string;
	name: string;
	description: string;
	/** Integer cents. */
	price: number;
	currency: string;
}

export interface Stock {
	productId: string;
	onHand: number;
	reserved: number;
	available: number;
}

export interface OrderItem {
	productId: string;
	sku: string;
	name: string;
	quantity: number;
	unitPrice: number;
	lineTotal: number;
}

export type OrderStatus =
	| "PENDING"
	| "STOCK_RESERVED"
	| "PAID"
	| "CONFIRMING"
	| "CONFIRMED"
	| "CANCELLED"
	| "REFUNDING"
	| "REFUNDED";

export interface Order {
	id: string;
	status: OrderStatus;
	items: OrderItem[];
	total: number;
	currency: string;
	paymentMethod: string;
	cancellationReason: string | null;
	cancelRequested: boolean;
	createdAt: string;
	updatedAt: string;
}

export interface Notification {
	id: string;
	orderId: string;
	kind: string;
	subject: string;
	body: string;
	createdAt: string;
}

export type SagaStatus = "RUNNING" | "COMPENSATING" | "COMPLETED" | "COMPENSATED" | "FAILED";

export interface SagaError {
	step?: string;
	phase?: string;
	type?: string;
	message?: string;
	at?: string;
}

export interface Saga {
	id: string;
	name: string;
	status: SagaStatus;
	currentStep: number;
	currentStepName: string | null;
	orderId: string | null;
	failureReason: string | null;
	attempts: number;
	errors: SagaError[];
	deadlineAt: string;
	createdAt: string;
	updatedAt: string;
}

/**
 * What an operator did (`GET /api/admin/sagas/:id` and `GET /api/admin/orders/:id`,
 * `interventions`): redrove or refunded and cancelled a parked saga, refunded an order.
 */
export interface SagaIntervention {
	action: "REDRIVE" | "REFUND_AND_CANCEL" | "REFUND";
	sagaId?: string;
	actorId: string | null;
	actor: string;
	note: string | null;
	at: string;
}

/** An admin's refund of an order (`POST /api/admin/orders/:id/refund`). Amount in cents. */
export interface OrderRefund {
	sagaId: string;
	sagaStatus: SagaStatus | null;
	restock: boolean;
	amount: number;
	currency: string;
	actorId: string | null;
	actor: string;
	note: string | null;
	at: string;
}

/** One entry of the payments ledger. Amount in cents. */
export interface LedgerEntry {
	id: number;
	paymentId: string;
	kind: "CAPTURE" | "REFUND";
	amount: number;
	currency: string;
	createdAt: string;
}

/** An order as operators see it (`GET /api/admin/orders/:id`). Money in cents. */
export interface AdminOrder extends Order {
	customerEmail: string;
	payments: { id: string; status: string; amount: number; currency: string; method: string }[];
	ledger: LedgerEntry[];
	captured: number;
	refunded: number;
	reservation: { status: string } | null;
	sagas: Saga[];
	interventions: SagaIntervention[];
	refund: OrderRefund | null;
}

/** Orders not finished past ORDERS_STUCK_AFTER_MS (`GET /api/admin/orders/stuck`). */
export interface StuckOrders {
	thresholdMs: number;
	counts: Record<string, number>;
	total: number;
	rows: (Order & {
		since: string;
		ageMs: number;
		sagaId: string | null;
		sagaName: string | null;
		sagaStatus: SagaStatus | null;
	})[];
}

export interface SagaStep {
	id: number;
	stepIndex: number;
	stepName: string;
	phase: "forward" | "compensate";
	status: "STARTED" | "SUCCEEDED" | "FAILED";
	attempt: number;
	error: SagaError | null;
	startedAt: string;
	finishedAt: string | null;
}

export interface ClusterNode {
	id: string;
	available: boolean;
	local: boolean;
	hostname: string | null;
	client: { type?: string; version?: string; langVersion?: string };
	cpu: number | null;
	services: string[];
	health: {
		cpuLoad1?: number;
		cpuUtilization?: number | null;
		memFree?: number;
		memTotal?: number;
		processUptime?: number;
		processRss?: number;
		heapUsed?: number;
		error?: string;
	} | null;
}

export interface RatePoint {
	at: number;
	created: number;
	confirmed: number;
	cancelled: number;
}

/** An error answer of the API (`{ name, message, code, type, data }`). */
export class ApiError extends Error {
	constructor(
		readonly status: number,
		readonly type: string,
		message: string,
		readonly data?: unknown
	) {
		super(message);
		this.name = "ApiError";
	}
}

const SESSION_KEY = "shop.session";

/** The signed-in user and their token (localStorage, so a reload keeps it). */
export const session = createStore<Session | null>(loadJson<Session | null>(SESSION_KEY, null));
session.subscribe(s => saveJson(SESSION_KEY, s));

export function logout(): void {
	session.set(null);
}

/** A random id (Idempotency-Key); crypto.randomUUID needs a secure context, this does not. */
export function randomId(): string {
	const b = crypto.getRandomValues(new Uint8Array(16));
	return [...b].map(x => x.toString(16).padStart(2, "0")).join("");
}

async function errorOf(res: Response): Promise<ApiError> {
	let body: { type?: string; message?: string; data?: unknown } = {};
	try {
		body = (await res.json()) as typeof body;
	} catch {
		/* not JSON */
	}
	if (res.status === 401 && body.type === "AUTH_TOKEN_INVALID") logout();
	return new ApiError(
		res.status,
		body.type ?? "HTTP_" + res.status,
		body.message ?? res.statusText,
		body.data
	);
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
	const h: Record<string, string> = { Accept: "application/json", ...extra };
	const s = session.get();
	if (s) h.Authorization = `Bearer ${s.token}`;
	return h;
}

/** Calls the API; resolves with the JSON answer, rejects with an ApiError. */
export async function api<T>(
	method: "GET" | "POST" | "PUT" | "PATCH",
	path: string,
	body?: unknown,
	extraHeaders: Record<string, string> = {}
): Promise<T> {
	const h = headers(extraHeaders);
	if (body !== undefined) h["Content-Type"] = "application/json";
	let res: Response;
	try {
		res = await fetch(`/api${path}`, {
			method,
			headers: h,
			body: body === undefined ? undefined : JSON.stringify(body)
		});
	} catch {
		throw new ApiError(0, "NETWORK_ERROR", "The shop cannot be reached. Try again.");
	}
	if (!res.ok) throw await errorOf(res);
	return (await res.json()) as T;
}

export const FINAL_STATUSES: ReadonlySet<string> = new Set(["CONFIRMED", "CANCELLED"]);

/** A saga step as the order stream sends it. */
export interface SagaEvent {
	event: string;
	status: string;
	step: string | null;
	failureReason: string | null;
	at: string;
}

export type StreamState = "connecting" | "live" | "reconnecting" | "done" | "failed";

/**
 * Follows an order over `GET /api/orders/:id/events` until it is final; reconnects (the stream
 * sends the current state first) when the connection drops. Returns a function that stops.
 */
export function followOrder(
	id: string,
	on: {
		order(order: Order): void;
		saga(event: SagaEvent): void;
		state(state: StreamState, error?: ApiError): void;
	}
): () => void {
	const abort = new AbortController();
	let final = false;
	const dispatch = (event: string, data: string): void => {
		if (event === "order") {
			const order = JSON.parse(data) as Order;
			if (FINAL_STATUSES.has(order.status)) final = true;
			on.order(order);
		} else if (event === "saga") on.saga(JSON.parse(data) as SagaEvent);
	};
	const run = async (): Promise<void> => {
		let delay = 1000;
		for (let first = true; !abort.signal.aborted && !final; first = false) {
			on.state(first ? "connecting" : "reconnecting");
			try {
				const res = await fetch(`/api/orders/${encodeURIComponent(id)}/events`, {
					headers: headers({ Accept: "text/event-stream" }),
					signal: abort.signal
				});
				if (!res.ok) {
					const err = await errorOf(res);
					if (err.status >= 400 && err.status < 500 && err.status !== 429) {
						on.state("failed", err);
						return;
					}
					throw err;
				}
				on.state("live");
				delay = 1000;
				const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
				let buffer = "";
				for (;;) {
					const { value, done } = await reader.read();
					if (done) break;
					buffer += value;
					let cut: number;
					while ((cut = buffer.indexOf("\n\n")) >= 0) {
						const block = buffer.slice(0, cut);
						buffer = buffer.slice(cut + 2);
						let event = "message";
						const data: string[] = [];
						for (const line of block.split("\n")) {
							if (line.startsWith("event:")) event = line.slice(6).trim();
							else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
						}
						if (data.length > 0) dispatch(event, data.join("\n"));
					}
				}
			} catch {
				if (abort.signal.aborted) return;
			}
			if (!final) {
				on.state("reconnecting");
				await new Promise(r => setTimeout(r, delay));
				delay = Math.min(delay * 2, 10_000);
			}
		}
		if (final) on.state("done");
	};
	void run();
	return () => abort.abort();
}
