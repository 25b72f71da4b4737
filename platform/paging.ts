/**
 * Paging of list actions: the `page` / `pageSize` parameters (fastest-validator rules, the same
 * for every list of the shop), the offset they give, and the `Page<T>` answer shape
 * (`{ rows, total, page, pageSize, totalPages }`, docs/CONTRACT.md). Offset paging, as
 * moleculer-db's own `list` action pages (`page`, `pageSize`, `totalPages`).
 */

/** Largest `page` accepted. */
export const MAX_PAGE = 100_000;
/** Largest `pageSize` accepted. */
export const MAX_PAGE_SIZE = 100;
/** `pageSize` when the caller gives none. */
export const DEFAULT_PAGE_SIZE = 20;

/**
 * The `page` (from 1, default 1) and `pageSize` (1 to 100, default 20) rules of a list action's
 * `params`; strings are converted (REST query strings). Spread them first into the params.
 */
export const pageParams = {
	page: { type: "number", integer: true, min: 1, max: MAX_PAGE, convert: true, default: 1 },
	pageSize: {
		type: "number",
		integer: true,
		min: 1,
		max: MAX_PAGE_SIZE,
		convert: true,
		default: DEFAULT_PAGE_SIZE
	}
} as const;

/** The validated paging parameters. */
export interface PageQuery {
	/** From 1. */
	page: number;
	/** Rows per page. */
	pageSize: number;
}

/** A page of results. */
export interface Page<T> {
	rows: T[];
	/** Rows in all pages. */
	total: number;
	page: number;
	pageSize: number;
	totalPages: number;
}

/** Rows before the page: the SQL `OFFSET`. */
export function pageOffset(q: PageQuery): number {
	return (q.page - 1) * q.pageSize;
}

/** The answer of a list action: `rows` of page `q` out of `total` rows. */
export function toPage<T>(rows: T[], total: number, q: PageQuery): Page<T> {
	return {
		rows,
		total,
		page: q.page,
		pageSize: q.pageSize,
		totalPages: Math.ceil(total / q.pageSize)
	};
}
