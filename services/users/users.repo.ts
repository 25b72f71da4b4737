/**
 * The users database through moleculer-db's Sequelize adapter's model (`User`, DbMixin's
 * `mainModel`): the accounts' reads and writes, each a method of `UsersRepo`. The repository
 * pattern of the house style (services/<name>/<name>.repo.ts: all of a service's queries in one
 * file). E-mails are stored lower-case (a unique index on them).
 */
import { DataTypes, type Model, type ModelStatic, type Sequelize } from "sequelize";
import type { PublicUser } from "./users.model";

/** A user as stored. */
export interface UserRow {
	id: string;
	email: string;
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
	constructor(private readonly models: UsersModels) {}

	/** Whether an account has this (lower-case) e-mail. */
	async emailTaken(email: string): Promise<boolean> {
		return (await this.models.User.findOne({ where: { email }, attributes: ["id"] })) !== null;
	}

	/** The account of this (lower-case) e-mail, or null. */
	async findByEmail(email: string): Promise<UserRow | null> {
		const row = await this.models.User.findOne({ where: { email } });
		return row ? row.get({ plain: true }) : null;
	}

	/** The account of this id, or null. */
	async findById(id: string): Promise<UserRow | null> {
		const row = await this.models.User.findByPk(id);
		return row ? row.get({ plain: true }) : null;
	}

	/** Inserts an account. @throws Sequelize's UniqueConstraintError for a taken e-mail */
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
