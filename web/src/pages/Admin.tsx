import type { JSX } from "preact";
import { useState } from "preact/hooks";
import {
	api,
	ApiError,
	session,
	type ClusterNode,
	type Page,
	type Product,
	type RatePoint,
	type Saga,
	type SagaIntervention,
	type SagaStep,
	type Stock
} from "../api";
import { bytes, duration, shortId, time } from "../format";
import { Link } from "../router";
import { useStore } from "../store";
import { ErrorMessage, Loading, PageTitle, StatusBadge, useLoad } from "../ui";
import { RateChart } from "./RateChart";

/** `/admin`: the operations dashboard (admins only; the API refuses anyone else anyway). */
export function AdminPage(): JSX.Element {
	const user = useStore(session);
	const [selected, setSelected] = useState<string | null>(null);
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
									<strong>
										{a.action === "REDRIVE"
											? "Redriven"
											: "Refunded and cancelled"}
									</strong>{" "}
									by {a.actor}
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
