/**
 * Generates requests from an OpenAPI 3.1 document with json-schema-faker (an ES module, so this
 * runs as a child Node process: jest's CommonJS runtime cannot import it; see
 * test/e2e/openapi-fuzz.e2e.test.ts `generateRequests`).
 *
 * Usage: node openapi-requests.mjs <document.json> <samples per operation> <seed>
 * Prints a JSON array of `{ method, path, operationId, pathParams, query, body? }`, `samples`
 * per operation, each valid against the operation's parameter and request body schemas
 * (`path` is the document's template, e.g. `/api/orders/{id}`).
 */
import fs from "node:fs";
import process from "node:process";
import { generate } from "json-schema-faker";

const [file, samplesArg, seedArg] = process.argv.slice(2);
const doc = JSON.parse(fs.readFileSync(file, "utf8"));
const samples = Number(samplesArg ?? 5);
const seed = Number(seedArg ?? 1);

/** A local `$ref` of the document, resolved (parameters may be references). */
function deref(node) {
	if (!node || typeof node.$ref !== "string") return node;
	let out = doc;
	for (const part of node.$ref.replace(/^#\//, "").split("/"))
		out = out[part.replace(/~1/g, "/").replace(/~0/g, "~")];
	return out;
}

/** The parameters of one location as an object schema. */
function paramsSchema(parameters, location) {
	const properties = {};
	const required = [];
	for (const p of parameters.map(deref).filter(p => p.in === location)) {
		properties[p.name] = p.schema ?? {};
		if (p.required) required.push(p.name);
	}
	return { type: "object", properties, required, additionalProperties: false };
}

const out = [];
let n = 0;
for (const [path, item] of Object.entries(doc.paths))
	for (const [method, op] of Object.entries(item)) {
		const parameters = op.parameters ?? [];
		const body = op.requestBody?.content?.["application/json"]?.schema;
		const schema = {
			type: "object",
			properties: {
				pathParams: paramsSchema(parameters, "path"),
				query: paramsSchema(parameters, "query"),
				...(body ? { body } : {})
			},
			required: ["pathParams", "query", ...(op.requestBody?.required ? ["body"] : [])],
			additionalProperties: false
		};
		for (let i = 0; i < samples; i++) {
			const sample = await generate(schema, {
				seed: seed * 100_003 + n++,
				optionalsProbability: 0.5,
				maxDefaultItems: 3,
				refResolver: ref => deref({ $ref: ref })
			});
			out.push({
				method: method.toUpperCase(),
				path,
				operationId: op.operationId,
				...sample
			});
		}
	}
process.stdout.write(JSON.stringify(out));
