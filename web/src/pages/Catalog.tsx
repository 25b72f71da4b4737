import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, type Page, type Product } from "../api";
import { addToCart } from "../cart";
import { money } from "../format";
import { Link, navigate, useLocation } from "../router";
import { ErrorMessage, Loading, PageTitle, Pager, useLoad } from "../ui";

const PAGE_SIZE = 12;

/** `/`: the catalog, searchable (`?search=`), paged (`?page=`). */
export function Catalog(): JSX.Element {
	const { query } = useLocation();
	const search = query.get("search") ?? "";
	const page = Math.max(1, Number(query.get("page")) || 1);
	const [term, setTerm] = useState(search);
	const [added, setAdded] = useState<string | null>(null);
	useEffect(() => setTerm(search), [search]);

	const list = useLoad(
		() =>
			api<Page<Product>>(
				"GET",
				`/products?${new URLSearchParams({
					page: String(page),
					pageSize: String(PAGE_SIZE),
					...(search ? { search } : {})
				}).toString()}`
			),
		[search, page]
	);

	const go = (s: string, p: number): void => {
		const q = new URLSearchParams();
		if (s) q.set("search", s);
		if (p > 1) q.set("page", String(p));
		const qs = q.toString();
		navigate(qs ? `/?${qs}` : "/");
	};

	const onSubmit = (e: Event): void => {
		e.preventDefault();
		go(term.trim(), 1);
	};

	return (
		<section>
			<PageTitle>{search ? `Results for “${search}”` : "Catalog"}</PageTitle>
			<form role="search" class="search" onSubmit={onSubmit}>
				<label for="search">Search products</label>
				<div class="row">
					<input
						id="search"
						name="search"
						type="search"
						value={term}
						onInput={e => setTerm((e.target as HTMLInputElement).value)}
						placeholder="keyboard, mug, …"
						autocomplete="off"
					/>
					<button type="submit">Search</button>
				</div>
			</form>
			<ErrorMessage error={list.error} />
			{list.data === null ? (
				list.loading && <Loading what="products" />
			) : (
				<>
					<p class="muted" aria-live="polite">
						{list.data.total === 1 ? "1 product" : `${list.data.total} products`}
						{search && list.data.total === 0 ? ". Try another word." : ""}
					</p>
					<ul class="product-grid">
						{list.data.rows.map(p => (
							<li class="card product-card" key={p.id}>
								<h2>
									<Link href={`/products/${p.id}`}>{p.name}</Link>
								</h2>
								<p class="description">{p.description}</p>
								<p class="price">{money(p.price, p.currency)}</p>
								<button
									type="button"
									onClick={() => {
										addToCart(p);
										setAdded(p.name);
									}}
									aria-label={`Add ${p.name} to cart`}
								>
									Add to cart
								</button>
							</li>
						))}
					</ul>
					<p class="sr-only" role="status">
						{added ? `${added} added to the cart.` : ""}
					</p>
					<Pager
						page={list.data.page}
						totalPages={list.data.totalPages}
						onPage={p => go(search, p)}
						label="Catalog pages"
					/>
				</>
			)}
		</section>
	);
}
