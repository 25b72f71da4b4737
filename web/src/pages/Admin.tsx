import type { JSX } from "preact";
import { useState } from "preact/hooks";
import {
	api,
	ApiError,
	session,
	type AdminOrder,
	type ClusterNode,
	type Page,
	type Product,
	type RatePoint,
	type Saga,
	type SagaIntervention,
	type SagaStep,
	type Stock,
	type StuckOrders
} from "../api";
import { bytes, duration, money, shortId, time } from "../format";
import { Link } from "../router";
import { useStore } from "../store";
import { ErrorMessage, Loading, PageTitle, StatusBadge, useLoad } from "../ui";
import { RateChart } from "./RateChart";

/** `/admin`: the operations dashboard (admins only; the API refuses anyone else anyway). */
export function AdminPage(): JSX.Element {
	const user = useStore(session);
	const [selected, setSelected] = useState<string | null>(null);
	const [order, setOrder] = useState<string | null>(null);
	if (!user || user.user.role !== "admin")
		return (
			<section>
				<PageTitle>Operations</PageTitle>
				<p>
					This dashboard is for administrators.{" "}
					{!user && <Link href="/login?next=/admin">Log in as an administrator</Link>}
				</p>
			</section>
		);
	return (
		<div class="dashboard">
			<PageTitle>Operations</PageTitle>
			<div class="dashboard-grid">
				<OrderRate />
				<Nodes />
				<StuckOrdersPanel onSelectOrder={setOrder} onSelectSaga={setSelected} />
				<OrderPanel id={order} onSelect={setOrder} onSelectSaga={setSelected} />
				<SagaTable
					title="Sagas in flight"
					id="sagas-in-flight"
					statuses={["RUNNING", "COMPENSATING"]}
					empty="No saga is running."
					onSelect={setSelected}
				/>
				<SagaTable
					title="Parked sagas"
					id="parked-sagas"
					statuses={["FAILED"]}
					empty="No saga is parked."
					onSelect={setSelected}
					redrive
				/>
				{selected && <SagaDetail id={selected} onClose={() => setSelected(null)} />}
				<SagaTable
					title="Recent sagas"
					id="recent-sagas"
					statuses={[]}
					empty="No saga yet."
					onSelect={setSelected}
					pageSize={8}
				/>
				<StockLevels />
			</div>
		</div>
	);
}

function OrderRate(): JSX.Element {
	const rate = useLoad(
		() => api<{ points: RatePoint[] }>("GET", "/admin/orders/rate?seconds=60"),
		[],
		1000
	);
	return (
		<section class="panel" aria-labelledby="rate-title">
			<h2 id="rate-title">Orders per second</h2>
			<ErrorMessage error={rate.error} />
			{rate.data ? <RateChart points={rate.data.points} /> : <Loading what="the chart" />}
		</section>
	);
}

function SagaTable(props: {
	title: string;
	id: string;
	statuses: string[];
	empty: string;
	onSelect(id: string): void;
	redrive?: boolean;
	pageSize?: number;
}): JSX.Element {
	const [message, setMessage] = useState<string | null>(null);
	const [error, setError] = useState<ApiError | null>(null);
	const sagas = useLoad(
		async () => {
			const size = props.pageSize ?? 20;
			const pages = await Promise.all(
				(props.statuses.length ? props.statuses : [""]).map(s =>
					api<Page<Saga>>(
						"GET",
						`/admin/sagas?pageSize=${size}${s ? `&status=${s}` : ""}`
					)
				)
			);
			return pages.flatMap(p => p.rows);
		},
		[props.statuses.join()],
		2000
	);
	const redrive = async (s: Saga): Promise<void> => {
		setError(null);
		try {
			const after = await api<Saga>("POST", `/admin/sagas/${s.id}/redrive`);
			setMessage(`Saga ${shortId(s.id)} redriven: now ${after.status}.`);
			props.onSelect(s.id);
			sagas.reload();
		} catch (err) {
			setError(err as ApiError);
		}
	};
	/**
	 * "Refund and cancel" a saga parked after its pivot (it was going forward: no failure
	 * reason): the payment is refunded, the stock released, the order CANCELLED
	 * (OPERATOR_REFUNDED). Asks first: it cannot be undone.
	 */
	const refundAndCancel = async (s: Saga): Promise<void> => {
		setError(null);
		const order = s.orderId ? shortId(s.orderId) : shortId(s.id);
		if (
			!window.confirm(
				`Refund and cancel order ${order}? Its payment is refunded, its stock released, and the customer is told. This cannot be undone.`
			)
		)
			return;
		try {
			const after = await api<Saga>("POST", `/admin/sagas/${s.id}/refund-and-cancel`);
			setMessage(`Saga ${shortId(s.id)}: refund and cancel started, now ${after.status}.`);
			props.onSelect(s.id);
			sagas.reload();
		} catch (err) {
			setError(err as ApiError);
		}
	};
	return (
		<section class="panel panel-wide" aria-labelledby={`${props.id}-title`} id={props.id}>
			<h2 id={`${props.id}-title`}>
				{props.title}
				{sagas.data && <span class="count"> ({sagas.data.length})</span>}
			</h2>
			<ErrorMessage error={sagas.error ?? error} />
			{message && (
				<p class="message message-ok" role="status">
					{message}
				</p>
			)}
			{!sagas.data ? (
				<Loading what="sagas" />
			) : sagas.data.length === 0 ? (
				<p class="muted">{props.empty}</p>
			) : (
				<div class="table-wrap">
					<table>
						<caption class="sr-only">{props.title}</caption>
						<thead>
							<tr>
								<th scope="col">Saga</th>
								<th scope="col">Order</th>
								<th scope="col">Status</th>
								<th scope="col">Step</th>
								<th scope="col" class="num">
									Attempts
								</th>
								<th scope="col">Last error</th>
								<th scope="col">Updated</th>
								<th scope="col">
									<span class="sr-only">Actions</span>
								</th>
							</tr>
						</thead>
						<tbody>
							{sagas.data.map(s => {
								const last = s.errors[s.errors.length - 1];
								return (
									<tr key={s.id} data-saga={s.id}>
										<th scope="row">
											<code>{shortId(s.id)}</code>
										</th>
										<td>
											{s.orderId ? <code>{shortId(s.orderId)}</code> : "–"}
										</td>
										<td>
											<StatusBadge status={s.status} />
											{s.failureReason && (
												<span class="muted"> {s.failureReason}</span>
											)}
										</td>
										<td>{s.currentStepName ?? s.currentStep}</td>
										<td class="num">{s.attempts}</td>
										<td class="error-cell">
											{last ? `${last.step ?? ""} ${last.type ?? ""}` : "–"}
										</td>
										<td>{time(s.updatedAt)}</td>
										<td class="actions">
											<button
												type="button"
												class="secondary"
												onClick={() => props.onSelect(s.id)}
												aria-label={`Steps of saga ${shortId(s.id)}`}
											>
												Steps
											</button>
											{props.redrive && s.status === "FAILED" && (
												<button
													type="button"
													onClick={() => redrive(s)}
													aria-label={`Redrive saga ${shortId(s.id)}`}
												>
													Redrive
												</button>
											)}
											{props.redrive &&
												s.status === "FAILED" &&
												s.name === "order" &&
												s.failureReason === null && (
													<button
														type="button"
														class="danger"
														onClick={() => refundAndCancel(s)}
														aria-label={`Refund and cancel saga ${shortId(s.id)}`}
													>
														Refund &amp; cancel
													</button>
												)}
										</td>
									</tr>
								);
							})}
						</tbody>
					</table>
				</div>
			)}
		</section>
	);
}

const FINAL_SAGA = new Set(["COMPLETED", "COMPENSATED"]);

/** One saga's step log as a timeline, re-read until the saga is finished. */
function SagaDetail({ id, onClose }: { id: string; onClose(): void }): JSX.Element {
	const saga = useLoad(
		() =>
			api<Saga & { steps: SagaStep[]; interventions?: SagaIntervention[] }>(
				"GET",
				`/admin/sagas/${id}`
			),
		[id],
		1500
	);
	const s = saga.data;
	return (
		<section class="panel panel-wide" aria-labelledby="saga-detail-title" id="saga-detail">
			<div class="panel-head">
				<h2 id="saga-detail-title">
					Saga <code>{shortId(id)}</code>
				</h2>
				<button type="button" class="secondary" onClick={onClose}>
					Close
				</button>
			</div>
			<ErrorMessage error={saga.error} />
			{!s ? (
				<Loading what="the saga" />
			) : (
				<>
					<p aria-live="polite" data-testid="saga-detail-status">
						<StatusBadge status={s.status} /> order <code>{s.orderId}</code>
						{s.failureReason && <> · reason {s.failureReason}</>}
						{s.status === "FAILED" ? (
							<span class="muted">
								{" "}
								· parked: fix the cause, then redrive
								{s.failureReason === null && " (or refund and cancel the order)"}
							</span>
						) : (
							!FINAL_SAGA.has(s.status) && <span class="muted"> · updating</span>
						)}
					</p>
					{s.interventions && s.interventions.length > 0 && (
						<ul class="interventions" aria-label="Operator actions">
							{s.interventions.map(a => (
								<li key={`${a.action}-${a.at}`} data-action={a.action}>
									<span class="timeline-time">{time(a.at)}</span>{" "}
									<strong>{INTERVENTION_LABELS[a.action]}</strong> by {a.actor}
									{a.note && <span class="muted"> ({a.note})</span>}
								</li>
							))}
						</ul>
					)}
					<ol class="timeline">
						{s.steps.map(step => (
							<li
								key={step.id}
								class={`timeline-${step.status.toLowerCase()} phase-${step.phase}`}
							>
								<span class="timeline-time">{time(step.startedAt)}</span>{" "}
								<strong>{step.stepName}</strong>{" "}
								{step.phase === "compensate" ? "(undo) " : ""}
								<span class="timeline-status">{step.status}</span>
								{step.attempt > 1 && (
									<span class="muted"> attempt {step.attempt}</span>
								)}
								{step.error && (
									<span class="error-cell">
										{" "}
										{step.error.type}: {step.error.message}
									</span>
								)}
							</li>
						))}
					</ol>
				</>
			)}
		</section>
	);
}

/** What an operator's action reads as. */
const INTERVENTION_LABELS: Record<SagaIntervention["action"], string> = {
	REDRIVE: "Redriven",
	REFUND_AND_CANCEL: "Refunded and cancelled",
	REFUND: "Refunded (return)"
};

/**
 * Orders not finished past ORDERS_STUCK_AFTER_MS (`GET /api/admin/orders/stuck`), by status and
 * oldest first, with the saga driving each: a parked one (FAILED) needs a redrive or a refund and
 * cancel. Re-read every 5 s.
 */
function StuckOrdersPanel(props: {
	onSelectOrder(id: string): void;
	onSelectSaga(id: string): void;
}): JSX.Element {
	const stuck = useLoad(() => api<StuckOrders>("GET", "/admin/orders/stuck?limit=20"), [], 5000);
	const s = stuck.data;
	return (
		<section class="panel panel-wide" aria-labelledby="stuck-title" id="stuck-orders">
			<h2 id="stuck-title">
				Stuck orders{" "}
				{s && (
					<span class="muted" data-testid="stuck-total">
						{s.total}
					</span>
				)}
			</h2>
			<ErrorMessage error={stuck.error} />
			{!s ? (
				<Loading what="stuck orders" />
			) : (
				<>
					<p class="muted">
						Not finished {Math.round(s.thresholdMs / 1000)} s after they were placed (a
						refund: asked for):{" "}
						{Object.entries(s.counts)
							.map(([status, n]) => `${status} ${n}`)
							.join(" · ")}
					</p>
					{s.rows.length === 0 ? (
						<p>No order is stuck.</p>
					) : (
						<table>
							<thead>
								<tr>
									<th>Order</th>
									<th>Status</th>
									<th>Age</th>
									<th>Total</th>
									<th>Saga</th>
								</tr>
							</thead>
							<tbody>
								{s.rows.map(o => (
									<tr key={o.id} data-order={o.id}>
										<td>
											<button
												type="button"
												class="secondary"
												onClick={() => props.onSelectOrder(o.id)}
												aria-label={`Show order ${shortId(o.id)}`}
											>
												<code>{shortId(o.id)}</code>
											</button>
										</td>
										<td>
											<StatusBadge status={o.status} />
										</td>
										<td>{duration(Math.round(o.ageMs / 1000))}</td>
										<td>{money(o.total, o.currency)}</td>
										<td>
											{o.sagaId ? (
												<button
													type="button"
													class="secondary"
													onClick={() => props.onSelectSaga(o.sagaId!)}
												>
													{o.sagaName} <code>{shortId(o.sagaId)}</code>
												</button>
											) : (
												"–"
											)}{" "}
											{o.sagaStatus && <StatusBadge status={o.sagaStatus} />}
										</td>
									</tr>
								))}
							</tbody>
						</table>
					)}
				</>
			)}
		</section>
	);
}

/**
 * One order for operators (`GET /api/admin/orders/:id`): status, payments and ledger entries,
 * sagas, operators' actions; a CONFIRMED order can be refunded here (a return, with restock or
 * not: `POST /api/admin/orders/:id/refund`), after a confirmation.
 */
function OrderPanel(props: {
	id: string | null;
	onSelect(id: string): void;
	onSelectSaga(id: string): void;
}): JSX.Element {
	const [lookup, setLookup] = useState("");
	const [restock, setRestock] = useState(true);
	const [note, setNote] = useState("");
	const [message, setMessage] = useState<string | null>(null);
	const [error, setError] = useState<ApiError | null>(null);
	const order = useLoad(
		async () => (props.id ? api<AdminOrder>("GET", `/admin/orders/${props.id}`) : null),
		[props.id],
		2000
	);
	const o = order.data;
	const refund = async (): Promise<void> => {
		if (!o) return;
		setError(null);
		if (
			!window.confirm(
				`Refund order ${shortId(o.id)} (${money(o.total, o.currency)})${restock ? " and restock its items" : ""}? The customer is told. This cannot be undone.`
			)
		)
			return;
		try {
			const after = await api<AdminOrder>("POST", `/admin/orders/${o.id}/refund`, {
				restock,
				...(note.trim() ? { note: note.trim() } : {})
			});
			setMessage(`Order ${shortId(o.id)}: refund started, now ${after.status}.`);
			order.reload();
		} catch (err) {
			setError(err as ApiError);
		}
	};
	return (
		<section class="panel panel-wide" aria-labelledby="order-title" id="order-detail">
			<h2 id="order-title">Order</h2>
			<form
				class="inline-form"
				onSubmit={e => {
					e.preventDefault();
					setMessage(null);
					setError(null);
					if (lookup.trim()) props.onSelect(lookup.trim());
				}}
			>
				<label>
					Order id{" "}
					<input
						value={lookup}
						onInput={e => setLookup((e.target as HTMLInputElement).value)}
						placeholder="00000000-0000-0000-0000-000000000000"
						size={38}
					/>
				</label>{" "}
				<button type="submit">Show</button>
			</form>
			{message && (
				<p class="message message-ok" role="status">
					{message}
				</p>
			)}
			<ErrorMessage error={error ?? order.error} />
			{props.id && !o && !order.error && <Loading what="the order" />}
			{o && (
				<div data-order={o.id}>
					<p data-testid="order-detail-status">
						<StatusBadge status={o.status} /> <code>{o.id}</code> ·{" "}
						{money(o.total, o.currency)} · {o.customerEmail}
						{o.cancellationReason && <> · {o.cancellationReason}</>}
					</p>
					<p>
						Captured {money(o.captured, o.currency)} · refunded{" "}
						{money(o.refunded, o.currency)} · stock{" "}
						{o.reservation ? o.reservation.status : "–"}
					</p>
					{o.ledger.length > 0 && (
						<table aria-label="Ledger entries">
							<thead>
								<tr>
									<th>Time</th>
									<th>Entry</th>
									<th>Amount</th>
								</tr>
							</thead>
							<tbody>
								{o.ledger.map(e => (
									<tr key={e.id} data-ledger={e.kind}>
										<td>{time(e.createdAt)}</td>
										<td>{e.kind}</td>
										<td>{money(e.amount, e.currency)}</td>
									</tr>
								))}
							</tbody>
						</table>
					)}
					<ul class="interventions" aria-label="Sagas and operator actions">
						{o.sagas.map(sg => (
							<li key={sg.id} data-saga={sg.id}>
								<button
									type="button"
									class="secondary"
									onClick={() => props.onSelectSaga(sg.id)}
								>
									{sg.name} <code>{shortId(sg.id)}</code>
								</button>{" "}
								<StatusBadge status={sg.status} />
							</li>
						))}
						{o.interventions.map(a => (
							<li key={`${a.action}-${a.at}`} data-action={a.action}>
								<span class="timeline-time">{time(a.at)}</span>{" "}
								<strong>{INTERVENTION_LABELS[a.action]}</strong> by {a.actor}
								{a.note && <span class="muted"> ({a.note})</span>}
							</li>
						))}
					</ul>
					{o.status === "CONFIRMED" && (
						<div class="inline-form">
							<label>
								<input
									type="checkbox"
									checked={restock}
									onChange={e =>
										setRestock((e.target as HTMLInputElement).checked)
									}
								/>{" "}
								Restock the items
							</label>{" "}
							<label>
								Note{" "}
								<input
									value={note}
									maxLength={500}
									onInput={e => setNote((e.target as HTMLInputElement).value)}
								/>
							</label>{" "}
							<button
								type="button"
								class="danger"
								onClick={() => void refund()}
								aria-label={`Refund order ${shortId(o.id)}`}
							>
								Refund
							</button>
						</div>
					)}
				</div>
			)}
		</section>
	);
}

function StockLevels(): JSX.Element {
	const stock = useLoad(
		async () => {
			const products = await api<Page<Product>>("GET", "/products?pageSize=100");
			const levels = await Promise.all(
				products.rows.map(p => api<Stock>("GET", `/inventory/${p.id}`))
			);
			return products.rows.map((p, i) => ({ product: p, stock: levels[i]! }));
		},
		[],
		5000
	);
	return (
		<section class="panel panel-wide" aria-labelledby="stock-title">
			<h2 id="stock-title">Stock levels</h2>
			<ErrorMessage error={stock.error} />
			{!stock.data ? (
				<Loading what="stock" />
			) : (
				<div class="table-wrap">
					<table>
						<caption class="sr-only">Stock per product</caption>
						<thead>
							<tr>
								<th scope="col">Product</th>
								<th scope="col" class="num">
									On hand
								</th>
								<th scope="col" class="num">
									Reserved
								</th>
								<th scope="col" class="num">
									Available
								</th>
								<th scope="col">Adjust on hand</th>
							</tr>
						</thead>
						<tbody>
							{stock.data.map(({ product, stock: s }) => (
								<StockRow
									key={product.id}
									product={product}
									stock={s}
									onSaved={stock.reload}
								/>
							))}
						</tbody>
					</table>
				</div>
			)}
		</section>
	);
}

function StockRow({
	product,
	stock,
	onSaved
}: {
	product: Product;
	stock: Stock;
	onSaved(): void;
}): JSX.Element {
	const [value, setValue] = useState<string>("");
	const [error, setError] = useState<ApiError | null>(null);
	const [saved, setSaved] = useState(false);
	const inputId = `onhand-${product.id}`;
	const save = async (e: Event): Promise<void> => {
		e.preventDefault();
		setError(null);
		setSaved(false);
		try {
			await api<Stock>("PUT", `/inventory/${product.id}`, { onHand: Number(value) });
			setValue("");
			setSaved(true);
			onSaved();
		} catch (err) {
			setError(err as ApiError);
		}
	};
	return (
		<tr>
			<th scope="row">
				{product.name} <span class="muted">{product.sku}</span>
			</th>
			<td class="num">{stock.onHand}</td>
			<td class="num">{stock.reserved}</td>
			<td class={`num ${stock.available === 0 ? "low" : ""}`}>{stock.available}</td>
			<td>
				<form class="inline-form" onSubmit={save}>
					<label for={inputId} class="sr-only">
						New on-hand quantity of {product.name}
					</label>
					<input
						id={inputId}
						type="number"
						min={0}
						required
						class="qty"
						placeholder={String(stock.onHand)}
						value={value}
						onInput={e => setValue((e.target as HTMLInputElement).value)}
					/>
					<button type="submit" class="secondary">
						Set
					</button>
					{saved && <span role="status"> Saved</span>}
				</form>
				<ErrorMessage error={error} />
			</td>
		</tr>
	);
}

function Nodes(): JSX.Element {
	const nodes = useLoad(() => api<{ nodes: ClusterNode[] }>("GET", "/admin/nodes"), [], 5000);
	return (
		<section class="panel" aria-labelledby="nodes-title">
			<h2 id="nodes-title">Cluster nodes</h2>
			<ErrorMessage error={nodes.error} />
			{!nodes.data ? (
				<Loading what="nodes" />
			) : (
				<ul class="nodes">
					{nodes.data.nodes.map(n => (
						<li class="card node" key={n.id}>
							<h3>
								<code>{n.id}</code>
								{n.local && <span class="muted"> (this gateway)</span>}
							</h3>
							<p>
								<span class={`badge ${n.available ? "badge-ok" : "badge-bad"}`}>
									{n.available
										? n.health?.error
											? `Unhealthy: ${n.health.error}`
											: "Healthy"
										: "Unavailable"}
								</span>{" "}
								<span class="muted">
									Moleculer {n.client.version} · Node {n.client.langVersion}
								</span>
							</p>
							{n.health && !n.health.error && (
								<dl class="facts">
									<dt>CPU</dt>
									<dd>
										{n.health.cpuUtilization ?? "–"}% (load{" "}
										{n.health.cpuLoad1?.toFixed(2)})
									</dd>
									<dt>Process memory</dt>
									<dd>{bytes(n.health.processRss)}</dd>
									<dt>Uptime</dt>
									<dd>{duration(n.health.processUptime)}</dd>
								</dl>
							)}
							<p class="services">
								<span class="sr-only">Services: </span>
								{n.services.map(s => (
									<span class="chip" key={s}>
										{s}
									</span>
								))}
							</p>
						</li>
					))}
				</ul>
			)}
		</section>
	);
}
