/**
 * The users database through moleculer-db's Sequelize adapter's model (`User`, DbMixin's
 * `mainModel`): the accounts' reads and writes, each a method of `UsersRepo`. The repository
 * pattern of the house style (services/<name>/<name>.repo.ts: all of a service's queries in one
 * file). E-mails are stored lower-case as typed (a unique index on them), and each account
 * created since migration 002 has its e-mail's identity key (services/users/email-identity.ts;
 * a unique index on it: one account per key).
 */
import { DataTypes, Op, type Model, type ModelStatic, type Sequelize } from "sequelize";
import { fastQuery, QueryTypes } from "../../platform/db/fast-query";
import type { ShopDatabase } from "../../platform/db/pool";
import type { EmailIdentityConflictReason } from "./migrations";
import type { PublicUser } from "./users.model";

/** A user as stored. */
export interface UserRow {
	id: string;
	email: string;
	/** The e-mail's identity key; null only for accounts of migration 002's conflict report. */
	emailKey: string | null;
	name: string;
	passwordHash: string;
	role: "customer" | "admin";
	createdAt: Date;
	updatedAt: Date;
}

export function defineModels(sequelize: Sequelize): { User: ModelStatic<Model<UserRow>> } {
	const User = sequelize.define<Model<UserRow>>(
		"User",
		{
			id: { type: DataTypes.UUID, primaryKey: true },
			email: { type: DataTypes.TEXT, allowNull: false },
			emailKey: { type: DataTypes.TEXT, allowNull: true },
			name: { type: DataTypes.TEXT, allowNull: false },
			passwordHash: { type: DataTypes.TEXT, allowNull: false },
			role: { type: DataTypes.TEXT, allowNull: false },
			createdAt: { type: DataTypes.DATE },
			updatedAt: { type: DataTypes.DATE }
		},
		{ tableName: "users" }
	);
	return { User };
}
export type UsersModels = ReturnType<typeof defineModels>;

/** A user as the API shows it (never the password hash). */
export function toPublic(row: UserRow): PublicUser {
	return { id: row.id, email: row.email, name: row.name, role: row.role };
}

export class UsersRepo {
	constructor(
		private readonly models: UsersModels,
		private readonly db: ShopDatabase
	) {}

	/** Whether an account has this (lower-case) e-mail or this identity key. */
	async emailTaken(email: string, emailKey: string): Promise<boolean> {
		const row = await this.models.User.findOne({
			where: { [Op.or]: [{ email }, { emailKey }] },
			attributes: ["id"]
		});
		return row !== null;
	}

	/**
	 * The account a login of this e-mail is for, or null: the one whose address is exactly this
	 * (lower-case) e-mail, else the one with this identity key (any form mapping to it).
	 */
	async findByEmail(email: string, emailKey: string | null): Promise<UserRow | null> {
		const exact = await this.models.User.findOne({ where: { email } });
		if (exact) return exact.get({ plain: true });
		if (emailKey === null) return null;
		const row = await this.models.User.findOne({ where: { emailKey } });
		return row ? row.get({ plain: true }) : null;
	}

	/** Accounts left without an identity key by migration 002 (`email_identity_conflicts`). */
	async identityConflicts(): Promise<
		{ userId: string; keptUserId: string | null; reason: EmailIdentityConflictReason }[]
	> {
		const rows = await fastQuery(
			this.db,
			`SELECT c.user_id AS "userId", c.kept_user_id AS "keptUserId", c.reason
			 FROM email_identity_conflicts c JOIN users u ON u.id = c.user_id
			 WHERE u.email_key IS NULL ORDER BY c.found_at, c.user_id`,
			{ type: QueryTypes.SELECT }
		);
		return rows as {
			userId: string;
			keptUserId: string | null;
			reason: EmailIdentityConflictReason;
		}[];
	}

	/** The account of this id, or null. */
	async findById(id: string): Promise<UserRow | null> {
		const row = await this.models.User.findByPk(id);
		return row ? row.get({ plain: true }) : null;
	}

	/**
	 * Inserts an account. @throws Sequelize's UniqueConstraintError for a taken e-mail or
	 * identity key
	 */
	async create(user: Omit<UserRow, "createdAt" | "updatedAt">): Promise<UserRow> {
		const row = await this.models.User.create(user as UserRow);
		return row.get({ plain: true });
	}

	/** Replaces a user's password hash, only if it is still `previousHash`. */
	async replaceHash(id: string, previousHash: string, passwordHash: string): Promise<void> {
		await this.models.User.update(
			{ passwordHash },
			{ where: { id, passwordHash: previousHash } }
		);
	}
}
