import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";
import {
	api,
	ApiError,
	FINAL_STATUSES,
	followOrder,
	type Order,
	type SagaEvent,
	type StreamState
} from "../api";
import { dateTime, money, REASON_TEXT, shortId, STATUS_LABELS, time } from "../format";
import { Link } from "../router";
import { ErrorMessage, Loading, PageTitle, StatusBadge } from "../ui";

/** The way an order goes when all is well. */
const PATH = ["PENDING", "STOCK_RESERVED", "PAID", "CONFIRMING", "CONFIRMED"] as const;

const STEP_TEXT: Record<string, string> = {
	reserveStock: "stock reserved",
	chargePayment: "payment",
	confirmOrder: "order confirmed",
	commitStock: "stock committed"
};

function sagaLine(e: SagaEvent): string {
	const step = e.step ? (STEP_TEXT[e.step] ?? e.step) : null;
	switch (e.event) {
		case "saga.started":
			return "Processing started";
		case "saga.stepCompleted":
			return `Done: ${step}`;
		case "saga.compensating":
			return `Undoing what was done${e.failureReason ? ` (${e.failureReason})` : ""}`;
		case "saga.completed":
			return "Completed";
		case "saga.compensated":
			return "Everything undone";
		case "saga.failed":
			return "Stuck: an operator has been alerted";
		default:
			return e.event;
	}
}

const STREAM_TEXT: Record<StreamState, string> = {
	connecting: "Connecting to live updates…",
	live: "Live: this page updates by itself",
	reconnecting: "Connection lost, reconnecting…",
	done: "Final status: no further updates",
	failed: "Live updates unavailable"
};

/** `/orders/:id`: the order, followed live until it is confirmed or cancelled. */
export function OrderPage({ id }: { id: string }): JSX.Element {
	const [order, setOrder] = useState<Order | null>(null);
	const [events, setEvents] = useState<SagaEvent[]>([]);
	const [stream, setStream] = useState<StreamState>("connecting");
	const [error, setError] = useState<ApiError | null>(null);
	const [cancelling, setCancelling] = useState(false);
	/** How far along the happy path the order got (as seen here), for the progress line. */
	const [furthest, setFurthest] = useState(0);

	useEffect(() => {
		setOrder(null);
		setEvents([]);
		setError(null);
		setFurthest(0);
		return followOrder(id, {
			order: o => {
				setOrder(o);
				setFurthest(f => Math.max(f, PATH.indexOf(o.status as (typeof PATH)[number])));
			},
			saga: e => setEvents(list => [...list, e]),
			state: (s, err) => {
				setStream(s);
				if (err) setError(err);
			}
		});
	}, [id]);

	const cancel = async (): Promise<void> => {
		setCancelling(true);
		try {
			setOrder(await api<Order>("POST", `/orders/${encodeURIComponent(id)}/cancel`));
		} catch (err) {
			setError(err as ApiError);
		} finally {
			setCancelling(false);
		}
	};

	if (!order)
		return error ? (
			<section>
				<PageTitle>Order</PageTitle>
				<ErrorMessage error={error} />
				<p>
					<Link href="/orders">Your orders</Link>
				</p>
			</section>
		) : (
			<Loading what="the order" />
		);

	const final = FINAL_STATUSES.has(order.status);
	const reached = PATH.indexOf(order.status as (typeof PATH)[number]);
	const cancellable = ["PENDING", "STOCK_RESERVED", "PAID"].includes(order.status);

	return (
		<article class="order">
			<p>
				<Link href="/orders">← Your orders</Link>
			</p>
			<PageTitle>Order #{shortId(order.id)}</PageTitle>
			<p class="muted">
				Placed {dateTime(order.createdAt)} · paid with {order.paymentMethod}
			</p>

			<div class="order-status" role="status" aria-live="polite" data-testid="order-status">
				<StatusBadge status={order.status} />
				{order.status === "CANCELLED" && order.cancellationReason && (
					<p class="reason" data-testid="cancellation-reason">
						Reason: <strong>{order.cancellationReason}</strong>
						{REASON_TEXT[order.cancellationReason]
							? ` — ${REASON_TEXT[order.cancellationReason]}`
							: ""}
					</p>
				)}
				{order.status === "CONFIRMED" && <p>Thank you! Your order is confirmed.</p>}
				{order.cancelRequested && !final && <p>Cancellation requested…</p>}
			</div>
			<p class={`stream stream-${stream}`}>{STREAM_TEXT[stream]}</p>

			<h2>Progress</h2>
			<ol class="progress">
				{PATH.map((s, i) => {
					const state =
						order.status === "CANCELLED"
							? i <= furthest
								? "done"
								: "skipped"
							: i < reached || (i === reached && final)
								? "done"
								: i === reached
									? "current"
									: "todo";
					return (
						<li
							class={`progress-${state}`}
							key={s}
							aria-current={state === "current" ? "step" : undefined}
						>
							{STATUS_LABELS[s]}
						</li>
					);
				})}
				{order.status === "CANCELLED" && (
					<li class="progress-cancelled" aria-current="step">
						Cancelled
					</li>
				)}
			</ol>

			{events.length > 0 && (
				<>
					<h2>What happened</h2>
					<ol class="events">
						{events.map((e, i) => (
							<li key={i}>
								<time dateTime={e.at}>{time(e.at)}</time> {sagaLine(e)}
							</li>
						))}
					</ol>
				</>
			)}

			<h2>Items</h2>
			<div class="table-wrap">
				<table>
					<caption class="sr-only">Items of the order</caption>
					<thead>
						<tr>
							<th scope="col">Product</th>
							<th scope="col">Quantity</th>
							<th scope="col" class="num">
								Price
							</th>
							<th scope="col" class="num">
								Total
							</th>
						</tr>
					</thead>
					<tbody>
						{order.items.map(i => (
							<tr key={i.productId}>
								<th scope="row">
									<Link href={`/products/${i.productId}`}>{i.name}</Link>
								</th>
								<td>{i.quantity}</td>
								<td class="num">{money(i.unitPrice, order.currency)}</td>
								<td class="num">{money(i.lineTotal, order.currency)}</td>
							</tr>
						))}
					</tbody>
					<tfoot>
						<tr>
							<th scope="row" colSpan={3}>
								Total
							</th>
							<td class="num">{money(order.total, order.currency)}</td>
						</tr>
					</tfoot>
				</table>
			</div>
			{cancellable && !order.cancelRequested && (
				<button type="button" class="secondary" disabled={cancelling} onClick={cancel}>
					Cancel this order
				</button>
			)}
			<ErrorMessage error={error} />
		</article>
	);
}
