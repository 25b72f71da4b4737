import crypto from "node:crypto";
import jwt from "jsonwebtoken";
import type { ServiceBroker } from "moleculer";
import { config } from "../../lib/config";
import type { AuthUser, ShopMeta } from "../../lib/context";
import { customer, startTestBroker, type TestBroker } from "../support/broker";

interface AuthResult {
	user: AuthUser;
	token: string;
}

const b64url = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString("base64url");

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
