/** A small history router: the path is a store, links push to it, the back button pops it. */
import type { ComponentChildren, JSX } from "preact";
import { createStore, useStore } from "./store";

const current = (): string => window.location.pathname + window.location.search;

export const location = createStore(current());
window.addEventListener("popstate", () => location.set(current()));

export function navigate(to: string, opts: { replace?: boolean } = {}): void {
	if (opts.replace) history.replaceState(null, "", to);
	else history.pushState(null, "", to);
	location.set(current());
	window.scrollTo(0, 0);
}

export function useLocation(): { path: string; query: URLSearchParams } {
	const href = useStore(location);
	const url = new URL(href, window.location.origin);
	return { path: url.pathname, query: url.searchParams };
}

/** `/orders/:id` against `/orders/42` gives `{ id: "42" }`; null when it does not match. */
export function match(pattern: string, path: string): Record<string, string> | null {
	const a = pattern.split("/").filter(Boolean);
	const b = path.split("/").filter(Boolean);
	if (a.length !== b.length) return null;
	const params: Record<string, string> = {};
	for (let i = 0; i < a.length; i++) {
		const p = a[i]!;
		if (p.startsWith(":")) params[p.slice(1)] = decodeURIComponent(b[i]!);
		else if (p !== b[i]) return null;
	}
	return params;
}

interface LinkProps {
	href: string;
	children: ComponentChildren;
	class?: string;
	"aria-label"?: string;
}

/** An anchor that navigates in the app (a modified click still opens a new tab). */
export function Link({ href, children, ...rest }: LinkProps): JSX.Element {
	const { path } = useLocation();
	const onClick = (e: MouseEvent): void => {
		if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
		e.preventDefault();
		navigate(href);
	};
	const active = path === href.split("?")[0];
	return (
		<a href={href} onClick={onClick} aria-current={active ? "page" : undefined} {...rest}>
			{children}
		</a>
	);
}
