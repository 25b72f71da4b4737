import type { JSX } from "preact";
import { useState } from "preact/hooks";
import { api, ApiError, randomId, session, type Order } from "../api";
import { cart, clearCart, MAX_QUANTITY, removeFromCart, setQuantity } from "../cart";
import { CARD_TOKENS, money } from "../format";
import { Link, navigate } from "../router";
import { useStore } from "../store";
import { ErrorMessage, PageTitle } from "../ui";

/** `/cart`: the cart and the checkout. */
export function CartPage(): JSX.Element {
	const lines = useStore(cart);
	const user = useStore(session);
	const [token, setToken] = useState("tok_visa");
	const [busy, setBusy] = useState(false);
	const [error, setError] = useState<ApiError | null>(null);
	// One Idempotency-Key per checkout attempt: pressing the button again after a lost answer
	// returns the same order instead of placing a second one.
	const [key, setKey] = useState(randomId);

	const currency = lines[0]?.currency ?? "USD";
	const total = lines.reduce((s, l) => s + l.price * l.quantity, 0);

	const checkout = async (e: Event): Promise<void> => {
		e.preventDefault();
		setBusy(true);
		setError(null);
		try {
			const order = await api<Order>(
				"POST",
				"/orders",
				{
					items: lines.map(l => ({ productId: l.productId, quantity: l.quantity })),
					paymentMethod: token
				},
				{ "Idempotency-Key": key }
			);
			clearCart();
			setKey(randomId());
			navigate(`/orders/${order.id}`);
		} catch (err) {
			setError(err as ApiError);
			// A refused order (validation, stock) will not change on a retry with the same key.
			if ((err as ApiError).status >= 400 && (err as ApiError).status < 500)
				setKey(randomId());
		} finally {
			setBusy(false);
		}
	};

	if (lines.length === 0)
		return (
			<section>
				<PageTitle>Cart</PageTitle>
				<p>
					Your cart is empty. <Link href="/">Browse the catalog</Link>.
				</p>
			</section>
		);

	return (
		<section>
			<PageTitle>Cart</PageTitle>
			<div class="table-wrap">
				<table>
					<caption class="sr-only">Items in the cart</caption>
					<thead>
						<tr>
							<th scope="col">Product</th>
							<th scope="col">Price</th>
							<th scope="col">Quantity</th>
							<th scope="col" class="num">
								Total
							</th>
							<th scope="col">
								<span class="sr-only">Actions</span>
							</th>
						</tr>
					</thead>
					<tbody>
						{lines.map(l => (
							<tr key={l.productId}>
								<th scope="row">
									<Link href={`/products/${l.productId}`}>{l.name}</Link>
								</th>
								<td>{money(l.price, l.currency)}</td>
								<td>
									<label class="sr-only" for={`qty-${l.productId}`}>
										Quantity of {l.name}
									</label>
									<input
										id={`qty-${l.productId}`}
										class="qty"
										type="number"
										min={1}
										max={MAX_QUANTITY}
										value={l.quantity}
										onChange={e =>
											setQuantity(
												l.productId,
												Number((e.target as HTMLInputElement).value)
											)
										}
									/>
								</td>
								<td class="num">{money(l.price * l.quantity, l.currency)}</td>
								<td>
									<button
										type="button"
										class="secondary"
										onClick={() => removeFromCart(l.productId)}
										aria-label={`Remove ${l.name}`}
									>
										Remove
									</button>
								</td>
							</tr>
						))}
					</tbody>
					<tfoot>
						<tr>
							<th scope="row" colSpan={3}>
								Total
							</th>
							<td class="num" data-testid="cart-total">
								{money(total, currency)}
							</td>
							<td />
						</tr>
					</tfoot>
				</table>
			</div>

			<h2>Checkout</h2>
			{user ? (
				<form class="checkout" onSubmit={checkout}>
					<label for="payment">Card (test token)</label>
					<select
						id="payment"
						name="paymentMethod"
						value={token}
						onChange={e => setToken((e.target as HTMLSelectElement).value)}
					>
						{CARD_TOKENS.map(t => (
							<option value={t.token} key={t.token}>
								{t.label} · {t.token}
							</option>
						))}
					</select>
					<p class="muted">
						The payment processor is simulated: these test tokens stand for cards.
						Prices are set by the shop when the order is placed.
					</p>
					<button type="submit" disabled={busy}>
						{busy ? "Placing the order…" : `Place order · ${money(total, currency)}`}
					</button>
					<ErrorMessage error={error} />
				</form>
			) : (
				<p>
					<Link href="/login?next=/cart">Log in</Link> or{" "}
					<Link href="/register?next=/cart">create an account</Link> to check out.
				</p>
			)}
		</section>
	);
}
