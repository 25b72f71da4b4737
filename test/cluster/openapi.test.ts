/**
 * The OpenAPI document of a gateway that holds no other service (one `moleculer-runner` node per
 * service over NATS): the parameters of the actions behind its routes come from the other nodes,
 * through the service registry, and the document is still valid OpenAPI 3.1, with every status
 * declared (no `default`).
 */
import { API_ALIASES } from "../../services/api/routes";
import { startCluster, withOutputOnFailure, type TestCluster } from "../support/cluster";
import { danglingRefs, validateOpenApi } from "../support/openapi";

type Obj = Record<string, any>;

describe("OpenAPI from a gateway node", () => {
	let cluster: TestCluster;

	beforeAll(async () => {
		cluster = await startCluster();
	}, 120_000);
	afterAll(async () => {
		await cluster?.stop();
	}, 60_000);

	it("documents the remote nodes' action parameters, valid OpenAPI 3.1", () =>
		withOutputOnFailure(cluster, async () => {
			const res = await fetch(`${cluster.url}/api/openapi.json`);
			expect(res.status).toBe(200);
			const doc = (await res.json()) as Obj;
			const result = validateOpenApi(doc);
			expect(result.errors).toBeNull();
			expect(result.valid).toBe(true);
			expect(danglingRefs(doc)).toEqual([]);
			for (const key of Object.keys(API_ALIASES)) {
				const [method, p] = key.split(" ") as [string, string];
				const op = doc.paths[`/api/${p.replace(/:([A-Za-z0-9_]+)/g, "{$1}")}`]?.[
					method.toLowerCase()
				] as Obj | undefined;
				expect({ key, documented: op !== undefined }).toEqual({ key, documented: true });
				// Every action behind an alias has a live node: its parameters are known.
				expect({ key, live: !/no live node/.test(op!.description ?? "") }).toEqual({
					key,
					live: true
				});
			}
			// orders.create runs on orders-1: its schema crossed the wire, patterns included.
			const body = doc.paths["/api/orders"].post.requestBody.content["application/json"]
				.schema as Obj;
			expect(body.required.sort()).toEqual(["items", "paymentMethod"]);
			expect(body.properties.items.items.properties.quantity).toMatchObject({
				type: "integer",
				minimum: 1,
				maximum: 1000
			});
			expect(body.properties.paymentMethod.pattern).toBe("^[A-Za-z0-9_]+$");
			const create = doc.paths["/api/products"].post.requestBody.content["application/json"]
				.schema as Obj;
			expect(create.properties.sku.pattern).toBe("^[A-Za-z0-9._-]+$");
			expect(create.properties.currency.pattern).toBe("^[A-Z]{3}$");
			// Every status declared, none left to `default`, in the cluster form too: the error
			// types of remote actions (the 404 of orders.get) and the event stream's uuid.
			for (const item of Object.values(doc.paths as Obj))
				for (const op of Object.values(item as Obj))
					expect(Object.keys((op as Obj).responses)).not.toContain("default");
			expect(
				doc.paths["/api/orders/{id}"].get.responses["404"].content["application/json"]
					.schema.properties.type.enum
			).toEqual(["ORDERS_NOT_FOUND"]);
			expect(doc.paths["/api/orders/{id}/events"].get.parameters).toContainEqual({
				name: "id",
				in: "path",
				required: true,
				schema: { type: "string", format: "uuid" }
			});
		}));
});
