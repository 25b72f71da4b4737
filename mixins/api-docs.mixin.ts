/**
 * `ApiDocsMixin(spec)`: a gateway's API documentation (mixed into services/api/api.service.ts with
 * the shop's `spec`, services/api/openapi-schemas.ts; the mixin itself knows no service):
 *
 * - `api.openapi` (`GET /api/openapi.json`): the OpenAPI 3.1 document (platform/web/openapi.ts), built on
 *   each request from this gateway's routes and the actions the service registry knows right
 *   now, local or on other nodes;
 * - `api.docs` (`GET /api/docs`): Swagger UI over that document, its files served from the
 *   `swagger-ui-dist` npm package by `api.docsAsset` (`GET /api/docs/:file`), no CDN. The page
 *   gets its own Content-Security-Policy (scripts and styles from this origin only; Swagger UI
 *   needs inline styles); every other `/api` answer keeps `default-src 'none'`.
 */
import fs from "node:fs";
import path from "node:path";
import type { Context, Service, ServiceSchema } from "moleculer";
import {
	buildOpenApi,
	gatewayAliases,
	type ActionInfo,
	type JsonSchema,
	type OpenApiSpec
} from "../platform/web/openapi";

/** The files of the documentation page: name → content type. */
const ASSETS: Record<string, string> = {
	"swagger-ui.css": "text/css; charset=utf-8",
	"swagger-ui-bundle.js": "application/javascript; charset=utf-8",
	"favicon-32x32.png": "image/png",
	"favicon-16x16.png": "image/png",
	"init.js": "application/javascript; charset=utf-8"
};

const DOCS_CSP = [
	"default-src 'none'",
	"script-src 'self'",
	"style-src 'self' 'unsafe-inline'",
	"img-src 'self' data:",
	"font-src 'self' data:",
	"connect-src 'self'",
	"base-uri 'none'",
	"form-action 'none'",
	"frame-ancestors 'none'"
].join("; ");

/** The documentation page; `title` is the application's (HTML-free: it is the spec's title). */
const page = (title: string): string => `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<link rel="stylesheet" href="/api/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/api/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/api/docs/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script>
</body>
</html>
`;

/** Starts Swagger UI on the shop's document (a file: the page's CSP allows no inline script). */
const INIT = `window.ui = SwaggerUIBundle({
	url: "/api/openapi.json",
	dom_id: "#swagger-ui",
	deepLinking: true,
	presets: [SwaggerUIBundle.presets.apis],
	layout: "BaseLayout"
});
`;

/** swagger-ui-dist's directory. */
function swaggerUiDir(): string {
	return path.dirname(require.resolve("swagger-ui-dist/package.json"));
}

const assetCache = new Map<string, Buffer>();

function asset(file: string): Buffer {
	let data = assetCache.get(file);
	if (!data) {
		data =
			file === "init.js"
				? Buffer.from(INIT)
				: fs.readFileSync(path.join(swaggerUiDir(), file));
		assetCache.set(file, data);
	}
	return data;
}

type DocsMeta = { $responseType?: string; $responseHeaders?: Record<string, string> };

/** The gateway's settings the document is built from: moleculer-web's routes. */
interface DocsSettings {
	routes?: readonly { path?: string; aliases?: Record<string, unknown> }[];
}

/** The gateway as the mixin's handlers see it. */
type DocsThis = Service<DocsSettings>;

/** The documentation actions of a moleculer-web gateway, for the application's `spec`. */
export function ApiDocsMixin(spec: OpenApiSpec): Partial<ServiceSchema> {
	const html = page(spec.title);
	const schema: Partial<ServiceSchema<DocsSettings>> & ThisType<DocsThis> = {
		actions: {
			/**
			 * The OpenAPI 3.1 document of this gateway's routes.
			 * @returns the document (JSON)
			 */
			openapi: {
				params: {},
				handler(this: DocsThis): JsonSchema {
					const actions = new Map<string, ActionInfo>();
					for (const item of this.broker.registry.getActionList({
						skipInternal: true
					}) as unknown as { name: string; action?: ActionInfo }[])
						if (item.action) actions.set(item.name, item.action);
					return buildOpenApi(gatewayAliases(this.settings.routes ?? []), actions, spec);
				}
			},

			/** The documentation page (Swagger UI). @returns HTML */
			docs: {
				params: {},
				handler(ctx: Context<unknown, DocsMeta>): string {
					ctx.meta.$responseType = "text/html; charset=utf-8";
					ctx.meta.$responseHeaders = {
						"Content-Security-Policy": DOCS_CSP,
						"Cache-Control": "no-cache"
					};
					return html;
				}
			},

			/** A file of the documentation page. @returns its bytes */
			docsAsset: {
				params: { $$strict: true, file: { type: "enum", values: Object.keys(ASSETS) } },
				handler(ctx: Context<{ file: string }, DocsMeta>): Buffer {
					ctx.meta.$responseType = ASSETS[ctx.params.file]!;
					ctx.meta.$responseHeaders = { "Cache-Control": "public, max-age=3600" };
					return asset(ctx.params.file);
				}
			}
		}
	};
	return schema as Partial<ServiceSchema>;
}
