/**
 * The web app: the storefront (catalog, product pages with live stock, cart, checkout, live order
 * pages, order history, notifications) and, at /admin, the operations dashboard.
 */
import type { JSX } from "preact";
import { render } from "preact";
import { useEffect } from "preact/hooks";
import { logout, session } from "./api";
import { cart, cartCount } from "./cart";
import { AdminPage } from "./pages/Admin";
import { AuthPage } from "./pages/Auth";
import { CartPage } from "./pages/Cart";
import { Catalog } from "./pages/Catalog";
import { OrderPage } from "./pages/Order";
import { NotificationsPage, OrdersPage } from "./pages/Orders";
import { ProductPage } from "./pages/Product";
import { Link, match, navigate, useLocation } from "./router";
import { useStore } from "./store";
import { PageTitle } from "./ui";
import "./styles.css";

function NeedsLogin({ path }: { path: string }): JSX.Element {
	return (
		<section>
			<PageTitle>Please log in</PageTitle>
			<p>
				<Link href={`/login?next=${encodeURIComponent(path)}`}>Log in</Link> to see this
				page.
			</p>
		</section>
	);
}

function Page({ path }: { path: string }): JSX.Element {
	const user = useStore(session);
	let m: Record<string, string> | null;
	if (path === "/") return <Catalog />;
	if ((m = match("/products/:id", path))) return <ProductPage id={m.id!} />;
	if (path === "/cart") return <CartPage />;
	if (path === "/login") return <AuthPage mode="login" />;
	if (path === "/register") return <AuthPage mode="register" />;
	if (path === "/admin") return <AdminPage />;
	if (!user && (path === "/orders" || path === "/notifications" || path.startsWith("/orders/")))
		return <NeedsLogin path={path} />;
	if (path === "/orders") return <OrdersPage />;
	if ((m = match("/orders/:id", path))) return <OrderPage id={m.id!} />;
	if (path === "/notifications") return <NotificationsPage />;
	return (
		<section>
			<PageTitle>Not found</PageTitle>
			<p>
				There is no page here. <Link href="/">Back to the catalog</Link>.
			</p>
		</section>
	);
}

const TITLES: [RegExp, string][] = [
	[/^\/$/, "Catalog"],
	[/^\/products\//, "Product"],
	[/^\/cart$/, "Cart"],
	[/^\/login$/, "Log in"],
	[/^\/register$/, "Register"],
	[/^\/orders$/, "Your orders"],
	[/^\/orders\//, "Order"],
	[/^\/notifications$/, "Notifications"],
	[/^\/admin$/, "Operations"]
];

function App(): JSX.Element {
	const { path } = useLocation();
	const user = useStore(session);
	const lines = useStore(cart);
	const count = cartCount(lines);

	useEffect(() => {
		const t = TITLES.find(([re]) => re.test(path))?.[1] ?? "Not found";
		document.title = `${t} · moleculer-shop`;
		// After navigating, the new page's heading takes the focus (announced by screen readers).
		const h1 = document.querySelector<HTMLElement>("main h1");
		if (h1 && document.activeElement !== document.body) h1.focus();
	}, [path]);

	return (
		<>
			<a class="skip-link" href="#main">
				Skip to content
			</a>
			<header class="site-header">
				<nav aria-label="Main" class="nav">
					<Link href="/" class="brand">
						moleculer-shop
					</Link>
					<ul>
						<li>
							<Link href="/">Catalog</Link>
						</li>
						<li>
							<Link href="/cart" aria-label={`Cart, ${count} items`}>
								Cart <span class="chip">{count}</span>
							</Link>
						</li>
						{user && (
							<li>
								<Link href="/orders">Orders</Link>
							</li>
						)}
						{user && (
							<li>
								<Link href="/notifications">Notifications</Link>
							</li>
						)}
						{user?.user.role === "admin" && (
							<li>
								<Link href="/admin">Operations</Link>
							</li>
						)}
						{user ? (
							<li>
								<button
									type="button"
									class="link-button"
									onClick={() => {
										logout();
										navigate("/");
									}}
								>
									Log out <span class="muted-inverse">({user.user.name})</span>
								</button>
							</li>
						) : (
							<>
								<li>
									<Link href="/login">Log in</Link>
								</li>
								<li>
									<Link href="/register">Register</Link>
								</li>
							</>
						)}
					</ul>
				</nav>
			</header>
			<main id="main" class={path === "/admin" ? "wide" : undefined}>
				<Page path={path} />
			</main>
			<footer class="site-footer">
				<p>A demo shop on Moleculer. Payments are simulated: use the test card tokens.</p>
			</footer>
		</>
	);
}

render(<App />, document.getElementById("app")!);
