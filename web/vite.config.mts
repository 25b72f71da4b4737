/**
 * The web app (storefront at `/`, operations dashboard at `/admin`): Vite + Preact + TypeScript,
 * built by `npm run build` into dist/web, which the gateway serves (services/api/api.service.ts).
 * `npx vite --config web/vite.config.mts` serves it in development, proxying /api to a shop on
 * SHOP_URL (default http://127.0.0.1:3000).
 */
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = fileURLToPath(new URL(".", import.meta.url));

export default defineConfig({
	root: here,
	base: "/",
	publicDir: "public",
	// JSX for Preact without a plugin: the automatic runtime from preact/jsx-runtime.
	oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
	build: {
		outDir: fileURLToPath(new URL("../dist/web", import.meta.url)),
		emptyOutDir: true,
		target: "es2022",
		sourcemap: true,
		// Everything is a file of its own: the CSP allows no inline script, style or data: module.
		assetsInlineLimit: 0
	},
	server: {
		proxy: { "/api": process.env.SHOP_URL ?? "http://127.0.0.1:3000" }
	}
});
