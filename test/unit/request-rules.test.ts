/**
 * The gateway's request rules of docs/api.md, as functions (platform/web/request-guards.ts): the
 * bearer scheme in any case, unknown query keys ignored (body keys untouched), and the methods
 * of the routes a path has (a 405's `Allow`). Over HTTP: test/e2e/openapi-fuzz.e2e.test.ts.
 */
import {
	allowedMethods,
	bearerToken,
	ignoreUnknownQueryKeys
} from "../../platform/web/request-guards";

describe("request rules", () => {
	const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";

	it("reads a bearer token whatever the scheme's case, and nothing else", () => {
		for (const scheme of ["Bearer", "bearer", "BEARER", "bEaReR"])
			expect(bearerToken(`${scheme} ${jwt}`)).toBe(jwt);
		expect(bearerToken(`Bearer   ${jwt}`)).toBe(jwt);
		expect(bearerToken(undefined)).toBeUndefined();
		expect(bearerToken("")).toBeUndefined();
		for (const bad of [
			`Basic ${jwt}`,
			jwt,
			"Bearer ",
			`Bearer\t${jwt}`,
			`Bearer ${jwt};x`,
			`Bearer ${jwt} Bearer ${jwt}`,
			"Bearer a.b",
			`Bearerx ${jwt}`
		])
			expect({ bad, token: bearerToken(bad) }).toEqual({ bad, token: null });
	});

	it("drops the query keys an action does not declare, never a body key", () => {
		const body = { name: "x", extra: 1 };
		const query = { _: "1", page: "2", extra: "1", $$strict: "false" };
		const params: Record<string, unknown> = { ...body, ...query, id: "p" };
		const kept = ignoreUnknownQueryKeys(params, query, body, [
			"$$strict",
			"id",
			"name",
			"page"
		]);
		expect(kept).toEqual({ page: "2" });
		// `extra` stays: the body has it too (the action's $$strict decides, 422).
		expect(params).toEqual({ name: "x", extra: "1", page: "2", id: "p" });
		expect(ignoreUnknownQueryKeys({}, undefined, undefined, [])).toEqual({});
	});

	it("lists the methods of the routes a path has, none for a path without one", () => {
		const aliases = [
			{ method: "GET", re: /^\/api\/products$/ },
			{ method: "POST", re: /^\/api\/products$/ },
			{ method: "GET", re: /^\/api\/products\/([^/]+)$/ },
			{ method: "PATCH", re: /^\/api\/products\/([^/]+)$/ },
			{ method: "*", re: /^\/api\/any$/ }
		];
		expect(allowedMethods(aliases, "/api/products")).toEqual(["GET", "POST"]);
		expect(allowedMethods(aliases, "/api/products/%ff")).toEqual(["GET", "PATCH"]);
		expect(allowedMethods(aliases, "/api/nope")).toEqual([]);
		expect(allowedMethods(aliases, "/api/any")).toEqual([]);
	});
});
