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
	{
		files: ["test/**/*.ts", "bench/**/*.ts"],
		rules: {
			"@typescript-eslint/no-require-imports": "off",
			"@typescript-eslint/no-non-null-assertion": "off"
		}
	}
);
