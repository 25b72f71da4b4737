/**
 * `users`: accounts and authentication.
 *
 * Passwords are hashed with Argon2id (OWASP's m = 19 MiB, t = 2, p = 1) in a bounded pool
 * (services/users/password-hasher.ts: `PASSWORD_HASH_*` settings; over its limits 429 `USERS_BUSY`); hashes
 * of other parameters (the former library defaults) still verify and are replaced on the next
 * successful login. Access tokens are HS256 JWTs (`jsonwebtoken`) signed with `JWT_SECRET`,
 * verified with the algorithm pinned (so `alg: none` and RS/HS confusion are refused). Roles:
 * `customer`, `admin`.
 * On first start the administrator `ADMIN_EMAIL` is seeded (password `ADMIN_PASSWORD`, or a
 * generated one printed once).
 *
 * Passwords follow platform/security/password-policy.ts (10 to 256 characters, not the e-mail, not a common
 * password). Failed logins, and sign-ups of an e-mail that is already registered, are counted
 * per account and per client address (`ctx.meta.clientIp`, set by the gateway) by
 * services/users/login-throttle.ts, in Redis when `CACHER` is set; so are successful logins, over a window of
 * their own (`LOGIN_MAX_PER_ACCOUNT` / `LOGIN_MAX_PER_IP` per `LOGIN_RATE_WINDOW_MS`). Over the
 * limits a login or sign-up is refused with 429 `AUTH_LOGIN_THROTTLED` (`data.retryAfter`, s)
 * before the database is asked and the password hashed.
 *
 * One person, one account: every account has its e-mail's identity key
 * (services/users/email-identity.ts: NFKC and case folding, invisible characters refused, the
 * domain's IDNA ASCII form without a trailing dot, UTS #39 look-alikes mapped), unique in the
 * database; a sign-up whose key is taken is the same 409 `USERS_EMAIL_TAKEN` as an exact
 * duplicate, and a login with any form mapping to an account's key is a login of that account.
 * Login throttling counts per key, so typing another form of an address does not reset it.
 *
 * Data access: moleculer-db's public API with its Sequelize adapter (`this.adapter.findById`,
 * `find`, `count`, `insert`, `updateMany`; answers through `transformDocuments` and the `fields`
 * setting, so the password hash and the identity key never leave the service). A login reads its
 * account in one statement. No account is changed or deleted through the API, so nothing cached
 * (only `resolveToken`'s answers) needs cleaning: no `entityChanged` here. The identity conflicts
 * report is SQL of its own (./users.repo.ts).
 *
 * Events emitted: `user.registered` `{ id, email, name, role }`.
 */
import crypto from "node:crypto";
import jwt from "jsonwebtoken";
import type { Context, Service } from "moleculer";
import { UniqueConstraintError } from "sequelize";
import { config, ConfigError, requireJwtSecret } from "../../platform/config";
import type { ShopContext, ShopServiceSchema } from "../../platform/context";
import { shopError } from "../../platform/errors";
import {
	PASSWORD_MAX_LENGTH,
	PASSWORD_MIN_LENGTH,
	describeWeaknesses,
	passwordWeaknesses
} from "../../platform/security/password-policy";
import { DbMixin, type DbMixinMethods } from "../../mixins/db.mixin";
import { emailIdentityKey, emailIdentityKeyOrNull } from "./email-identity";
import { LoginThrottle, type ThrottleBlock } from "./login-throttle";
import { usersMigrations } from "./migrations";
import { PasswordHasher } from "./password-hasher";
import type { AuthResult, PublicUser } from "./users.model";
import {
	accountFor,
	accountsOf,
	defineModels,
	PUBLIC_USER_FIELDS,
	UsersRepo,
	type AccountsDb,
	type UserRow,
	type UsersModels
} from "./users.repo";

interface UsersMethods {
	publicUser(id: string, ctx: Context): Promise<PublicUser | null>;
	findAccount(email: string, emailKey: string | null): Promise<UserRow | null>;
	throttled(block: ThrottleBlock, what: string): Error;
	hashPassword(password: string): Promise<string>;
	rehashIfOutdated(row: UserRow, password: string): Promise<void>;
	issueToken(user: PublicUser): string;
	createUser(
		email: string,
		password: string,
		name: string,
		role: "customer" | "admin",
		ctx?: Context
	): Promise<PublicUser>;
	seedAdministrator(): Promise<void>;
	reportIdentityConflicts(): Promise<void>;
}
type UsersThis = Service &
	DbMixinMethods<UsersModels> &
	AccountsDb &
	UsersMethods & {
		/** The accounts' one hand-written query (`identityConflicts`). */
		repo: UsersRepo;
		dummyHash: Promise<string>;
		loginThrottle: LoginThrottle;
		passwordHasher: PasswordHasher;
	};

const emailRule = { type: "email", normalize: true, max: 254 } as const;

/** SHA-256 (base64url) of a bearer token: what `resolveToken`'s cache key holds instead of it. */
export function tokenDigest(token: unknown): string {
	return crypto.createHash("sha256").update(String(token)).digest("base64url");
}

const UsersService: ShopServiceSchema<UsersThis> = {
	name: "users",
	mixins: [
		DbMixin({
			service: "users",
			migrations: usersMigrations,
			models: defineModels,
			mainModel: "User"
		})
	],

	settings: {
		/** moleculer-db: the fields of every answer (`transformDocuments`). */
		fields: [...PUBLIC_USER_FIELDS]
	},

	actions: {
		/**
		 * Registers a customer. A registered e-mail, or any address with the same identity key
		 * (services/users/email-identity.ts), is refused before the password is hashed (the
		 * answer is the same 409 as the unique constraints', which stay the final arbiter), and
		 * counted like a failed login of that key from the client's address
		 * (`ctx.meta.clientIp`), so repeating it is throttled as guessing is.
		 * @param email - unique by its identity key (stored lower-case as typed)
		 * @param password - 10 to 256 characters (else VALIDATION_ERROR), not the e-mail nor a
		 *   common password (else USERS_PASSWORD_WEAK): platform/security/password-policy.ts
		 * @param name - 1 to 100 characters
		 * @returns 201 `{ user: { id, email, name, role: "customer" }, token }`
		 * @throws USERS_EMAIL_TAKEN (409), VALIDATION_ERROR (422), USERS_EMAIL_INVALID (422,
		 *   `data.reason`: `INVISIBLE_CHARACTER`, `UNSUPPORTED_CHARACTER`, `MALFORMED_ADDRESS`,
		 *   `INVALID_DOMAIN`; `data.character` e.g. `U+200B`), USERS_PASSWORD_WEAK (422,
		 *   `data.reasons`: `SAME_AS_EMAIL`, `COMMON`), USERS_BUSY (429, `Retry-After`) when the
		 *   password hashing pool is full, AUTH_LOGIN_THROTTLED (429, `data.retryAfter` in
		 *   seconds) while the e-mail or the address has `LOGIN_MAX_FAILURES_PER_*` failed logins
		 *   and sign-ups of registered e-mails (services/users/login-throttle.ts)
		 * @emits user.registered
		 */
		register: {
			// Not retried by a caller's broker: a retry after a lost answer would fail as a duplicate.
			retryPolicy: { enabled: false },
			params: {
				$$strict: true,
				email: emailRule,
				password: { type: "string", min: PASSWORD_MIN_LENGTH, max: PASSWORD_MAX_LENGTH },
				name: { type: "string", trim: true, min: 1, max: 100 }
			},
			async handler(
				this: UsersThis,
				ctx: ShopContext<{ email: string; password: string; name: string }>
			): Promise<AuthResult> {
				const email = ctx.params.email.toLowerCase();
				const emailKey = emailIdentityKey(email);
				const reasons = passwordWeaknesses(ctx.params.password, ctx.params.email);
				if (reasons.length > 0)
					throw shopError("USERS_PASSWORD_WEAK", describeWeaknesses(reasons), {
						reasons
					});
				const ip = typeof ctx.meta.clientIp === "string" ? ctx.meta.clientIp : null;
				const block = await this.loginThrottle.checkFailures(emailKey, ip);
				if (block) throw this.throttled(block, "attempts for this e-mail or address");
				// A taken e-mail is answered before the costly hash (the same 409 as the unique
				// index's, which stays the final arbiter for two sign-ups racing), and counted.
				let user: PublicUser;
				try {
					if ((await this.adapter.count({ query: accountsOf(email, emailKey) })) > 0)
						throw shopError("USERS_EMAIL_TAKEN");
					user = await this.createUser(
						ctx.params.email,
						ctx.params.password,
						ctx.params.name,
						"customer",
						ctx
					);
				} catch (err) {
					if ((err as { type?: unknown }).type === "USERS_EMAIL_TAKEN")
						await this.loginThrottle.failed(emailKey, ip);
					throw err;
				}
				ctx.meta.$statusCode = 201;
				await ctx.emit("user.registered", user);
				return { user, token: this.issueToken(user) };
			}
		},

		/**
		 * Exchanges credentials for a token. Failures are counted per account and per client
		 * address (`ctx.meta.clientIp`, from the gateway); unknown e-mails are counted like known
		 * ones, so neither the answers nor the throttling tell which accounts exist. Successes are
		 * counted too, per account and per address over `LOGIN_RATE_WINDOW_MS`. A stored hash
		 * made with older parameters is replaced by one with the current ones after a successful
		 * login (argon2's `needsRehash`). The e-mail names the account whose address it is exactly,
		 * else the one with its identity key (any form mapping to it: `ＡＮＮ@example.com.` logs in
		 * `ann@example.com`); counts are per key.
		 * @returns `{ user, token }`
		 * @throws USERS_INVALID_CREDENTIALS (401) for an unknown e-mail (an address with no
		 *   identity key included) or a wrong password alike;
		 *   AUTH_LOGIN_THROTTLED (429, `data.retryAfter` in seconds) while the account or the
		 *   address is blocked for failures (`LOGIN_MAX_FAILURES_*`, `LOGIN_BLOCK_MS`) or has had
		 *   `LOGIN_MAX_PER_ACCOUNT` / `LOGIN_MAX_PER_IP` successful logins in the current window,
		 *   whatever the password; USERS_BUSY (429, `Retry-After`, not counted as a failure) when
		 *   the password hashing pool is full
		 */
		login: {
			// Never retried by the broker: a timed-out login would hash again exactly when the
			// node is overloaded. A client that gets 429 USERS_BUSY retries after Retry-After.
			retryPolicy: { enabled: false },
			params: {
				$$strict: true,
				email: emailRule,
				password: { type: "string", min: 1, max: PASSWORD_MAX_LENGTH }
			},
			async handler(
				this: UsersThis,
				ctx: ShopContext<{ email: string; password: string }>
			): Promise<AuthResult> {
				const email = ctx.params.email.toLowerCase();
				const emailKey = emailIdentityKeyOrNull(email);
				const account = emailKey ?? email;
				const ip = typeof ctx.meta.clientIp === "string" ? ctx.meta.clientIp : null;
				const block = await this.loginThrottle.check(account, ip);
				if (block)
					throw this.throttled(
						block,
						block.reason === "logins" ? "logins" : "failed logins"
					);
				const data = await this.findAccount(email, emailKey);
				// Verify against a dummy hash when the user is unknown: same cost, no user enumeration.
				const hash = data?.passwordHash ?? (await this.dummyHash);
				const ok = await this.passwordHasher.verify(hash, ctx.params.password);
				if (!data || !ok) {
					await this.loginThrottle.failed(account, ip);
					throw shopError("USERS_INVALID_CREDENTIALS");
				}
				await this.loginThrottle.succeeded(account, ip);
				await this.rehashIfOutdated(data, ctx.params.password);
				const user = this.filterFields(data, PUBLIC_USER_FIELDS) as PublicUser;
				return { user, token: this.issueToken(user) };
			}
		},

		/**
		 * The authenticated caller.
		 * @returns `{ id, email, name, role }`
		 * @throws AUTH_TOKEN_MISSING (401) when called without a user
		 */
		me: {
			params: {},
			async handler(this: UsersThis, ctx: ShopContext): Promise<PublicUser> {
				const me = ctx.meta.user;
				if (!me) throw shopError("AUTH_TOKEN_MISSING");
				const user = await this.publicUser(me.id, ctx);
				if (!user)
					throw shopError("AUTH_TOKEN_INVALID", "The token's user no longer exists");
				return user;
			}
		},

		/**
		 * Resolves a bearer token to its user, for the gateway. Not published over REST.
		 * @param token - the JWT
		 * @returns `{ id, email, name, role }`
		 * @throws AUTH_TOKEN_INVALID (401): bad signature, wrong algorithm, expired, unknown user
		 */
		resolveToken: {
			visibility: "public",
			cache: {
				ttl: 30,
				// Keyed by a SHA-256 of the token, never the token: Moleculer's cachers log their
				// keys at debug level, and in Redis a key name is readable by anyone who can list.
				keygen: (action, _opts, ctx): string =>
					`${String(action.name)}:${tokenDigest((ctx.params as { token?: unknown }).token)}`
			},
			params: { token: { type: "string", min: 1, max: 4096 } },
			async handler(
				this: UsersThis,
				ctx: ShopContext<{ token: string }>
			): Promise<PublicUser> {
				let sub: unknown;
				try {
					const payload = jwt.verify(ctx.params.token, config().jwtSecret, {
						algorithms: ["HS256"],
						issuer: "moleculer-shop"
					});
					sub = typeof payload === "object" ? payload.sub : undefined;
				} catch {
					throw shopError("AUTH_TOKEN_INVALID");
				}
				if (typeof sub !== "string" || !/^[0-9a-f-]{36}$/.test(sub))
					throw shopError("AUTH_TOKEN_INVALID");
				const user = await this.publicUser(sub, ctx);
				if (!user) throw shopError("AUTH_TOKEN_INVALID");
				return user;
			}
		},

		/**
		 * A user by id, for other services (e.g. notifications' recipient). Not published.
		 * @returns `{ id, email, name, role }`
		 * @throws USERS_NOT_FOUND (404)
		 */
		get: {
			visibility: "public",
			params: { id: { type: "uuid" } },
			async handler(this: UsersThis, ctx: ShopContext<{ id: string }>): Promise<PublicUser> {
				const user = await this.publicUser(ctx.params.id, ctx);
				if (!user) throw shopError("USERS_NOT_FOUND");
				return user;
			}
		}
	},

	methods: {
		/**
		 * The account `id` as the API shows it (moleculer-db's `adapter.findById` and
		 * `transformDocuments`), or null.
		 */
		async publicUser(this: UsersThis, id: string, ctx: Context): Promise<PublicUser | null> {
			const doc = await this.adapter.findById(id);
			return doc ? this.transformDocuments(ctx, {}, doc) : null;
		},

		/**
		 * The account a login (or the administrator's seeding) of this e-mail is for, or null: the
		 * one whose address is exactly this (lower-case) e-mail, else the one with this identity
		 * key. One statement (moleculer-db's `adapter.find`, an OR of the two unique columns).
		 */
		async findAccount(
			this: UsersThis,
			email: string,
			emailKey: string | null
		): Promise<UserRow | null> {
			const docs = await this.adapter.find({ query: accountsOf(email, emailKey), limit: 2 });
			const rows = docs.map(d => this.adapter.entityToObject(d));
			return accountFor(rows, email, emailKey);
		},

		/**
		 * The 429 AUTH_LOGIN_THROTTLED of a throttle block; `data.retryAfter` (whole seconds, at
		 * least 1) is what the gateway sends as `Retry-After`.
		 */
		throttled(block: ThrottleBlock, what: string): Error {
			const retryAfter = Math.max(1, Math.ceil(block.retryAfterMs / 1000));
			return shopError(
				"AUTH_LOGIN_THROTTLED",
				`Too many ${what}; try again in ${retryAfter} s.`,
				{ retryAfter }
			);
		},

		/** Argon2id of the password, in the bounded pool; throws USERS_BUSY (429) when full. */
		async hashPassword(this: UsersThis, password: string): Promise<string> {
			return this.passwordHasher.hash(password);
		},

		/**
		 * Replaces `row`'s hash when older parameters made it, after a successful login (so the
		 * password is at hand). Only if the stored hash is still the one just verified; best
		 * effort: a busy pool or a database error leave it for the next login.
		 */
		async rehashIfOutdated(this: UsersThis, row: UserRow, password: string): Promise<void> {
			if (!this.passwordHasher.needsRehash(row.passwordHash)) return;
			try {
				const passwordHash = await this.hashPassword(password);
				// moleculer-db's updateMany: a conditional UPDATE, a no-op if the hash changed meanwhile.
				await this.adapter.updateMany(
					{ id: row.id, passwordHash: row.passwordHash },
					{ passwordHash }
				);
			} catch (err) {
				this.logger.warn(
					`Re-hashing the password of user ${row.id} failed; next login will retry: ${(err as Error).message}`
				);
			}
		},

		issueToken(this: UsersThis, user: PublicUser): string {
			return jwt.sign({ role: user.role }, config().jwtSecret, {
				algorithm: "HS256",
				subject: user.id,
				issuer: "moleculer-shop",
				expiresIn: config().jwtExpiresInSeconds
			});
		},

		/**
		 * Inserts an account with `email`'s identity key (moleculer-db's `adapter.insert`). Not
		 * `entityChanged`: no cached answer can hold an account that did not exist (`resolveToken`
		 * caches only successes), so a sign-up cleans nothing (a clean would drop every cached
		 * token, on every node, at each sign-up).
		 * @throws USERS_EMAIL_INVALID (422) for an address with no key, USERS_EMAIL_TAKEN (409)
		 *   when its address or key is taken, USERS_BUSY (429) from the hashing pool
		 */
		async createUser(
			this: UsersThis,
			email: string,
			password: string,
			name: string,
			role: "customer" | "admin",
			ctx?: Context
		): Promise<PublicUser> {
			const emailKey = emailIdentityKey(email.toLowerCase());
			const passwordHash = await this.hashPassword(password);
			try {
				const doc = await this.adapter.insert({
					id: crypto.randomUUID(),
					email: email.toLowerCase(),
					emailKey,
					name,
					passwordHash,
					role
				});
				return await this.transformDocuments(ctx, {}, doc);
			} catch (err) {
				if (err instanceof UniqueConstraintError) throw shopError("USERS_EMAIL_TAKEN");
				throw err;
			}
		},

		/**
		 * Logs the accounts migration `002-email-identity-key` left without an identity key
		 * (look-alike addresses registered before keys existed: never merged), by id, at every
		 * start until an operator resolves them (table `email_identity_conflicts`).
		 */
		async reportIdentityConflicts(this: UsersThis): Promise<void> {
			const conflicts = await this.repo.identityConflicts();
			if (conflicts.length === 0) return;
			const listed = conflicts
				.slice(0, 20)
				.map(c =>
					c.reason === "LOOK_ALIKE"
						? `${c.userId} (look-alike of ${c.keptUserId ?? "a deleted account"})`
						: `${c.userId} (no key)`
				);
			this.logger.warn(
				`${conflicts.length} account(s) have no e-mail identity key; they log in with their exact address only (table email_identity_conflicts, docs/security.md): ${listed.join(", ")}${conflicts.length > 20 ? ", ..." : ""}`
			);
		},

		/** Creates the administrator once; prints a generated password on that first start. */
		async seedAdministrator(this: UsersThis): Promise<void> {
			const c = config();
			const admin = c.adminEmail.toLowerCase();
			const existing = await this.findAccount(admin, emailIdentityKeyOrNull(admin));
			if (existing) return;
			const announce = (
				this.broker.options as {
					onAdministratorCreated?: (admin: { email: string; password: string }) => void;
				}
			).onAdministratorCreated;
			// A production node on its own would have to log a generated password: refused.
			if (!c.adminPassword && !announce && c.production)
				throw new ConfigError(
					"ADMIN_PASSWORD is required to create the administrator on a production users node (a generated password would have to be written to its log)"
				);
			const password = c.adminPassword ?? crypto.randomBytes(12).toString("base64url");
			try {
				await this.createUser(c.adminEmail, password, "Administrator", "admin");
			} catch (err) {
				if ((err as { type?: string }).type === "USERS_EMAIL_TAKEN") return; // another node won
				throw err;
			}
			if (c.adminPassword) {
				this.logger.info(`Administrator ${c.adminEmail} created (ADMIN_PASSWORD).`);
				return;
			}
			// One process (`npm start`, app/shop.ts): the start script prints the generated
			// password in its summary, and no log line carries it (`npm run cluster` hands its users
			// nodes a generated ADMIN_PASSWORD and prints it itself). A development node on its own
			// has nobody else to tell: its log shows it, once.
			if (announce) {
				announce({ email: c.adminEmail, password });
				this.logger.info(
					`Administrator ${c.adminEmail} created with a generated password (printed by the start script, not logged)`
				);
			} else
				this.logger.warn(
					`Administrator created: ${c.adminEmail} / ${password}  (shown once; set ADMIN_PASSWORD to choose it)`
				);
		}
	},

	created(this: UsersThis): void {
		const c = config();
		this.repo = new UsersRepo(this.db);
		// This node signs and verifies access tokens: in production without JWT_SECRET it refuses
		// to start (ConfigError) instead of answering 500 at the first login.
		requireJwtSecret();
		this.passwordHasher = new PasswordHasher({
			concurrency: c.passwordHashConcurrency,
			maxQueue: c.passwordHashMaxQueue,
			maxWaitMs: c.passwordHashMaxWaitMs
		});
		// Verified against for unknown e-mails: same parameters, so the same cost as a real one.
		this.dummyHash = this.passwordHasher.hash(crypto.randomBytes(16).toString("hex"));
		this.dummyHash.catch(() => undefined);
		this.loginThrottle = new LoginThrottle({
			maxFailuresPerAccount: c.loginMaxFailuresPerAccount,
			maxFailuresPerIp: c.loginMaxFailuresPerIp,
			blockMs: c.loginBlockMs,
			windowMs: c.loginFailureWindowMs,
			maxLoginsPerAccount: c.loginMaxPerAccount,
			maxLoginsPerIp: c.loginMaxPerIp,
			rateWindowMs: c.loginRateWindowMs,
			redisUrl: c.cacher,
			// Deployments (and test runs) sharing one Redis count apart, like their databases.
			keyPrefix: `shop-login:${c.databasePrefix}`,
			logger: this.logger
		});
	},

	async stopped(this: UsersThis): Promise<void> {
		await this.loginThrottle.close();
	},

	async afterConnected(this: UsersThis): Promise<void> {
		await this.reportIdentityConflicts();
		await this.seedAdministrator();
	}
};

export default UsersService;
