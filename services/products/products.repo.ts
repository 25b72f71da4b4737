/**
 * The products database through moleculer-db's Sequelize adapter's model (`Product`, DbMixin's
 * `mainModel`): the catalog's reads and writes, each a method of `ProductsRepo`. The repository
 * pattern of the house style (services/<name>/<name>.repo.ts: all of a service's queries in one
 * file). The outbox insert of a write goes in the same transaction (`t`, passed back to the caller).
 */
import {
	DataTypes,
	Op,
	type Model,
	type ModelStatic,
	type Sequelize,
	type Transaction
} from "sequelize";
import type { PageQuery } from "../../platform/paging";
import { pageOffset } from "../../platform/paging";
import type { Product } from "./products.model";

/** A product as stored. */
export interface ProductRow {
	id: string;
	sku: string;
	name: string;
	description: string;
	price: number;
	currency: string;
	active: boolean;
	createdAt: Date;
	updatedAt: Date;
}

/** What a product's creation sets (the rest comes from the database). */
export type NewProduct = Omit<ProductRow, "createdAt" | "updatedAt">;
/** What `update` may change. */
export type ProductChanges = Partial<Pick<ProductRow, "name" | "description" | "price" | "active">>;

export function defineModels(sequelize: Sequelize): { Product: ModelStatic<Model<ProductRow>> } {
	const Product = sequelize.define<Model<ProductRow>>(
		"Product",
		{
			id: { type: DataTypes.UUID, primaryKey: true },
			sku: { type: DataTypes.TEXT, allowNull: false },
			name: { type: DataTypes.TEXT, allowNull: false },
			description: { type: DataTypes.TEXT, allowNull: false },
			price: { type: DataTypes.INTEGER, allowNull: false },
			currency: { type: DataTypes.CHAR(3), allowNull: false },
			active: { type: DataTypes.BOOLEAN, allowNull: false },
			createdAt: { type: DataTypes.DATE },
			updatedAt: { type: DataTypes.DATE }
		},
		{ tableName: "products" }
	);
	return { Product };
}
export type ProductsModels = ReturnType<typeof defineModels>;

/** A product as the API shows it. */
export function productView(row: ProductRow): Product {
	return {
		id: row.id,
		sku: row.sku,
		name: row.name,
		description: row.description,
		price: row.price,
		currency: row.currency,
		active: row.active,
		createdAt: new Date(row.createdAt).toISOString(),
		updatedAt: new Date(row.updatedAt).toISOString()
	};
}

/** Escapes LIKE wildcards so a search for `50%` matches the text `50%`. */
function likePattern(search: string): string {
	return `%${search.replace(/[\\%_]/g, m => "\\" + m)}%`;
}

export class ProductsRepo {
	constructor(
		private readonly db: Sequelize,
		private readonly models: ProductsModels
	) {}

	/** Runs `work` in one transaction (Sequelize's managed transaction: commit, or rollback). */
	transaction<T>(work: (t: Transaction) => Promise<T>): Promise<T> {
		return this.db.transaction(work);
	}

	/**
	 * One page of the active products by name (then id), optionally those whose name, SKU or
	 * description contains `search` (case-insensitive, literally), and how many there are.
	 */
	async listActive(
		q: PageQuery,
		search: string | undefined
	): Promise<{ rows: Product[]; total: number }> {
		const where: Record<string | symbol, unknown> = { active: true };
		if (search) {
			const p = likePattern(search);
			where[Op.or] = [
				{ name: { [Op.iLike]: p } },
				{ sku: { [Op.iLike]: p } },
				{ description: { [Op.iLike]: p } }
			];
		}
		const { rows, count } = await this.models.Product.findAndCountAll({
			where,
			order: [
				["name", "ASC"],
				["id", "ASC"]
			],
			limit: q.pageSize,
			offset: pageOffset(q)
		});
		return { rows: rows.map(r => productView(r.get({ plain: true }))), total: count };
	}

	/** One product (active or not), or null. */
	async findById(id: string): Promise<Product | null> {
		const row = await this.models.Product.findByPk(id);
		return row ? productView(row.get({ plain: true })) : null;
	}

	/** The products of `ids` found (unknown ids are simply absent). */
	async findByIds(ids: string[]): Promise<Product[]> {
		const rows = await this.models.Product.findAll({
			where: { id: { [Op.in]: ids } }
		});
		return rows.map(r => productView(r.get({ plain: true })));
	}

	/** Inserts a product. @throws Sequelize's UniqueConstraintError for a taken SKU */
	async create(t: Transaction, fields: NewProduct): Promise<Product> {
		const row: Model<ProductRow> = await this.models.Product.create(fields as ProductRow, {
			transaction: t
		});
		return productView(row.get({ plain: true }));
	}

	/**
	 * Changes a product under its row lock (`FOR UPDATE`).
	 * @returns the product before and after, or null when there is none with that id
	 */
	async update(
		t: Transaction,
		id: string,
		changes: ProductChanges
	): Promise<{ before: Product; after: Product } | null> {
		const row = await this.models.Product.findByPk(id, {
			transaction: t,
			lock: t.LOCK.UPDATE
		});
		if (!row) return null;
		const before = productView(row.get({ plain: true }));
		await row.update(changes, { transaction: t });
		return { before, after: productView(row.get({ plain: true })) };
	}

	/**
	 * Inserts the products missing (by SKU: `ignoreDuplicates`); existing ones are left as they are.
	 * @returns how many were inserted
	 */
	async seed(products: readonly Omit<NewProduct, "active">[]): Promise<number> {
		const created = await this.models.Product.bulkCreate(
			products.map(p => ({
				id: p.id,
				sku: p.sku,
				name: p.name,
				description: p.description,
				price: p.price,
				currency: p.currency,
				active: true
			})) as ProductRow[],
			{ ignoreDuplicates: true, returning: ["id"] }
		);
		return created.filter(r => r.get("id") !== null && r.get("id") !== undefined).length;
	}
}
