/**
 * The products service's public shapes: what other services and the web app may import.
 */

export { DEMO_CATALOG } from "./demo-catalog";

/** A product as the API shows it. */
export interface Product {
	id: string;
	sku: string;
	name: string;
	description: string;
	/** Integer cents. */
	price: number;
	/** ISO 4217 code, e.g. `USD`. */
	currency: string;
	active: boolean;
	createdAt: string;
	updatedAt: string;
}

/** A page of results. */
export interface Page<T> {
	rows: T[];
	total: number;
	page: number;
	pageSize: number;
	totalPages: number;
}
