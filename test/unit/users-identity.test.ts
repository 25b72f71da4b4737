/**
 * One person, one account (issue 21 part 1), on a real Postgres: look-alike forms of a registered
 * e-mail are refused over HTTP with the same 409 as the exact duplicate (invisible characters with
 * 422), and log in to its account; a fast-check property registers pairs of forms; migration
 * `002-email-identity-key` keys accounts registered before it and reports their collisions.
 */
import crypto from "node:crypto";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import argon2 from "argon2";
import * as fc from "fast-check";
import type { ServiceBroker } from "moleculer";
import { createDatabase, ensureDatabase } from "../../platform/db/database";
import { migrate } from "../../platform/db/migrations";
import type { ShopDatabase } from "../../platform/db/pool";
import { usersMigrations } from "../../services/users/migrations";
import { startTestBroker, type TestBroker } from "../support/broker";
import { sharedDatabaseUrl } from "../support/database-url";

const PASSWORD = "identity-password-1";
const tag = (): string => crypto.randomBytes(4).toString("hex");

/** Full-width form of an ASCII letter or digit (U+FF01 + ...). */
const fullWidth = (s: string): string =>
	[...s]
		.map(c => (/[!-~]/.test(c) ? String.fromCodePoint(c.charCodeAt(0) + 0xfee0) : c))
		.join("");

describe("look-alike e-mails over HTTP (api + users)", () => {
	let t: TestBroker;
	let base: string;

	beforeAll(async () => {
		t = await startTestBroker(["api", "users"]);
		const api = t.broker.getLocalService("api") as unknown as { server: Server };
		base = `http://127.0.0.1:${(api.server.address() as AddressInfo).port}`;
	});
	afterAll(async () => t?.stop());

	const post = async (
		url: string,
		body: object
	): Promise<{ status: number; type?: string; data?: unknown; user?: { id: string } }> => {
		const res = await fetch(base + url, {
			method: "POST",
			headers: { "Content-Type": "application/json" },
			body: JSON.stringify(body)
		});
		const json = (await res.json()) as { type?: string; data?: unknown; user?: { id: string } };
		return { status: res.status, type: json.type, data: json.data, user: json.user };
	};
	const register = (email: string): ReturnType<typeof post> =>
		post("/api/users/register", { email, password: PASSWORD, name: "Ann" });
	const login = (email: string): ReturnType<typeof post> =>
		post("/api/users/login", { email, password: PASSWORD });

	// Each: the registered address and a form a person reads as the same one.
	const lookAlikes: [string, (id: string) => [string, string]][] = [
		["a trailing dot on the domain", id => [`ann-${id}@example.com`, `ann-${id}@example.com.`]],
		[
			"full-width letters in the local part",
			id => [`ann-${id}@example.com`, `${fullWidth(`ann-${id}`)}@example.com`]
		],
		[
			"full-width letters in the domain",
			id => [`ann-${id}@example.com`, `ann-${id}@${fullWidth("example")}.${fullWidth("com")}`]
		],
		["the ligature ﬁ", id => [`fiona-${id}@example.com`, `\ufb01ona-${id}@example.com`]],
		["a mathematical bold o", id => [`bob-${id}@example.com`, `b\u{1d428}b-${id}@example.com`]],
		[
			"a Cyrillic а in the domain",
			id => [`ann-${id}@example.com`, `ann-${id}@ex\u0430mple.com`]
		],
		[
			"a Cyrillic а in the local part",
			id => [`ann-${id}@example.com`, `\u0430nn-${id}@example.com`]
		],
		["a decomposed é", id => [`ren\u00e9-${id}@example.com`, `rene\u0301-${id}@example.com`]],
		[
			"a sharp s (full case folding)",
			id => [`strasse-${id}@example.com`, `stra\u00dfe-${id}@example.com`]
		],
		["the domain's punycode", id => [`ann-${id}@b\u00fccher.de`, `ann-${id}@xn--bcher-kva.de`]]
	];

	it.each(lookAlikes)(
		"%s: the second sign-up is 409 USERS_EMAIL_TAKEN, and that form logs in to the first account",
		async (_label, forms) => {
			const [first, second] = forms(tag());
			const created = await register(first);
			expect(created.status).toBe(201);
			expect(await register(second)).toMatchObject({
				status: 409,
				type: "USERS_EMAIL_TAKEN"
			});
			const res = await login(second);
			expect(res).toMatchObject({ status: 200 });
			expect(res.user!.id).toBe(created.user!.id);
		}
	);

	it.each([
		["a zero-width space", "\u200b", "U+200B"],
		["a soft hyphen", "\u00ad", "U+00AD"],
		["a zero-width joiner", "\u200d", "U+200D"],
		["a right-to-left override", "\u202e", "U+202E"]
	])(
		"refuses %s inside the address with 422 USERS_EMAIL_INVALID, creating nothing",
		async (_l, ch, cp) => {
			const id = tag();
			expect(await register(`an${ch}n-${id}@example.com`)).toEqual({
				status: 422,
				type: "USERS_EMAIL_INVALID",
				data: { field: "email", reason: "INVISIBLE_CHARACTER", character: cp },
				user: undefined
			});
			// The visible address is still free.
			expect((await register(`ann-${id}@example.com`)).status).toBe(201);
		}
	);

	it("answers a login of an address with no key 401, as for an unknown e-mail", async () => {
		expect(await login(`an\u200bn-${tag()}@example.com`)).toMatchObject({
			status: 401,
			type: "USERS_INVALID_CREDENTIALS"
		});
	});

	it("keeps distinct addresses apart (digit 1 and letter l, rn and m, an accent)", async () => {
		const id = tag();
		for (const e of [
			`ann1-${id}@example.com`,
			`annl-${id}@example.com`,
			`mary-${id}@example.com`,
			`rnary-${id}@example.com`,
			`rene-${id}@example.com`,
			`ren\u00e9-${id}@example.com`
		])
			expect([e, (await register(e)).status]).toEqual([e, 201]);
	});

	describe("property: two addresses with the same identity key never both register", () => {
		/** A character of the local part, and forms of it a person reads as the same one. */
		const glyphs: Record<string, string[]> = {
			a: ["a", "A", "\uff41", "\u0430", "\u{1d41a}", "\u03b1"],
			e: ["e", "E", "\uff45", "\u0435", "\u{1d41e}"],
			o: ["o", "O", "\uff4f", "\u043e", "\u{1d428}", "\u03bf"],
			p: ["p", "P", "\uff50", "\u0440"],
			c: ["c", "C", "\uff43", "\u0441"],
			s: ["s", "S", "\uff53", "\u0455"],
			é: ["\u00e9", "\u00c9", "e\u0301", "E\u0301"],
			ss: ["ss", "SS", "\u00df", "\u1e9e"],
			fi: ["fi", "FI", "\ufb01"],
			n: ["n", "N", "\uff4e"]
		};
		const letters = Object.keys(glyphs);
		/** A different letter at one position makes the addresses different people. */
		const piece = fc.record({
			letter: fc.constantFrom(...letters),
			form: fc.nat(),
			other: fc.constantFrom(...letters)
		});
		const domainForms = [
			"example.com",
			"EXAMPLE.COM",
			"example.com.",
			`${fullWidth("example")}.${fullWidth("com")}`,
			"ex\u0430mple.com"
		];
		const scenario = fc.record({
			pieces: fc.array(piece, { minLength: 1, maxLength: 6 }),
			// Half the scenarios change no letter (fast-check's default nil is 1 in 6): both
			// outcomes are met often enough for the counts below in every run.
			changeAt: fc.option(fc.nat(), { nil: undefined, freq: 2 }),
			domain: fc.nat({ max: domainForms.length - 1 })
		});

		it("registers the first, and the second only when a letter differs", async () => {
			const broker: ServiceBroker = t.broker;
			let same = 0;
			let different = 0;
			await fc.assert(
				fc.asyncProperty(scenario, async s => {
					const id = `p${tag()}-`;
					const change = s.changeAt === undefined ? -1 : s.changeAt % s.pieces.length;
					const changed =
						change >= 0 && s.pieces[change]!.other !== s.pieces[change]!.letter;
					const first = `${id}${s.pieces.map(p => p.letter).join("")}@example.com`;
					const second = `${id}${s.pieces
						.map((p, i) => {
							const letter = i === change ? p.other : p.letter;
							const forms = glyphs[letter]!;
							return forms[p.form % forms.length];
						})
						.join("")}@${domainForms[s.domain]}`;
					await broker.call("users.register", {
						email: first,
						password: PASSWORD,
						name: "P"
					});
					const answer = await broker
						.call("users.register", { email: second, password: PASSWORD, name: "Q" })
						.then(
							() => 201,
							(err: { code?: number; type?: string }) => `${err.code} ${err.type}`
						);
					if (changed) different++;
					else same++;
					expect([first, second, answer]).toEqual([
						first,
						second,
						changed ? 201 : "409 USERS_EMAIL_TAKEN"
					]);
				}),
				{ numRuns: 40 }
			);
			expect(same).toBeGreaterThan(5);
			expect(different).toBeGreaterThan(5);
		});
	});
});

describe("migration 002-email-identity-key on accounts registered before it", () => {
	const prefix = `t${tag()}_`;
	const url = sharedDatabaseUrl(`${prefix}users`);
	let db: ShopDatabase;
	let t: TestBroker;
	const ids: Record<string, string> = {};
	// Oldest first: the oldest of look-alikes keeps the key.
	const legacy: [string, string][] = [
		["ann", "ann@example.com"],
		["annDot", "ann@example.com."],
		["annWide", "\uff41\uff4e\uff4e@example.com"],
		["annZwsp", "an\u200bn@example.com"],
		["bob", "bob@exa%mple.com"],
		["carol", "carol@example.com"],
		["carolCyrillic", "carol@ex\u0430mple.com"]
	];

	beforeAll(async () => {
		await ensureDatabase(url);
		db = createDatabase(url, { max: 2 });
		await migrate(db, usersMigrations.slice(0, 1));
		const hash = await argon2.hash(PASSWORD, { type: argon2.argon2id });
		for (const [i, [who, email]] of legacy.entries()) {
			ids[who] = crypto.randomUUID();
			await db.query(
				`INSERT INTO users (id, email, name, password_hash, role, created_at)
				 VALUES ($1, $2, $3, $4, 'customer', now() - make_interval(days => $5))`,
				[ids[who], email, who, hash, 100 - i]
			);
		}
		// The users service migrates its database on start.
		t = await startTestBroker(["users"], { prefix });
	});
	afterAll(async () => {
		await t?.stop();
		await db?.close();
	});

	it("keys the oldest of each group of look-alikes, and no other", async () => {
		const { rows } = await db.query(
			"SELECT id, email, email_key FROM users ORDER BY created_at"
		);
		const keys = Object.fromEntries(
			rows.map(r => [r.id as string, r.email_key as string | null])
		);
		expect(keys[ids.ann!]).toBe("ann@example.com");
		expect(keys[ids.carol!]).toBe("carol@example.com");
		for (const who of ["annDot", "annWide", "annZwsp", "bob", "carolCyrillic"])
			expect([who, keys[ids[who]!]]).toEqual([who, null]);
	});

	it("reports each collision in email_identity_conflicts, merging and deleting nothing", async () => {
		const { rows } = await db.query(
			`SELECT user_id, email, email_key, kept_user_id, reason FROM email_identity_conflicts`
		);
		const byUser = Object.fromEntries(rows.map(r => [r.user_id as string, r]));
		const look = (who: string, keptBy: string, key: string): object => ({
			user_id: ids[who],
			email: legacy.find(([w]) => w === who)![1],
			email_key: key,
			kept_user_id: ids[keptBy],
			reason: "LOOK_ALIKE"
		});
		expect(rows).toHaveLength(5);
		expect(byUser[ids.annDot!]).toEqual(look("annDot", "ann", "ann@example.com"));
		expect(byUser[ids.annWide!]).toEqual(look("annWide", "ann", "ann@example.com"));
		expect(byUser[ids.annZwsp!]).toEqual(look("annZwsp", "ann", "ann@example.com"));
		expect(byUser[ids.carolCyrillic!]).toEqual(
			look("carolCyrillic", "carol", "carol@example.com")
		);
		expect(byUser[ids.bob!]).toEqual({
			user_id: ids.bob,
			email: "bob@exa%mple.com",
			email_key: null,
			kept_user_id: null,
			reason: "NO_KEY"
		});
		// Every account is still there, with the address it registered.
		const all = await db.query(
			"SELECT email FROM users WHERE id = ANY($1::uuid[]) ORDER BY created_at",
			[Object.values(ids)]
		);
		expect(all.rows.map(r => r.email)).toEqual(legacy.map(([, e]) => e));
	});

	it("logs the unresolved conflicts by account id at start", async () => {
		const svc = t.broker.getLocalService("users") as unknown as {
			logger: { warn(msg: string): void };
			reportIdentityConflicts(): Promise<void>;
		};
		const warn = jest.spyOn(svc.logger, "warn").mockImplementation(() => undefined);
		try {
			await svc.reportIdentityConflicts();
			expect(warn).toHaveBeenCalledTimes(1);
			const line = warn.mock.calls[0]![0];
			expect(line).toMatch(/^5 account\(s\) have no e-mail identity key/);
			for (const who of ["annDot", "annWide", "annZwsp", "carolCyrillic"])
				expect(line).toContain(
					`${ids[who]} (look-alike of ${who.startsWith("ann") ? ids.ann : ids.carol})`
				);
			expect(line).toContain(`${ids.bob} (no key)`);
			expect(line).not.toContain("@"); // ids, not addresses, in the log
		} finally {
			warn.mockRestore();
		}
	});

	it("holds the key unique: a look-alike sign-up is 409, each account logs in with its own address", async () => {
		const broker = t.broker;
		await expect(
			broker.call("users.register", {
				email: "ANN@example.com",
				password: PASSWORD,
				name: "X"
			})
		).rejects.toMatchObject({ type: "USERS_EMAIL_TAKEN", code: 409 });
		const as = async (email: string): Promise<string> =>
			(
				(await broker.call("users.login", { email, password: PASSWORD })) as {
					user: { id: string };
				}
			).user.id;
		expect(await as("ann@example.com")).toBe(ids.ann);
		expect(await as("ann@example.com.")).toBe(ids.annDot); // its exact address
		expect(await as("ANN@example.com")).toBe(ids.ann);
		expect(await as("\uff41\uff4e\uff4e@example.com.")).toBe(ids.ann); // no exact match: the key's
		expect(await as("carol@ex\u0430mple.com")).toBe(ids.carolCyrillic);
		await expect(
			db.query("UPDATE users SET email_key = 'ann@example.com' WHERE id = $1", [ids.annDot])
		).rejects.toMatchObject({ name: "SequelizeUniqueConstraintError" });
	});
});
