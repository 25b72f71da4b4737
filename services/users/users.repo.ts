/**
 * The users database as moleculer-db's Sequelize adapter sees it: the `User` model (DbMixin's
 * `mainModel`), the fields an answer shows (moleculer-db's `fields` setting: never the password
 * hash nor the identity key) and the accounts' queries in the adapter's terms. E-mails are stored
 * lower-case as typed (a unique index on them), and each account created since migration 002 has
 * its e-mail's identity key (services/users/email-identity.ts; a unique index on it: one account
 * per key).
 *
 * Also the typings of the moleculer-db methods the service calls. The one statement written by
 * hand, `identityConflicts`, joins `email_identity_conflicts`, a table moleculer-db's
 * single-model adapter does not know.
 */
import type { Context } from "moleculer";
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

/** The fields of a `PublicUser` answer, in moleculer-db's `fields` setting. */
export const PUBLIC_USER_FIELDS: readonly (keyof PublicUser)[] = ["id", "email", "name", "role"];

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

/** An account entity of the adapter (a Sequelize instance of `User`). */
export type UserEntity = Model<UserRow>;

/**
 * moleculer-db's adapter (moleculer-db-adapter-sequelize) and service methods the accounts use,
 * typed for `User` (moleculer-db's own typings declare some results without their Promise).
 */
export interface AccountsDb {
	adapter: {
		find(filters: { query: object; limit?: number }): Promise<UserEntity[]>;
		findById(id: string): Promise<UserEntity | null>;
		count(filters: { query: object }): Promise<number>;
		insert(entity: Omit<UserRow, "createdAt" | "updatedAt">): Promise<UserEntity>;
		updateMany(where: object, update: Partial<UserRow>): Promise<number>;
		entityToObject(entity: UserEntity): UserRow;
	};
	/** `doc` with only `fields` (moleculer-db's field filter, as `transformDocuments` applies it). */
	filterFields(doc: object, fields: readonly string[]): object;
	/** The entity as the API shows it: the `fields` setting (never the hash nor the key). */
	transformDocuments(
		ctx: Context | undefined,
		params: object,
		doc: UserEntity
	): Promise<PublicUser>;
}

/**
 * The accounts with this (lower-case) e-mail or this identity key, as a moleculer-db `query`:
 * at most two rows (both columns are unique), in one statement.
 */
export function accountsOf(email: string, emailKey: string | null): object {
	return emailKey === null ? { email } : { [Op.or]: [{ email }, { emailKey }] };
}

/**
 * The account a login of this e-mail is for, among `accountsOf`'s rows: the one whose address
 * is exactly this (lower-case) e-mail, else the one with this identity key, else null.
 */
export function accountFor(
	rows: readonly UserRow[],
	email: string,
	emailKey: string | null
): UserRow | null {
	return (
		rows.find(r => r.email === email) ??
		(emailKey === null ? undefined : rows.find(r => r.emailKey === emailKey)) ??
		null
	);
}

export class UsersRepo {
	constructor(private readonly db: ShopDatabase) {}

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
}
