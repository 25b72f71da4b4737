/** The cart, kept in localStorage (it survives a reload; nothing is reserved until checkout). */
import type { Product } from "./api";
import { createStore, loadJson, saveJson } from "./store";

export interface CartLine {
	productId: string;
	name: string;
	/** Integer cents, as listed when added (the order is priced by the shop at checkout). */
	price: number;
	currency: string;
	quantity: number;
}

const KEY = "shop.cart";
export const MAX_QUANTITY = 1000;

export const cart = createStore<CartLine[]>(loadJson<CartLine[]>(KEY, []));
cart.subscribe(lines => saveJson(KEY, lines));

const clamp = (n: number): number => Math.max(1, Math.min(MAX_QUANTITY, Math.floor(n) || 1));

export function addToCart(p: Product, quantity = 1): void {
	const lines = cart.get();
	const found = lines.find(l => l.productId === p.id);
	if (found)
		cart.set(
			lines.map(l =>
				l.productId === p.id ? { ...l, quantity: clamp(l.quantity + quantity) } : l
			)
		);
	else
		cart.set([
			...lines,
			{
				productId: p.id,
				name: p.name,
				price: p.price,
				currency: p.currency,
				quantity: clamp(quantity)
			}
		]);
}

export function setQuantity(productId: string, quantity: number): void {
	cart.set(
		cart.get().map(l => (l.productId === productId ? { ...l, quantity: clamp(quantity) } : l))
	);
}

export function removeFromCart(productId: string): void {
	cart.set(cart.get().filter(l => l.productId !== productId));
}

export function clearCart(): void {
	cart.set([]);
}

export const cartCount = (lines: CartLine[]): number => lines.reduce((n, l) => n + l.quantity, 0);
