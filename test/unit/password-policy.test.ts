import crypto from "node:crypto";
import type { ServiceBroker } from "moleculer";
import { ConfigError, loadConfig } from "../../platform/config";
import {
	LONG_COMMON_PASSWORDS,
	PASSWORD_MAX_LENGTH,
	PASSWORD_MIN_LENGTH,
	TOP_COMMON_PASSWORDS,
	isCommonPassword,
	passwordWeaknesses
} from "../../platform/security/password-policy";
import { startTestBroker, type TestBroker } from "../support/broker";

describe("password policy (platform/security/password-policy.ts)", () => {
	it("accepts the passwords the README and the suites use", () => {
		for (const p of [
			"correct horse battery",
			"password-123",
			"password-456",
			"correct-horse",
			"admin-password-1",
			"cluster-admin-password",
			"e2e-admin-password",
			"npm-run-cluster-admin",
			"CHANGE-ME-admin-password"
		])
			expect([p, passwordWeaknesses(p, "ann@example.com")]).toEqual([p, []]);
	});

	it("bounds the length: 10 to 256 characters", () => {
		expect(PASSWORD_MIN_LENGTH).toBe(10);
		expect(PASSWORD_MAX_LENGTH).toBe(256);
		expect(passwordWeaknesses("k7#Tq9!zW")).toEqual(["TOO_SHORT"]);
		expect(passwordWeaknesses("k7#Tq9!zWx")).toEqual([]);
		expect(passwordWeaknesses("x".repeat(255) + "y")).toEqual([]);
		expect(passwordWeaknesses("x".repeat(256) + "y")).toEqual(["TOO_LONG"]);
	});

	it("refuses the e-mail address or its local part, in any case", () => {
		expect(passwordWeaknesses("Ann.Smith@Example.com", "ann.smith@example.com")).toEqual([
			"SAME_AS_EMAIL"
		]);
		expect(passwordWeaknesses("ANN.SMITH1", "ann.smith1@example.com")).toEqual([
			"SAME_AS_EMAIL"
		]);
		expect(passwordWeaknesses("ann.smith-but-longer", "ann.smith@example.com")).toEqual([]);
	});

	it("refuses common passwords in any case, also followed by digits", () => {
		for (const p of [
			"qwertyuiop",
			"QwertyUiop",
			"1234567890",
			"1q2w3e4r5t",
			"password123",
			"Password2024",
			"dragon1234",
			"iloveyou12",
			"basketball"
		])
			expect([p, isCommonPassword(p)]).toEqual([p, true]);
		for (const p of ["correct horse battery", "password-123", "dragonfly-77", "7dragon777"])
			expect([p, isCommonPassword(p)]).toEqual([p, false]);
		expect(passwordWeaknesses("Password2024", "ann@example.com")).toEqual(["COMMON"]);
	});

	it("ships the list it documents: 500 from the top, then long ones, lower-case, no duplicates", () => {
		expect(TOP_COMMON_PASSWORDS).toHaveLength(500);
		expect(TOP_COMMON_PASSWORDS.slice(0, 3)).toEqual(["password", "123456", "12345678"]);
		for (const p of LONG_COMMON_PASSWORDS) expect(p.length).toBeGreaterThanOrEqual(10);
		const all = [...TOP_COMMON_PASSWORDS, ...LONG_COMMON_PASSWORDS];
		expect(new Set(all).size).toBe(all.length);
		for (const p of all) expect(p).toBe(p.toLowerCase());
	});

	it("applies to ADMIN_PASSWORD at start-up, without printing it", () => {
		const env = { JWT_SECRET: "x".repeat(32), DATA_DIR: "/tmp/shop-policy-test" };
		expect(() => loadConfig({ ...env, ADMIN_PASSWORD: "password12345" })).toThrow(
			/ADMIN_PASSWORD.*COMMON/
		);
		expect(() =>
			loadConfig({
				...env,
				ADMIN_EMAIL: "root@example.com",
				ADMIN_PASSWORD: "root@example.com"
			})
		).toThrow(/SAME_AS_EMAIL/);
		try {
			loadConfig({ ...env, ADMIN_PASSWORD: "password12345" });
		} catch (err) {
			expect(err).toBeInstanceOf(ConfigError);
			expect((err as Error).message).not.toContain("password12345");
		}
		expect(loadConfig({ ...env, ADMIN_PASSWORD: "a-long-admin-secret" }).adminPassword).toBe(
			"a-long-admin-secret"
		);
	});
});

describe("users.register enforces the policy", () => {
	let t: TestBroker;
	let broker: ServiceBroker;
	const email = (): string => `pw-${crypto.randomBytes(4).toString("hex")}@example.com`;
	beforeAll(async () => {
		t = await startTestBroker(["users"]);
		broker = t.broker;
	});
	afterAll(async () => t?.stop());

	it("answers USERS_PASSWORD_WEAK 422 with data.reasons for a common password", async () => {
		const err = await broker
			.call("users.register", { email: email(), password: "Qwertyuiop", name: "W" })
			.catch((e: unknown) => e);
		expect(err).toMatchObject({
			type: "USERS_PASSWORD_WEAK",
			code: 422,
			data: { reasons: ["COMMON"] }
		});
		expect((err as Error).message).toMatch(/common/);
	});

	it("answers USERS_PASSWORD_WEAK for the e-mail as password", async () => {
		const e = email();
		await expect(
			broker.call("users.register", { email: e, password: e, name: "W" })
		).rejects.toMatchObject({
			type: "USERS_PASSWORD_WEAK",
			data: { reasons: ["SAME_AS_EMAIL"] }
		});
	});

	it("answers VALIDATION_ERROR for 9 and 257 characters, accepts 10 and 256", async () => {
		for (const password of ["k7#Tq9!zW", "y".repeat(257)])
			await expect(
				broker.call("users.register", { email: email(), password, name: "L" })
			).rejects.toMatchObject({ type: "VALIDATION_ERROR", data: [{ field: "password" }] });
		for (const password of ["k7#Tq9!zWx", "z".repeat(255) + "!"]) {
			const e = email();
			await broker.call("users.register", { email: e, password, name: "L" });
			// The longest password also logs in (login's own bound matches register's).
			await expect(broker.call("users.login", { email: e, password })).resolves.toMatchObject(
				{
					user: { email: e }
				}
			);
		}
	});
});
