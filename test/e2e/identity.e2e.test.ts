/**
 * One person, one account (issue 21, part 1) on the one-process shop users run (`npm start`'s
 * dist/bin/start.js), over real HTTP: every look-alike form of a registered address answers the
 * same 409 `USERS_EMAIL_TAKEN` as the exact address, an address with an invisible character is
 * 422 `USERS_EMAIL_INVALID`, and a look-alike form logs in to the one account. The rules and their
 * neighbours are test/unit/email-identity.test.ts and test/unit/users-identity.test.ts.
 */
import crypto from "node:crypto";
import { startShopProcess, type ShopProcess } from "../support/shop-process";

describe("the e-mail identity key on the one-process shop", () => {
	let shop: ShopProcess | undefined;
	const password = `Id-${crypto.randomBytes(12).toString("base64url")}`;

	beforeAll(async () => {
		shop = await startShopProcess();
	}, 120_000);
	afterAll(async () => {
		await shop?.stop();
	});

	const post = async (
		path: string,
		body: object
	): Promise<{ status: number; body: Record<string, any> }> => {
		const res = await fetch(`${shop!.url}${path}`, {
			method: "POST",
			headers: { "Content-Type": "application/json" },
			body: JSON.stringify(body)
		});
		return { status: res.status, body: (await res.json()) as Record<string, any> };
	};

	it("answers look-alikes 409 like the exact address, refuses invisible characters, logs look-alikes in", async () => {
		const local = `ann${crypto.randomBytes(3).toString("hex")}`;
		const email = `${local}@example.com`;
		const first = await post("/api/users/register", { email, password, name: "Ann" });
		expect(first.status).toBe(201);
		const id = first.body.user.id as string;

		const fullWidth = [...local]
			.map(c => String.fromCodePoint(c.codePointAt(0)! + 0xfee0))
			.join("");
		const lookAlikes = [
			email,
			` ${email.toUpperCase()} `,
			`${email}.`,
			`${fullWidth}@example.com`,
			`${local}@ex\u0430mple.com`, // Cyrillic а in the domain
			`${local}@\uff45xample.com` // full-width e in the domain
		];
		for (const form of lookAlikes) {
			const r = await post("/api/users/register", { email: form, password, name: "Mallory" });
			expect({ form, status: r.status, type: r.body.type }).toEqual({
				form,
				status: 409,
				type: "USERS_EMAIL_TAKEN"
			});
		}

		for (const form of [`a\u200bnn@example.com`, `an\u00adn@example.com`]) {
			const r = await post("/api/users/register", { email: form, password, name: "Mallory" });
			expect({ form, status: r.status, type: r.body.type }).toEqual({
				form,
				status: 422,
				type: "USERS_EMAIL_INVALID"
			});
		}

		for (const form of [`${fullWidth}@example.com`, `${email}.`]) {
			const r = await post("/api/users/login", { email: form, password });
			expect(r.status).toBe(200);
			expect(r.body.user.id).toBe(id);
		}
	});
});
