/** Shared pieces: data loading hooks, status badges, messages. */
import type { ComponentChildren, JSX } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api";
import { STATUS_LABELS } from "./format";

export interface Loaded<T> {
	data: T | null;
	error: ApiError | null;
	loading: boolean;
	reload(): void;
}

/**
 * Loads `fn()` when `deps` change, and again every `intervalMs` (if given) while the page is
 * visible. Keeps the last data while reloading.
 */
export function useLoad<T>(fn: () => Promise<T>, deps: unknown[], intervalMs?: number): Loaded<T> {
	const [data, setData] = useState<T | null>(null);
	const [error, setError] = useState<ApiError | null>(null);
	const [loading, setLoading] = useState(true);
	const [tick, setTick] = useState(0);
	const fnRef = useRef(fn);
	fnRef.current = fn;
	useEffect(() => {
		let live = true;
		setLoading(true);
		fnRef.current().then(
			d => {
				if (!live) return;
				setData(d);
				setError(null);
				setLoading(false);
			},
			(e: unknown) => {
				if (!live) return;
				setError(
					e instanceof ApiError
						? e
						: new ApiError(0, "ERROR", String((e as Error)?.message))
				);
				setLoading(false);
			}
		);
		return () => {
			live = false;
		};
	}, [...deps, tick]);
	useEffect(() => {
		if (!intervalMs) return;
		const t = setInterval(() => {
			if (document.visibilityState === "visible") setTick(n => n + 1);
		}, intervalMs);
		return () => clearInterval(t);
	}, [intervalMs]);
	const reload = useCallback(() => setTick(n => n + 1), []);
	return { data, error, loading, reload };
}

export function StatusBadge({ status }: { status: string }): JSX.Element {
	const tone =
		status === "CONFIRMED" || status === "COMPLETED"
			? "ok"
			: status === "CANCELLED" || status === "FAILED"
				? "bad"
				: status === "COMPENSATED" || status === "COMPENSATING"
					? "warn"
					: "info";
	return (
		<span class={`badge badge-${tone}`} data-status={status}>
			{STATUS_LABELS[status] ?? status}
		</span>
	);
}

export function ErrorMessage({
	error
}: {
	error: ApiError | null | undefined;
}): JSX.Element | null {
	if (!error) return null;
	return (
		<p class="message message-error" role="alert">
			{error.message}
			{error.type && error.type !== "ERROR" ? (
				<span class="code"> ({error.type})</span>
			) : null}
		</p>
	);
}

export function Loading({ what }: { what: string }): JSX.Element {
	return <p class="muted">Loading {what}…</p>;
}

/** A page's h1; it takes the focus after navigation so screen readers announce the new page. */
export function PageTitle({ children }: { children: ComponentChildren }): JSX.Element {
	return (
		<h1 tabIndex={-1} class="page-title">
			{children}
		</h1>
	);
}

export function Pager({
	page,
	totalPages,
	onPage,
	label
}: {
	page: number;
	totalPages: number;
	onPage(page: number): void;
	label: string;
}): JSX.Element | null {
	if (totalPages <= 1) return null;
	return (
		<nav class="pager" aria-label={label}>
			<button type="button" disabled={page <= 1} onClick={() => onPage(page - 1)}>
				Previous
			</button>
			<span>
				Page {page} of {totalPages}
			</span>
			<button type="button" disabled={page >= totalPages} onClick={() => onPage(page + 1)}>
				Next
			</button>
		</nav>
	);
}
