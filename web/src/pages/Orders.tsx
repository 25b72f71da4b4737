import type { JSX } from "preact";
import { useState } from "preact/hooks";
import { api, type Notification, type Order, type Page } from "../api";
import { dateTime, money, shortId } from "../format";
import { Link } from "../router";
import { ErrorMessage, Loading, PageTitle, Pager, StatusBadge, useLoad } from "../ui";

/** `/orders`: the customer's order history, newest first. */
export function OrdersPage(): JSX.Element {
	const [page, setPage] = useState(1);
	const orders = useLoad(
		() => api<Page<Order>>("GET", `/orders?page=${page}&pageSize=20`),
		[page],
		5000
	);
	return (
		<section>
			<PageTitle>Your orders</PageTitle>
			<ErrorMessage error={orders.error} />
			{!orders.data ? (
				orders.loading && <Loading what="your orders" />
			) : orders.data.total === 0 ? (
				<p>
					No orders yet. <Link href="/">Browse the catalog</Link>.
				</p>
			) : (
				<>
					<div class="table-wrap">
						<table>
							<caption class="sr-only">Your orders, newest first</caption>
							<thead>
								<tr>
									<th scope="col">Order</th>
									<th scope="col">Placed</th>
									<th scope="col">Items</th>
									<th scope="col" class="num">
										Total
									</th>
									<th scope="col">Status</th>
								</tr>
							</thead>
							<tbody>
								{orders.data.rows.map(o => (
									<tr key={o.id}>
										<th scope="row">
											<Link href={`/orders/${o.id}`}>#{shortId(o.id)}</Link>
										</th>
										<td>{dateTime(o.createdAt)}</td>
										<td>
											{o.items
												.map(i => `${i.quantity} × ${i.name}`)
												.join(", ")}
										</td>
										<td class="num">{money(o.total, o.currency)}</td>
										<td>
											<StatusBadge status={o.status} />
											{o.cancellationReason && (
												<span class="muted"> {o.cancellationReason}</span>
											)}
										</td>
									</tr>
								))}
							</tbody>
						</table>
					</div>
					<Pager
						page={orders.data.page}
						totalPages={orders.data.totalPages}
						onPage={setPage}
						label="Order pages"
					/>
				</>
			)}
		</section>
	);
}

/** `/notifications`: the e-mails the shop sent about the customer's orders. */
export function NotificationsPage(): JSX.Element {
	const list = useLoad(
		() => api<Page<Notification>>("GET", "/notifications?pageSize=50"),
		[],
		5000
	);
	return (
		<section>
			<PageTitle>Notifications</PageTitle>
			<ErrorMessage error={list.error} />
			{!list.data ? (
				list.loading && <Loading what="notifications" />
			) : list.data.rows.length === 0 ? (
				<p>Nothing yet: you get one when an order is confirmed or cancelled.</p>
			) : (
				<ul class="notifications">
					{list.data.rows.map(n => (
						<li class="card" key={n.id}>
							<h2>{n.subject}</h2>
							<p class="muted">
								{dateTime(n.createdAt)} ·{" "}
								<Link href={`/orders/${n.orderId}`}>
									order #{shortId(n.orderId)}
								</Link>
							</p>
							<p class="pre">{n.body}</p>
						</li>
					))}
				</ul>
			)}
		</section>
	);
}
