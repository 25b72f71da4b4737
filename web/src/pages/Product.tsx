import type { JSX } from "preact";
import { useState } from "preact/hooks";
import { api, type Product, type Stock } from "../api";
import { addToCart, MAX_QUANTITY } from "../cart";
import { money } from "../format";
import { Link } from "../router";
import { ErrorMessage, Loading, PageTitle, useLoad } from "../ui";

/** Live stock: re-read every few seconds while the page is visible. */
const STOCK_POLL_MS = 3000;

/** `/products/:id`: one product with its live stock. */
export function ProductPage({ id }: { id: string }): JSX.Element {
	const product = useLoad(() => api<Product>("GET", `/products/${encodeURIComponent(id)}`), [id]);
	const stock = useLoad(
		() => api<Stock>("GET", `/inventory/${encodeURIComponent(id)}`),
		[id],
		STOCK_POLL_MS
	);
	const [quantity, setQuantity] = useState(1);
	const [added, setAdded] = useState<string | null>(null);

	if (product.error) return <ErrorMessage error={product.error} />;
	if (!product.data) return <Loading what="the product" />;
	const p = product.data;
	const available = stock.data?.available;

	const onSubmit = (e: Event): void => {
		e.preventDefault();
		addToCart(p, quantity);
		setAdded(`${quantity} × ${p.name} added to the cart.`);
	};

	return (
		<article class="product">
			<p>
				<Link href="/">← Catalog</Link>
			</p>
			<PageTitle>{p.name}</PageTitle>
			<p class="muted">SKU {p.sku}</p>
			<p class="description">{p.description}</p>
			<p class="price price-large">{money(p.price, p.currency)}</p>
			<p class="stock" aria-live="polite" data-testid="stock">
				{available === undefined
					? "Checking stock…"
					: available > 0
						? `In stock: ${available} available`
						: "Out of stock"}
			</p>
			<form class="add-form" onSubmit={onSubmit}>
				<label for="quantity">Quantity</label>
				<input
					id="quantity"
					type="number"
					min={1}
					max={MAX_QUANTITY}
					value={quantity}
					onInput={e =>
						setQuantity(Math.max(1, Number((e.target as HTMLInputElement).value) || 1))
					}
				/>
				<button type="submit" disabled={available === 0}>
					Add to cart
				</button>
			</form>
			{added && (
				<p class="message message-ok" role="status">
					{added} <Link href="/cart">Go to the cart</Link>
				</p>
			)}
		</article>
	);
}
