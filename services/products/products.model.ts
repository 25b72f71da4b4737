/**
 * The products service's public shapes: what other services and the web app may import.
 */

export { DEMO_CATALOG } from "./demo-catalog";
/** A page of results (platform/paging.ts), as `products.list` answers. */
export type { Page } from "../../platform/paging";

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
