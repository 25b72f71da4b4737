import crypto from "node:crypto";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import argon2 from "argon2";
import jwt from "jsonwebtoken";
import type { ServiceBroker } from "moleculer";
import type { Model, ModelStatic } from "sequelize";
import { config, resetConfig } from "../../platform/config";
import type { AuthUser, ShopMeta } from "../../platform/context";
import { customer, startTestBroker, type TestBroker } from "../support/broker";

interface AuthResult {
	user: AuthUser;
	token: string;
}

const b64url = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString("base64url");

/** The Argon2 variant and parameters of a PHC string (`$argon2id$v=19$m=..,t=..,p=..$...`). */
function hashParams(phc: string): { type: string; m: number; t: number; p: number } {
	const [, type, , params] = phc.split("$");
	const kv = Object.fromEntries(
		(params ?? "").split(",").map(pair => pair.split("=") as [string, string])
	);
	return { type: type ?? "", m: Number(kv.m), t: Number(kv.t), p: Number(kv.p) };
}
/** services/users/password-hasher.ts: Argon2id with the OWASP parameters. */
const CURRENT = { type: "argon2id", m: 19_456, t: 2, p: 1 };

/** The users service's internals the tests look at (its model and password hasher). */
interface UsersInternals {
	models: { User: ModelStatic<Model<{ id: string; email: string; passwordHash: string }>> };
	passwordHasher: { hash(password: string): Promise<string> };
	dummyHash: Promise<string>;
}
const internals = (broker: ServiceBroker): UsersInternals =>
	broker.getLocalService("users") as unknown as UsersInternals;
const storedHash = async (broker: ServiceBroker, email: string): Promise<string> => {
	const row = await internals(broker).models.User.findOne({
		where: { email: email.toLowerCase() }
	});
	return row!.get("passwordHash") as string;
};

describe("users", () => {
	let t: TestBroker;
	let broker: ServiceBroker;
	const email = (tag: string): string =>
		`${tag}-${crypto.randomBytes(4).toString("hex")}@example.com`;

	beforeAll(async () => {
		t = await startTestBroker(["users"]);
		broker = t.broker;
	});
	afterAll(async () => t?.stop());

	function register(params: Record<string, unknown>, meta: ShopMeta = {}): Promise<AuthResult> {
		return broker.call("users.register", params, { meta });
	}

	describe("register", () => {
		it("creates a customer with a lower-cased e-mail, answers 201 with user and token", async () => {
			const meta: ShopMeta = {};
			const mixed = email("Mixed.Case").replace("example.com", "Example.COM");
			const res = await register(
				{ email: mixed, password: "password-123", name: "  Ada  " },
				meta
			);
			expect(meta.$statusCode).toBe(201);
			expect(Object.keys(res).sort()).toEqual(["token", "user"]);
			expect(res.user).toEqual({
				id: expect.stringMatching(/^[0-9a-f-]{36}$/),
				email: mixed.toLowerCase(),
				name: "Ada",
				role: "customer"
			});
			expect(Object.keys(res.user).sort()).toEqual(["email", "id", "name", "role"]);
			expect(JSON.stringify(res)).not.toMatch(/password|argon2/i);
			const claims = jwt.verify(res.token, config().jwtSecret, {
				algorithms: ["HS256"]
			}) as jwt.JwtPayload;
			expect(claims.sub).toBe(res.user.id);
			expect(claims.role).toBe("customer");
			expect(claims.exp).toBeGreaterThan(Date.now() / 1000);
		});

		it("refuses a registered e-mail, also in another case, with USERS_EMAIL_TAKEN 409", async () => {
			const e = email("dup");
			await register({ email: e, password: "password-123", name: "First" });
			await expect(
				register({ email: e, password: "password-456", name: "Second" })
			).rejects.toMatchObject({
				type: "USERS_EMAIL_TAKEN",
				code: 409
			});
			await expect(
				register({ email: e.toUpperCase(), password: "password-456", name: "Third" })
			).rejects.toMatchObject({ type: "USERS_EMAIL_TAKEN", code: 409 });
			// The first account is untouched: its password still works.
			await expect(
				broker.call("users.login", { email: e, password: "password-123" })
			).resolves.toMatchObject({
				user: { name: "First" }
			});
		});

		it.each([
			[
				"a bad e-mail",
				{ email: "not-an-email", password: "password-123", name: "X" },
				"email"
			],
			[
				"a short password",
				{ email: "short@example.com", password: "1234567", name: "X" },
				"password"
			],
			["a missing name", { email: "noname@example.com", password: "password-123" }, "name"],
			[
				"an empty name",
				{ email: "empty@example.com", password: "password-123", name: "   " },
				"name"
			]
		])(
			"rejects %s with VALIDATION_ERROR 422 naming the field",
			async (_label, params, field) => {
				await expect(register(params)).rejects.toMatchObject({
					type: "VALIDATION_ERROR",
					code: 422,
					data: expect.arrayContaining([expect.objectContaining({ field })])
				});
			}
		);

		it("rejects an unknown extra field ($$strict) with VALIDATION_ERROR 422 naming it", async () => {
			const e = email("strict");
			await expect(
				register({ email: e, password: "password-123", name: "X", role: "admin" })
			).rejects.toMatchObject({
				type: "VALIDATION_ERROR",
				code: 422,
				data: [expect.objectContaining({ type: "objectStrict", actual: "role" })]
			});
			// Nothing was created: the e-mail is still free, and as a customer.
			await expect(
				register({ email: e, password: "password-123", name: "X" })
			).resolves.toMatchObject({
				user: { role: "customer" }
			});
		});

		it("reports every offending field at once", async () => {
			const err = await register({ email: "nope", password: "short" }).catch(
				(e: unknown) => e
			);
			expect(err).toMatchObject({ type: "VALIDATION_ERROR", code: 422 });
			const fields = (err as { data: { field: string }[] }).data.map(d => d.field);
			expect(fields).toEqual(expect.arrayContaining(["email", "password", "name"]));
		});
	});

	describe("login", () => {
		const e = email("login");
		let registered: AuthResult;
		beforeAll(async () => {
			registered = await register({ email: e, password: "correct-horse", name: "Login" });
		});

		it("answers user and a token that resolves to the same user", async () => {
			const res: AuthResult = await broker.call("users.login", {
				email: e.toUpperCase(),
				password: "correct-horse"
			});
			expect(res.user).toEqual(registered.user);
			await expect(broker.call("users.resolveToken", { token: res.token })).resolves.toEqual(
				registered.user
			);
		});

		it("answers USERS_INVALID_CREDENTIALS 401 for a wrong password and an unknown e-mail alike", async () => {
			const wrong = await broker
				.call("users.login", { email: e, password: "wrong-horse" })
				.catch((err: unknown) => err);
			const unknown = await broker
				.call("users.login", { email: email("nobody"), password: "correct-horse" })
				.catch((err: unknown) => err);
			expect(wrong).toMatchObject({ type: "USERS_INVALID_CREDENTIALS", code: 401 });
			expect(unknown).toMatchObject({ type: "USERS_INVALID_CREDENTIALS", code: 401 });
			expect((wrong as Error).message).toBe((unknown as Error).message);
		});

		it("logs in the seeded administrator with ADMIN_PASSWORD, role admin", async () => {
			const res: AuthResult = await broker.call("users.login", {
				email: "admin@example.com",
				password: "admin-password-1"
			});
			expect(res.user).toMatchObject({ email: "admin@example.com", role: "admin" });
			await expect(
				broker.call("users.login", {
					email: "admin@example.com",
					password: "admin-password-2"
				})
			).rejects.toMatchObject({ type: "USERS_INVALID_CREDENTIALS" });
		});
	});

	describe("password hashing", () => {
		it("stores a new password as Argon2id with m = 19456 KiB, t = 2, p = 1", async () => {
			const e = email("owasp");
			await register({ email: e, password: "password-123", name: "Owasp" });
			expect(hashParams(await storedHash(broker, e))).toEqual(CURRENT);
		});

		it("verifies unknown e-mails against a dummy hash of the same parameters", async () => {
			expect(hashParams(await internals(broker).dummyHash)).toEqual(CURRENT);
		});

		it("logs in a user whose hash has the former parameters, then stores a current hash", async () => {
			const e = email("legacy");
			const { user } = await register({ email: e, password: "legacy-password", name: "Old" });
			// What the shop stored before: argon2's defaults (m = 64 MiB, t = 3, p = 4).
			const legacy = await argon2.hash("legacy-password", { type: argon2.argon2id });
			expect(hashParams(legacy)).toEqual({ type: "argon2id", m: 65_536, t: 3, p: 4 });
			await internals(broker).models.User.update(
				{ passwordHash: legacy },
				{ where: { id: user.id } }
			);

			await expect(
				broker.call("users.login", { email: e, password: "wrong-password" })
			).rejects.toMatchObject({ type: "USERS_INVALID_CREDENTIALS" });
			expect(await storedHash(broker, e)).toBe(legacy); // a failed login changes nothing

			const res: AuthResult = await broker.call("users.login", {
				email: e,
				password: "legacy-password"
			});
			expect(res.user).toEqual(user);
			const rehashed = await storedHash(broker, e);
			expect(hashParams(rehashed)).toEqual(CURRENT);
			expect(await argon2.verify(rehashed, "legacy-password")).toBe(true);
			// And the new hash works for the next login, and is kept (no re-hash every time).
			await expect(
				broker.call("users.login", { email: e, password: "legacy-password" })
			).resolves.toMatchObject({ user: { id: user.id } });
			expect(await storedHash(broker, e)).toBe(rehashed);
		});

		it("refuses a registered e-mail before hashing the password", async () => {
			const e = email("taken");
			await register({ email: e, password: "password-123", name: "First" });
			const hasher = internals(broker).passwordHasher;
			const spy = jest.spyOn(hasher, "hash");
			try {
				await expect(
					register({ email: e.toUpperCase(), password: "password-456", name: "Again" })
				).rejects.toMatchObject({ type: "USERS_EMAIL_TAKEN", code: 409 });
				expect(spy).not.toHaveBeenCalled();
			} finally {
				spy.mockRestore();
			}
		});
	});

	describe("me", () => {
		it("answers the caller from the database", async () => {
			const { user } = await register({
				email: email("me"),
				password: "password-123",
				name: "Me"
			});
			await expect(broker.call("users.me", {}, { meta: { user } })).resolves.toEqual(user);
		});

		it("answers AUTH_TOKEN_MISSING 401 without a user", async () => {
			await expect(broker.call("users.me", {})).rejects.toMatchObject({
				type: "AUTH_TOKEN_MISSING",
				code: 401
			});
			await expect(
				broker.call("users.me", {}, { meta: { user: null } })
			).rejects.toMatchObject({
				type: "AUTH_TOKEN_MISSING"
			});
		});

		it("answers AUTH_TOKEN_INVALID 401 when the caller's user does not exist", async () => {
			await expect(
				broker.call("users.me", {}, { meta: { user: customer() } })
			).rejects.toMatchObject({
				type: "AUTH_TOKEN_INVALID",
				code: 401
			});
		});
	});

	describe("resolveToken", () => {
		let user: AuthUser;
		let token: string;
		beforeAll(async () => {
			({ user, token } = await register({
				email: email("tok"),
				password: "password-123",
				name: "Tok"
			}));
		});

		const resolve = (tok: string): Promise<AuthUser> =>
			broker.call("users.resolveToken", { token: tok });
		const invalid = { type: "AUTH_TOKEN_INVALID", code: 401 };
		const sign = (claims: object, secret: string, opts: jwt.SignOptions = {}): string =>
			jwt.sign(claims, secret, { algorithm: "HS256", issuer: "moleculer-shop", ...opts });

		it("resolves a valid token to its user", async () => {
			await expect(resolve(token)).resolves.toEqual(user);
		});

		it("resolves a token the test signs itself with the shop's secret (the control case)", async () => {
			await expect(
				resolve(sign({ role: "customer" }, config().jwtSecret, { subject: user.id }))
			).resolves.toEqual(user);
		});

		it("refuses alg none", async () => {
			const now = Math.floor(Date.now() / 1000);
			const none = `${b64url({ alg: "none", typ: "JWT" })}.${b64url({
				sub: user.id,
				role: "admin",
				iss: "moleculer-shop",
				iat: now,
				exp: now + 3600
			})}.`;
			await expect(resolve(none)).rejects.toMatchObject(invalid);
		});

		it("refuses a token signed with another secret", async () => {
			const forged = sign({ role: "admin" }, "another-secret-another-secret-0123456789", {
				subject: user.id
			});
			await expect(resolve(forged)).rejects.toMatchObject(invalid);
		});

		it("refuses an expired token", async () => {
			const now = Math.floor(Date.now() / 1000);
			const expired = sign(
				{ role: "customer", iat: now - 3600, exp: now - 10 },
				config().jwtSecret,
				{
					subject: user.id
				}
			);
			await expect(resolve(expired)).rejects.toMatchObject(invalid);
		});

		it("refuses a token of another issuer", async () => {
			const other = jwt.sign({ role: "customer" }, config().jwtSecret, {
				algorithm: "HS256",
				issuer: "someone-else",
				subject: user.id
			});
			await expect(resolve(other)).rejects.toMatchObject(invalid);
		});

		it("refuses a well-signed token for a user that does not exist", async () => {
			const ghost = sign({ role: "admin" }, config().jwtSecret, {
				subject: crypto.randomUUID()
			});
			await expect(resolve(ghost)).rejects.toMatchObject(invalid);
		});

		it.each(["garbage", "a.b.c", `${b64url({ alg: "HS256" })}.${b64url({ sub: "x" })}.AAAA`])(
			"refuses garbage %p",
			async tok => {
				await expect(resolve(tok)).rejects.toMatchObject(invalid);
			}
		);
	});

	it("seeds the administrator once, with role admin", async () => {
		const res: AuthResult = await broker.call("users.login", {
			email: "admin@example.com",
			password: "admin-password-1"
		});
		await expect(broker.call("users.get", { id: res.user.id })).resolves.toEqual({
			id: res.user.id,
			email: "admin@example.com",
			name: "Administrator",
			role: "admin"
		});
		// Seeding again (a restart) keeps the one administrator and its password.
		const svc = broker.getLocalService("users") as unknown as {
			schema: { afterConnected(this: unknown): Promise<void> };
		};
		await svc.schema.afterConnected.call(svc);
		const again: AuthResult = await broker.call("users.login", {
			email: "admin@example.com",
			password: "admin-password-1"
		});
		expect(again.user.id).toBe(res.user.id);
	});
});

describe("users with a password-hashing pool of one and no queue (over HTTP)", () => {
	const env = {
		PASSWORD_HASH_CONCURRENCY: "1",
		PASSWORD_HASH_MAX_QUEUE: "0",
		// One counted failure would block the account: refusals for load must not count.
		LOGIN_MAX_FAILURES_PER_ACCOUNT: "1"
	};
	let t: TestBroker;
	let base: string;

	beforeAll(async () => {
		t = await startTestBroker(["api", "users"], { env });
		const api = t.broker.getLocalService("api") as unknown as { server: Server };
		base = `http://127.0.0.1:${(api.server.address() as AddressInfo).port}`;
	});
	afterAll(async () => {
		await t?.stop();
		for (const k of Object.keys(env)) delete process.env[k];
		resetConfig();
	});

	const post = async (
		url: string,
		body: object
	): Promise<{ status: number; type?: string; retryAfter: string | null }> => {
		const res = await fetch(base + url, {
			method: "POST",
			headers: { "Content-Type": "application/json" },
			body: JSON.stringify(body)
		});
		const json = (await res.json()) as { type?: string };
		return { status: res.status, type: json.type, retryAfter: res.headers.get("retry-after") };
	};

	it("answers logins past the pool 429 USERS_BUSY with Retry-After at once, unretried and uncounted", async () => {
		const e = `busy-${crypto.randomBytes(4).toString("hex")}@example.com`;
		expect(
			(await post("/api/users/register", { email: e, password: "busy-password", name: "B" }))
				.status
		).toBe(201);

		const t0 = Date.now();
		const answers = await Promise.all(
			Array.from({ length: 8 }, () =>
				post("/api/users/login", { email: e, password: "busy-password" })
			)
		);
		const elapsed = Date.now() - t0;
		const busy = answers.filter(a => a.status === 429);
		expect(answers.filter(a => a.status === 200).length).toBeGreaterThanOrEqual(1);
		// The broker retrying them (USERS_BUSY is retryable) would have turned these into 200s.
		expect(busy.length).toBeGreaterThanOrEqual(1);
		for (const b of busy)
			expect(b).toEqual({ status: 429, type: "USERS_BUSY", retryAfter: "1" });
		expect(answers.filter(a => a.status !== 200 && a.status !== 429)).toEqual([]);
		expect(elapsed).toBeLessThan(5_000);

		// Not counted as failed logins: with LOGIN_MAX_FAILURES_PER_ACCOUNT=1 a single counted
		// failure would have blocked the account.
		expect(
			await post("/api/users/login", { email: e, password: "busy-password" })
		).toMatchObject({ status: 200 });
	});

	it("answers sign-ups past the pool 429 USERS_BUSY, and creates no account for them", async () => {
		const emails = Array.from(
			{ length: 8 },
			(_, i) => `busy-signup-${i}-${crypto.randomBytes(4).toString("hex")}@example.com`
		);
		const answers = await Promise.all(
			emails.map(e =>
				post("/api/users/register", { email: e, password: "busy-password", name: "S" })
			)
		);
		expect(answers.filter(a => a.status === 201).length).toBeGreaterThanOrEqual(1);
		expect(answers.filter(a => a.status === 429).length).toBeGreaterThanOrEqual(1);
		for (const [i, a] of answers.entries()) {
			if (a.status === 429) {
				expect(a).toEqual({ status: 429, type: "USERS_BUSY", retryAfter: "1" });
				// The e-mail is still free: signing up again (alone) works.
				expect(
					(
						await post("/api/users/register", {
							email: emails[i],
							password: "busy-password",
							name: "S"
						})
					).status
				).toBe(201);
			} else expect(a.status).toBe(201);
		}
	});
});
