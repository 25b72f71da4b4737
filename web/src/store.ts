/** A tiny observable value, and a hook that re-renders a component when it changes. */
import { useEffect, useState } from "preact/hooks";

export interface Store<T> {
	get(): T;
	set(value: T): void;
	subscribe(listener: (value: T) => void): () => void;
}

export function createStore<T>(initial: T): Store<T> {
	let value = initial;
	const listeners = new Set<(value: T) => void>();
	return {
		get: () => value,
		set(next) {
			value = next;
			for (const l of [...listeners]) l(value);
		},
		subscribe(listener) {
			listeners.add(listener);
			return () => listeners.delete(listener);
		}
	};
}

export function useStore<T>(store: Store<T>): T {
	const [value, setValue] = useState(store.get());
	useEffect(() => {
		setValue(store.get());
		return store.subscribe(setValue);
	}, [store]);
	return value;
}

/** Reads JSON from localStorage; `fallback` when missing, unreadable or storage is off. */
export function loadJson<T>(key: string, fallback: T): T {
	try {
		const raw = localStorage.getItem(key);
		return raw === null ? fallback : (JSON.parse(raw) as T);
	} catch {
		return fallback;
	}
}

export function saveJson(key: string, value: unknown): void {
	try {
		if (value === null) localStorage.removeItem(key);
		else localStorage.setItem(key, JSON.stringify(value));
	} catch {
		/* private mode or full: the value lives in memory only */
	}
}
