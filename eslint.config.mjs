// ESLint flat config: @eslint/js + typescript-eslint with type information, so that
// `no-floating-promises` (a forgotten await) is an error everywhere.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
	{
		ignores: [
			"dist/**",
			"node_modules/**",
			"coverage/**",
			".data/**",
			"jest.config.js",
			"eslint.config.mjs"
		]
	},
	js.configs.recommended,
	...tseslint.configs.recommended,
	{
		// Plain Node scripts of the benchmark (bench/saga-probe.mjs, its preload).
		files: ["bench/**/*.mjs", "bench/**/*.cjs"],
		languageOptions: {
			globals: Object.fromEntries(
				["process", "console", "setTimeout", "fetch", "URL", "__dirname", "require"].map(
					g => [g, "readonly"]
				)
			)
		},
		rules: { "@typescript-eslint/no-require-imports": "off" }
	},
	{
		files: ["**/*.ts"],
		languageOptions: {
			parserOptions: { project: "./tsconfig.test.json", tsconfigRootDir: import.meta.dirname }
		},
		rules: {
			"@typescript-eslint/no-floating-promises": "error",
			"@typescript-eslint/no-misused-promises": ["error", { checksVoidReturn: false }],
			"@typescript-eslint/await-thenable": "error",
			"@typescript-eslint/no-explicit-any": "off",
			"@typescript-eslint/no-unused-vars": [
				"error",
				{ argsIgnorePattern: "^_", varsIgnorePattern: "^_" }
			],
			"no-console": "off"
		}
	},
	// The web app (web/): browser code and its Vite config, each with its own tsconfig.
	{
		files: ["web/**/*.ts", "web/**/*.tsx", "web/**/*.mts"],
		languageOptions: {
			parserOptions: {
				project: ["./web/tsconfig.json", "./web/tsconfig.node.json"],
				tsconfigRootDir: import.meta.dirname
			}
		},
		rules: {
			"@typescript-eslint/no-floating-promises": "error",
			"@typescript-eslint/no-misused-promises": ["error", { checksVoidReturn: false }],
			"@typescript-eslint/await-thenable": "error",
			"@typescript-eslint/no-unused-vars": [
				"error",
				{ argsIgnorePattern: "^_", varsIgnorePattern: "^_" }
			]
		}
	},
	// The layering (docs/architecture.md): platform/ knows no service, mixins/ wire platform/ into
	// a service, a service sees platform/, mixins/ and other services' *.model.ts only, app/ names
	// every service, tools/ are dev-only servers. Checked on the import specifiers.
	{
		files: ["platform/**/*.ts"],
		rules: {
			"no-restricted-imports": [
				"error",
				{
					patterns: [
						{
							regex: "^(\\.\\./)+(mixins|services|app|tools|bin)(/|$)|moleculer\\.config",
							message: "platform/ imports nothing above it (docs/architecture.md)."
						}
					]
				}
			]
		}
	},
	{
		files: ["mixins/**/*.ts"],
		rules: {
			"no-restricted-imports": [
				"error",
				{
					patterns: [
						{
							regex: "^(\\.\\./)+(services|app|tools|bin)(/|$)|^\\./(?!.*\\.mixin$)|moleculer\\.config",
							message:
								"A mixin wires platform/ into a service: it imports platform/ and other mixins only."
						}
					]
				}
			]
		}
	},
	{
		files: ["services/**/*.ts"],
		rules: {
			"no-restricted-imports": [
				"error",
				{
					patterns: [
						{
							regex: "^(\\.\\./)+(app|tools|bin)(/|$)|moleculer\\.config",
							message: "A service does not import the composition root or dev tools."
						},
						{
							regex: "^\\.\\./(?!\\.\\.)[^/]+/(?![^/]+\\.model$)[^/]+$",
							message: "Another service is seen through its *.model.ts only."
						}
					]
				}
			]
		}
	},
	{
		files: ["test/**/*.ts", "bench/**/*.ts"],
		rules: {
			"@typescript-eslint/no-require-imports": "off",
			"@typescript-eslint/no-non-null-assertion": "off"
		}
	}
);
