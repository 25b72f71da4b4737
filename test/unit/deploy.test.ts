/**
 * The deployment files, checked against the code they deploy. There is no Docker engine nor
 * Kubernetes cluster where the suite runs, so docker-compose.yml, the Dockerfile, .env.example,
 * deploy/nats/nats.conf, deploy/postgres/init.sql, deploy/prometheus/prometheus.yml and every
 * deploy/k8s/*.yaml (multi-document) are parsed (the `yaml` package) and cross-checked:
 *
 * - every service of services/*.service.ts has a compose container and a Kubernetes Deployment,
 *   each running exactly that service's compiled file with moleculer-runner and the shop config;
 * - every environment variable they set is one platform/config.ts reads (or a documented variable of
 *   an infrastructure image), the nodes get the ones CONTRACT.md says a distributed node needs,
 *   and the resulting environment is accepted by `loadConfig` (secret placeholders are not);
 * - only the nodes that sign or verify access tokens (users) get `JWT_SECRET`, only users gets
 *   `ADMIN_PASSWORD`; every value the Kubernetes Secret ships is a placeholder platform/security/secrets.ts
 *   refuses in production, naming the variable;
 * - the Postgres init scripts create exactly the databases platform/db/database.ts computes from that
 *   environment; the URLs point at services and ports that exist;
 * - probes and healthchecks hit routes that exist (the gateway's /health and /ready in
 *   services/api/api.service.ts, every node's /health and /ready of platform/node-health.ts, the
 *   Prometheus path of moleculer.config.ts) on the ports PORT, HEALTH_PORT and METRICS_PORT say;
 * - grace periods outlast the broker's tracking.shutdownTimeout (read from moleculer.config.ts);
 * - NATS has JetStream with `sync_interval: always`; the Dockerfile is multi-stage, compiles what
 *   tsconfig.json includes, ends as a non-root USER with a HEALTHCHECK;
 * - NATS is a cluster of three in both forms (docs/nats-cluster.md): three compose services / a
 *   StatefulSet of three behind a headless Service, each server named, with its own JetStream
 *   store, routed to every server; every node's TRANSPORTER lists the three client addresses and
 *   JETSTREAM_REPLICAS is 3 (no more than the servers);
 * - the stateful services of an order's path (orders, inventory, payments, notifications) run two
 *   nodes in both forms;
 * - Deployments have resources, both probes and a non-root security context.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { BrokerOptions } from "moleculer";
import { parse, parseAllDocuments } from "yaml";
import { DATABASE_SERVICES } from "../../app/services";
import { ConfigError, loadConfig, resetConfig } from "../../platform/config";
import { ENV_FIELDS, SERVICE_DATABASE_URL } from "../../platform/config/schema";
import { placeholderReason, SECRET_URL_VARIABLES } from "../../platform/security/secrets";
import { databaseUrl } from "../../platform/db/database";
import { NODE_HEALTH_PATHS } from "../../platform/node-health";

type Obj = Record<string, any>;

const ROOT = path.resolve(__dirname, "..", "..");
const read = (rel: string): string => fs.readFileSync(path.join(ROOT, rel), "utf8");

/** The services, one per services/<name>/<name>.service.ts. */
const SERVICES = fs
	.readdirSync(path.join(ROOT, "services"))
	.filter(d => fs.existsSync(path.join(ROOT, "services", d, `${d}.service.ts`)))
	.sort();

/** Minimum replicas per Deployment; the rest need 1. */
const MIN_REPLICAS: Record<string, number> = {
	api: 2,
	inventory: 2,
	orders: 2,
	products: 2,
	payments: 2,
	notifications: 2
};

/**
 * The services that run two nodes in every cluster form (tools/cluster-args.ts: npm run cluster,
 * docker-compose.yml, deploy/k8s): saga leases, outbox relays and durable consumers shared.
 */
const REPLICATED = ["orders", "inventory", "payments", "notifications"];

/** NATS servers in the cluster forms, and the JetStream replicas the nodes ask for. */
const NATS_SERVERS = 3;

/** Variables of infrastructure images (not of the shop's code) a deployment may set. */
const INFRA_VARS: Record<string, string> = {
	POSTGRES_USER: "postgres image: the superuser it creates",
	POSTGRES_PASSWORD:
		"postgres image: that user's password (compose interpolates it into DATABASE_URL)",
	PGDATA: "postgres image: the data directory",
	GF_AUTH_ANONYMOUS_ENABLED: "grafana image: anonymous visitors may view dashboards",
	GF_AUTH_ANONYMOUS_ORG_ROLE: "grafana image: their role (Viewer)",
	SERVER_NAME: "nats image: the server's name, read by nats.conf ($SERVER_NAME)"
};

/** Variables whose values are secrets: never in a ConfigMap. */
const SECRET_VARS = ["JWT_SECRET", "DATABASE_URL", "ADMIN_PASSWORD", "POSTGRES_PASSWORD"];

/** What a node started one per process needs (CONTRACT.md: Commands and Environment). */
const NODE_VARS = ["NODE_ENV", "TRANSPORTER", "CACHER", "METRICS_PORT"];

/**
 * The services that sign or verify access tokens: users signs them (login, register) and
 * verifies them (`users.resolveToken`, which the gateway calls). Only their nodes get JWT_SECRET;
 * only users seeds the administrator (ADMIN_PASSWORD).
 */
const TOKEN_SERVICES = ["users"];

/** Which secrets a node of `service` gets: the token secret and admin password only where used. */
function expectSecretsOnlyWhereUsed(service: string, env: Record<string, string>): void {
	expect({ service, JWT_SECRET: "JWT_SECRET" in env }).toEqual({
		service,
		JWT_SECRET: TOKEN_SERVICES.includes(service)
	});
	expect({ service, ADMIN_PASSWORD: "ADMIN_PASSWORD" in env }).toEqual({
		service,
		ADMIN_PASSWORD: service === "users"
	});
}

/** A valid secret substituted for the placeholders when an environment is given to loadConfig. */
const TEST_SECRET = "t".repeat(48);

/** The exact command of the node holding `service`. */
const runnerCommand = (service: string): string[] => [
	"node_modules/.bin/moleculer-runner",
	"--config",
	"dist/moleculer.config.js",
	`dist/services/${service}/${service}.service.js`
];

/**
 * The names platform/config.ts reads: the variables of its schema (platform/config/schema.ts;
 * test/unit/config-docs.test.ts checks that each is read and that the sources read no other),
 * and each service's `<SERVICE>_DATABASE_URL`.
 */
function configVars(): Set<string> {
	const names = new Set<string>(Object.keys(ENV_FIELDS));
	for (const s of DATABASE_SERVICES)
		if (SERVICE_DATABASE_URL.pattern.test(`${s.toUpperCase()}_DATABASE_URL`))
			names.add(`${s.toUpperCase()}_DATABASE_URL`);
	return names;
}

/** The variable names of CONTRACT.md's "Environment" table. */
function contractVars(): string[] {
	const contract = fs.readFileSync(path.join(ROOT, "docs", "CONTRACT.md"), "utf8");
	const section = contract.split(/^## /m).find(s => s.startsWith("Environment"));
	if (!section) throw new Error("CONTRACT.md has no Environment section");
	return section
		.split("\n")
		.filter(l => l.startsWith("| `"))
		.flatMap(l => [...l.split("|")[1]!.matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map(m => m[1]!));
}

/** The paths the gateway serves outside /api: the "GET <name>" aliases of its route "/". */
function gatewayRootPaths(): Set<string> {
	const src = read("services/api/api.service.ts");
	const at = src.search(/path:\s*"\/",/);
	if (at < 0) throw new Error('api.service.ts has no route with path "/"');
	const route = src.slice(at, src.indexOf("onError", at));
	return new Set([...route.matchAll(/"GET ([a-z-]+)"/g)].map(m => `/${m[1]}`));
}

/** KEY=VALUE lines of a dotenv file. */
function parseDotenv(text: string): Record<string, string> {
	const vars: Record<string, string> = {};
	for (const line of text.split("\n")) {
		const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line.trim());
		if (m) vars[m[1]!] = m[2]!;
	}
	return vars;
}

/** Every `${VAR...}` compose would interpolate in a text. */
const interpolated = (text: string): string[] =>
	[...text.matchAll(/\$\{([A-Z][A-Z0-9_]*)/g)].map(m => m[1]!);

/**
 * Compose's interpolation of `${VAR}`, `${VAR:-default}` and `${VAR:?error}` with `vars`.
 * @throws Error where compose would refuse (a required variable unset or empty)
 */
function interpolate(value: string, vars: Record<string, string>): string {
	return value.replace(
		/\$\{([A-Z][A-Z0-9_]*)(?:(:?)([-?])([^}]*))?\}/g,
		(_all, name: string, colon: string, op: string | undefined, arg: string) => {
			const v = vars[name];
			const unset = v === undefined || (colon === ":" && v === "");
			if (op === "-") return unset ? arg : v!;
			if (op === "?" && unset) throw new Error(`compose refuses: ${name}: ${arg}`);
			return v ?? "";
		}
	);
}

/** The statements `CREATE DATABASE <name>` of an SQL script, comments removed. */
function createdDatabases(sql: string): string[] {
	const code = sql.replace(/--.*$/gm, "");
	return [...code.matchAll(/CREATE\s+DATABASE\s+"?([A-Za-z0-9_]+)"?\s*;/gi)]
		.map(m => m[1]!)
		.sort();
}

/** The `jetstream { ... }` block of a NATS config, or null. */
function jetstreamBlock(conf: string): string | null {
	const code = conf.replace(/#.*$/gm, "");
	return /\bjetstream\s*[:=]?\s*\{([^}]*)\}/.exec(code)?.[1] ?? null;
}

/** The `cluster { ... }` block of a NATS config: its name, listen port and routes. */
function clusterBlock(conf: string): { name: string; listenPort: number; routes: string[] } {
	const code = conf.replace(/#.*$/gm, "");
	const block = /\bcluster\s*[:=]?\s*\{([^}]*)\}/.exec(code)?.[1];
	if (!block) throw new Error("nats.conf: no cluster block");
	const name = /^\s*name\s*[:=]\s*"?([^"\s]+)"?\s*$/m.exec(block)?.[1];
	const listen = /^\s*listen\s*[:=]\s*"?([^"\s]+)"?\s*$/m.exec(block)?.[1];
	const routes = /\broutes\s*[:=]?\s*\[([^\]]*)\]/.exec(block)?.[1];
	if (!name || !listen || routes === undefined)
		throw new Error("nats.conf: the cluster block needs name, listen and routes");
	return {
		name,
		listenPort: Number(listen.split(":").pop()),
		routes: routes.split(/[\s,]+/).filter(Boolean)
	};
}

/** A NATS config's top-level `name: value` (outside blocks), or null. */
function topLevel(conf: string, name: string): string | null {
	const code = conf.replace(/#.*$/gm, "").replace(/\{[^}]*\}/g, "{}");
	return new RegExp(`^\\s*${name}\\s*[:=]\\s*"?([^"\\s]+)"?\\s*$`, "m").exec(code)?.[1] ?? null;
}

/** The JetStream `store_dir` of a NATS config. */
function storeDir(conf: string): string {
	const m = /^\s*store_dir\s*[:=]\s*"?([^"\s]+)"?\s*$/m.exec(jetstreamBlock(conf) ?? "");
	if (!m) throw new Error("nats.conf: no jetstream store_dir");
	return m[1]!;
}

/** Whether `dir` is `mount` or below it. */
const isUnder = (dir: string, mount: string): boolean =>
	dir === mount || dir.startsWith(mount.replace(/\/$/, "") + "/");

/** Runs `fn` with exactly `env` as process.env and a fresh config; restores both. */
function withEnv<T>(env: Record<string, string>, fn: () => T): T {
	const saved = process.env;
	process.env = { ...env };
	resetConfig();
	try {
		return fn();
	} finally {
		process.env = saved;
		resetConfig();
	}
}

/** The database names platform/db/database.ts computes for a node with environment `env`. */
const computedDatabases = (env: Record<string, string>): string[] =>
	withEnv(env, () =>
		DATABASE_SERVICES.map(s => decodeURIComponent(new URL(databaseUrl(s)).pathname.slice(1)))
	).sort();

/** Seconds of a compose duration such as `20s`, `1m30s`. */
function durationSeconds(d: string): number {
	let total = 0;
	for (const m of d.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g))
		total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] as "ms" | "s" | "m" | "h"];
	return total;
}

describe("deployment files", () => {
	let dataDir: string;
	let broker: BrokerOptions;
	let shutdownSeconds: number;
	const CONFIG_VARS = configVars();
	/** What moleculer-runner itself reads (node_modules/moleculer/src/runner.js). */
	const RUNNER_VARS = ["SERVICES", "SERVICEDIR"];

	beforeAll(() => {
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-deploy-"));
		// moleculer.config.ts reads the config at import: give it a harmless environment.
		broker = withEnv(
			{ DATA_DIR: dataDir, JWT_SECRET: TEST_SECRET, METRICS_PORT: "3030" },
			() => {
				jest.resetModules();
				return require("../../moleculer.config") as BrokerOptions;
			}
		);
		const timeout = (broker.tracking as { shutdownTimeout?: number } | undefined)
			?.shutdownTimeout;
		expect(broker.tracking?.enabled).toBe(true);
		expect(typeof timeout).toBe("number");
		shutdownSeconds = timeout! / 1000;
	});
	afterAll(() => {
		fs.rmSync(dataDir, { recursive: true, force: true });
	});

	/** An environment for loadConfig: `env` plus a temporary DATA_DIR. */
	const configEnv = (env: Record<string, string>): Record<string, string> => ({
		...env,
		DATA_DIR: dataDir
	});

	/** The Prometheus reporter's path (moleculer.config.ts). */
	function metricsPath(): string {
		const reporters =
			broker.metrics && typeof broker.metrics === "object" ? broker.metrics.reporter : null;
		const list = (Array.isArray(reporters) ? reporters : [reporters]) as Obj[];
		const prom = list.find(r => r?.type === "Prometheus");
		expect(prom).toBeDefined();
		return (prom!.options?.path as string | undefined) ?? "/metrics";
	}

	describe("what the checks read", () => {
		it("finds the services, the config's variables and the contract's", () => {
			expect(SERVICES).toEqual(
				expect.arrayContaining([
					"api",
					"users",
					"products",
					"inventory",
					"orders",
					"payments",
					"notifications"
				])
			);
			for (const v of [
				"PORT",
				"TRANSPORTER",
				"CACHER",
				"DATABASE_URL",
				"JWT_SECRET",
				"METRICS_PORT",
				"ORDERS_DATABASE_URL"
			])
				expect(CONFIG_VARS).toContain(v);
			const contract = contractVars();
			expect(contract).toEqual(
				expect.arrayContaining(["TRANSPORTER", "DATABASE_URL", "CACHER", "ADMIN_PASSWORD"])
			);
			// The contract documents only variables the code reads.
			for (const v of contract)
				expect({ v, read: CONFIG_VARS.has(v) }).toEqual({ v, read: true });
			for (const v of NODE_VARS) expect(contract).toContain(v);
			// And every variable the code reads is documented there (a service's own database URL in
			// the DATABASE_URL row, as `<SERVICE>_DATABASE_URL`).
			const documented = new Set(contract);
			expect(read("docs/CONTRACT.md")).toContain("`<SERVICE>_DATABASE_URL`");
			for (const v of CONFIG_VARS) {
				const row = /^[A-Z0-9]+_DATABASE_URL$/.test(v) ? "DATABASE_URL" : v;
				expect({ v, documented: documented.has(row) }).toEqual({ v, documented: true });
			}
		});

		it("finds the gateway's health routes and the broker's shutdown timeout", () => {
			expect(gatewayRootPaths()).toEqual(new Set(["/health", "/ready"]));
			expect(shutdownSeconds).toBeGreaterThan(0);
			expect(metricsPath()).toMatch(/^\//);
		});
	});

	describe("Dockerfile", () => {
		const dockerfile = read("Dockerfile");
		const lines = dockerfile
			.replace(/\\\n/g, " ")
			.split("\n")
			.map(l => l.trim())
			.filter(l => l !== "" && !l.startsWith("#"));
		const froms = lines.map((l, i) => [l, i] as const).filter(([l]) => /^FROM\s/i.test(l));
		const lastFrom = froms[froms.length - 1]![1];
		const finalStage = lines.slice(lastFrom);

		it("is multi-stage on the Node major the project pins", () => {
			expect(froms.length).toBeGreaterThanOrEqual(2);
			expect(finalStage.some(l => /^COPY\s+--from=/i.test(l))).toBe(true);
			const pkg = JSON.parse(read("package.json")) as {
				devDependencies: Record<string, string>;
			};
			const major = /(\d+)/.exec(pkg.devDependencies.node!)![1];
			for (const [l] of froms)
				expect(l).toMatch(new RegExp(`^FROM\\s+node:${major}[.-]`, "i"));
		});

		it("compiles everything tsconfig.json includes", () => {
			const tsconfig = JSON.parse(read("tsconfig.json")) as { include: string[] };
			const build = lines.slice(froms[0]![1], froms[1]![1]).join("\n");
			expect(build).toMatch(/\btsc\b/);
			for (const inc of tsconfig.include)
				expect(build).toMatch(
					new RegExp(`^COPY\\s.*\\b${inc.replace(/\./g, "\\.")}\\b`, "m")
				);
		});

		it("ends as a non-root USER with a HEALTHCHECK on the node's /ready", () => {
			const users = finalStage.filter(l => /^USER\s/i.test(l));
			expect(users.length).toBeGreaterThan(0);
			const user = users[users.length - 1]!.split(/\s+/)[1]!.split(":")[0]!;
			expect(["root", "0"]).not.toContain(user);
			const health = finalStage.find(l => /^HEALTHCHECK\s/i.test(l));
			expect(health).toBeDefined();
			expect(health).not.toMatch(/\bNONE\b/);
			// The port it falls back to is the config's default HEALTH_PORT; the path the node's /ready.
			const defaultPort = loadConfig(configEnv({ JWT_SECRET: TEST_SECRET })).healthPort;
			expect(health).toContain("HEALTH_PORT");
			expect(health).toContain(`'${defaultPort}'`);
			expect(health).toContain("'/ready')");
			expect(NODE_HEALTH_PATHS).toContain("/ready");
		});

		it("runs moleculer-runner with the shop config by default", () => {
			const cmd = finalStage.filter(l => /^CMD\s/i.test(l)).pop();
			expect(JSON.parse(cmd!.replace(/^CMD\s+/i, ""))).toEqual(runnerCommand("api"));
		});
	});

	describe("deploy/nats/nats.conf", () => {
		it("enables JetStream with sync_interval always and monitoring on 8222", () => {
			const conf = read("deploy/nats/nats.conf");
			const js = jetstreamBlock(conf);
			expect(js).not.toBeNull();
			expect(js).toMatch(/^\s*sync_interval\s*[:=]\s*"?always"?\s*$/m);
			expect(js).toMatch(/^\s*store_dir\s*[:=]/m);
			expect(conf.replace(/#.*$/gm, "")).toMatch(/^\s*http_port\s*[:=]\s*8222\s*$/m);
		});

		it("clusters three servers, each named from its environment, routed to all three", () => {
			const conf = read("deploy/nats/nats.conf");
			// JetStream in a cluster tells servers apart by name: one config, a name per server.
			expect(topLevel(conf, "server_name")).toBe("$SERVER_NAME");
			const cluster = clusterBlock(conf);
			expect(cluster.listenPort).toBe(6222);
			expect(cluster.routes).toEqual(
				Array.from({ length: NATS_SERVERS }, (_, i) => `nats://nats-${i + 1}:6222`)
			);
		});
	});

	describe("docker-compose.yml", () => {
		const compose = parse(read("docker-compose.yml"), { merge: true }) as Obj;
		const example = parseDotenv(read(".env.example"));
		/** .env.example with the required secrets filled in, as a user would. */
		const filled = {
			...example,
			JWT_SECRET: TEST_SECRET,
			ADMIN_PASSWORD: "admin-password-for-tests",
			POSTGRES_PASSWORD: "pw-for-tests"
		};
		const services = compose.services as Record<string, Obj>;
		const nodeNames = Object.keys(services).filter(
			n =>
				Array.isArray(services[n]!.command) &&
				String(services[n]!.command[0]).includes("moleculer-runner")
		);
		/** The NATS servers: the services running the nats image. */
		const natsNames = Object.keys(services)
			.filter(n => /^nats:/.test(String(services[n]!.image)))
			.sort();
		/** A container's environment as compose would pass it. */
		const envOf = (
			name: string,
			vars: Record<string, string> = filled
		): Record<string, string> =>
			Object.fromEntries(
				Object.entries((services[name]!.environment ?? {}) as Record<string, unknown>).map(
					([k, v]) => [k, interpolate(String(v ?? ""), vars)]
				)
			);

		it("has one node per service, each running exactly its service (SERVICES=<name>)", () => {
			expect(nodeNames.sort()).toEqual(SERVICES);
			for (const s of SERVICES) {
				// moleculer-runner with the shop config and no file: it loads SERVICES from
				// SERVICEDIR (node_modules/moleculer/src/runner.js), i.e. the directory
				// dist/services/<s>, globbing **/*.service.js there: exactly <s>.service.js.
				expect(services[s]!.command).toEqual(runnerCommand(s).slice(0, 3));
				const env = envOf(s);
				expect({ s, SERVICES: env.SERVICES }).toEqual({ s, SERVICES: s });
				expect(env.SERVICEDIR).toBe("dist/services");
				const sources = fs
					.readdirSync(path.join(ROOT, "services", s), { recursive: true })
					.map(String)
					.filter(f => f.endsWith(".service.ts"));
				expect(sources).toEqual([`${s}.service.ts`]);
				expect(services[s]!.build).toBe(".");
			}
			// The documented runner command (docs/CONTRACT.md) stays the image's default.
			const runner = read("node_modules/moleculer/src/runner.js");
			expect(runner).toContain("process.env.SERVICES");
			expect(runner).toContain("process.env.SERVICEDIR");
			expect(fs.existsSync(path.join(ROOT, "node_modules", ".bin", "moleculer-runner"))).toBe(
				true
			);
		});

		it("runs NATS with its config, Postgres 16+, Redis, Jaeger and Prometheus", () => {
			const conf = read("deploy/nats/nats.conf");
			const natsVolumes = new Set<string>();
			for (const name of natsNames) {
				const nats = services[name]!;
				expect(nats.image).toMatch(/^nats:2\.(1\d|[2-9]\d)/); // sync_interval needs 2.10+
				const mount = (nats.volumes as string[]).find(v =>
					v.startsWith("./deploy/nats/nats.conf:")
				);
				expect(mount).toBeDefined();
				expect(nats.command).toEqual(["--config", mount!.split(":")[1]]);
				expect((nats.ports as string[]).some(p => p.endsWith(":8222"))).toBe(true);
				expect((nats.healthcheck.test as string[]).join(" ")).toContain(
					"http://127.0.0.1:8222/healthz"
				);
				// JetStream stores on the server's own named volume, not in the container's layer.
				const natsData = (nats.volumes as string[]).find(v => !v.startsWith("./"))!;
				expect(compose.volumes).toHaveProperty([natsData.split(":")[0]!]);
				expect(isUnder(storeDir(conf), natsData.split(":")[1]!)).toBe(true);
				natsVolumes.add(natsData.split(":")[0]!);
			}
			expect(natsVolumes.size).toBe(natsNames.length);

			expect(
				Number(/^postgres:(\d+)/.exec(services.postgres!.image)?.[1])
			).toBeGreaterThanOrEqual(16);
			expect(services.postgres!.volumes).toContain(
				"./deploy/postgres/init.sql:/docker-entrypoint-initdb.d/init.sql:ro"
			);
			expect(services.redis!.image).toMatch(/^redis:/);
			expect(services.jaeger!.image).toMatch(/^jaegertracing\/jaeger:2\./);
			for (const port of ["16686", "4318"])
				expect((services.jaeger!.ports as string[]).some(p => p.endsWith(`:${port}`))).toBe(
					true
				);
			expect(services.prometheus!.volumes).toContain(
				"./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
			);
		});

		it("sets only variables platform/config.ts reads, and those a node needs", () => {
			for (const s of SERVICES) {
				const env = envOf(s);
				// SERVICES and SERVICEDIR are moleculer-runner's own (which service it loads).
				for (const name of Object.keys(env).filter(n => !RUNNER_VARS.includes(n)))
					expect({ s, name, read: CONFIG_VARS.has(name) }).toEqual({
						s,
						name,
						read: true
					});
				for (const name of [...NODE_VARS, "DATABASE_URL"])
					expect({ s, name, set: name in env }).toEqual({ s, name, set: true });
				expect(env.NODE_ENV).toBe("production");
				expectSecretsOnlyWhereUsed(s, env);
			}
			expect(envOf("api").PORT).toBeDefined();
			for (const infra of [
				...natsNames,
				"postgres",
				"redis",
				"jaeger",
				"prometheus",
				"grafana"
			])
				for (const name of Object.keys(services[infra]!.environment ?? {}))
					expect(INFRA_VARS).toHaveProperty(name);
		});

		it("takes its variables from .env.example, refusing to start without the secrets", () => {
			const text = read("docker-compose.yml");
			const used = new Set(interpolated(text));
			const listed = Object.keys(example);
			expect([...used].sort()).toEqual(listed.sort());
			for (const name of listed)
				expect({ name, known: CONFIG_VARS.has(name) || name in INFRA_VARS }).toEqual({
					name,
					known: true
				});
			// .env.example as shipped leaves the secrets empty: compose refuses to start.
			expect(example.JWT_SECRET).toBe("");
			expect(example.POSTGRES_PASSWORD).toBe("");
			expect(() => envOf("users", example)).toThrow(/JWT_SECRET|POSTGRES_PASSWORD/);
			// A production users node never generates an administrator password (it would be
			// logged): compose refuses to start users without one.
			expect(example.ADMIN_PASSWORD).toBe("");
			expect(() =>
				envOf("users", { ...example, JWT_SECRET: TEST_SECRET, POSTGRES_PASSWORD: "pw" })
			).toThrow(/ADMIN_PASSWORD/);
			expect(() =>
				interpolate(String(services.postgres!.environment.POSTGRES_PASSWORD), example)
			).toThrow(/POSTGRES_PASSWORD/);
		});

		it("gives every node an environment platform/config.ts accepts, pointing at the containers", () => {
			for (const s of SERVICES) {
				const env = envOf(s);
				const c = loadConfig(configEnv(env));
				expect(c.production).toBe(true);
				const hosts = [c.cacher, c.databaseUrl, c.otlpTracing?.tracesUrl].map(
					u => new URL(u!)
				);
				for (const u of hosts) expect(services).toHaveProperty([u.hostname]);
				expect(hosts[0]!.port).toBe("6379");
				expect(hosts[1]!.port).toBe("5432");
				expect(hosts[2]!.port).toBe("4318");
				expect(hosts[2]!.pathname).toBe("/v1/traces");
				// Every NATS server, on its client port: a node fails over to another one.
				const servers = c.transporter!.split(",").map(u => new URL(u));
				expect(servers.map(u => u.hostname).sort()).toEqual(natsNames);
				for (const u of servers) expect(u.port).toBe("4222");
				expect(c.jetstreamReplicas).toBe(NATS_SERVERS);
			}
		});

		it("clusters three NATS servers, each named, routed to every server", () => {
			expect(natsNames).toHaveLength(NATS_SERVERS);
			const cluster = clusterBlock(read("deploy/nats/nats.conf"));
			// The routes are the servers' names at the port the config listens on for routes.
			expect(cluster.routes.map(r => new URL(r)).map(u => `${u.hostname}:${u.port}`)).toEqual(
				natsNames.map(n => `${n}:${cluster.listenPort}`)
			);
			// Each its own server_name (nats.conf reads $SERVER_NAME), and no server waits for
			// another: they start together and elect a JetStream meta leader.
			const names = natsNames.map(n => String(services[n]!.environment.SERVER_NAME));
			expect(new Set(names).size).toBe(NATS_SERVERS);
			for (const n of natsNames)
				for (const other of natsNames)
					expect(services[n]!.depends_on?.[other]).toBeUndefined();
			// The nodes start once every server is healthy (a JetStream quorum exists).
			for (const s of SERVICES)
				for (const n of natsNames)
					expect({ s, n, dep: services[s]!.depends_on[n] }).toEqual({
						s,
						n,
						dep: { condition: "service_healthy" }
					});
			// JETSTREAM_REPLICAS: one per server, no more than the cluster can hold.
			for (const s of SERVICES)
				expect(envOf(s).JETSTREAM_REPLICAS).toBe(String(NATS_SERVERS));
		});

		it("runs two nodes of each stateful service of an order's path", () => {
			for (const s of SERVICES)
				expect({ s, replicas: services[s]!.deploy?.replicas ?? 1 }).toEqual({
					s,
					replicas: REPLICATED.includes(s) ? 2 : 1
				});
			// Replicas publish no host port of their own (two containers cannot bind one).
			for (const s of REPLICATED) expect(services[s]!.ports).toBeUndefined();
		});

		it("initialises Postgres with exactly the databases the code computes, for the user the nodes use", () => {
			const env = envOf("orders");
			expect(createdDatabases(read("deploy/postgres/init.sql"))).toEqual(
				computedDatabases(env)
			);
			const url = new URL(env.DATABASE_URL!);
			const pg = services.postgres!.environment as Obj;
			expect(decodeURIComponent(url.username)).toBe(pg.POSTGRES_USER);
			expect(decodeURIComponent(url.password)).toBe(
				interpolate(String(pg.POSTGRES_PASSWORD), filled)
			);
		});

		it("probes endpoints that exist, and stops slower than the broker drains", () => {
			const routes = gatewayRootPaths();
			const port = envOf("api").PORT;
			const test = (services.api!.healthcheck.test as string[]).join(" ");
			const m = /http:\/\/127\.0\.0\.1:(\d+)(\/[a-z-]+)/.exec(test);
			expect(m).not.toBeNull();
			expect(m![1]).toBe(port);
			expect(routes).toContain(m![2]);
			expect((services.api!.ports as string[]).some(p => p.endsWith(`:${port}`))).toBe(true);
			for (const s of SERVICES) {
				// Other nodes probe their own /ready on HEALTH_PORT (platform/node-health.ts).
				if (s !== "api") {
					const probe = (services[s]!.healthcheck.test as string[]).join(" ");
					const n = /http:\/\/127\.0\.0\.1:(\d+)(\/[a-z-]+)/.exec(probe);
					expect(n).not.toBeNull();
					expect({ s, port: n![1] }).toEqual({ s, port: envOf(s).HEALTH_PORT });
					expect(n![2]).toBe("/ready");
				}
				expect(durationSeconds(String(services[s]!.stop_grace_period))).toBeGreaterThan(
					shutdownSeconds
				);
			}
			// The gateway starts once the services it calls are ready.
			for (const s of SERVICES.filter(x => x !== "api"))
				expect(services.api!.depends_on[s]).toEqual({ condition: "service_healthy" });
		});

		it("provisions Grafana with that Prometheus and a dashboard of metrics the code exports", () => {
			const grafana = services.grafana!;
			const mounts = new Map(
				(grafana.volumes as string[]).map(v => v.split(":").slice(0, 2) as [string, string])
			);
			for (const [from] of mounts) expect(fs.existsSync(path.join(ROOT, from))).toBe(true);
			const provisioning = mounts.get("./deploy/grafana/provisioning");
			expect(provisioning).toBe("/etc/grafana/provisioning");
			const dashboardsAt = mounts.get("./deploy/grafana/dashboards");
			expect(dashboardsAt).toBeDefined();
			expect(grafana.depends_on).toContain("prometheus");
			// The data source is the compose Prometheus on its port; the provider reads the mount.
			const ds = (
				parse(read("deploy/grafana/provisioning/datasources/prometheus.yml")) as Obj
			).datasources[0] as Obj;
			const dsUrl = new URL(ds.url as string);
			expect(services).toHaveProperty([dsUrl.hostname]);
			expect(
				(services.prometheus!.ports as string[]).some(p => p.endsWith(`:${dsUrl.port}`))
			).toBe(true);
			const provider = (
				parse(read("deploy/grafana/provisioning/dashboards/moleculer-shop.yml")) as Obj
			).providers[0] as Obj;
			expect(provider.options.path).toBe(dashboardsAt);

			// Every series a panel queries is one the shop or Moleculer exports.
			const { SHOP_METRICS } =
				require("../../platform/metrics") as typeof import("../../platform/metrics");
			const { METRIC } = require("moleculer") as { METRIC: Record<string, string> };
			const prom = (n: string): string => n.replace(/[.-]/g, "_");
			const exported = new Set<string>();
			for (const m of Object.values(SHOP_METRICS) as { name: string; type: string }[])
				exported.add(prom(m.name) + (m.type === "histogram" ? "_bucket" : ""));
			for (const m of read("platform/events/metrics.ts").matchAll(/"(shop\.[a-z_.]+)"/g))
				exported.add(prom(m[1]!));
			for (const v of Object.values(METRIC))
				if (typeof v === "string" && v.includes(".")) exported.add(prom(v));
			const dashboard = JSON.parse(
				read("deploy/grafana/dashboards/moleculer-shop.json")
			) as Obj;
			const targets = (dashboard.panels as Obj[]).flatMap(p => (p.targets ?? []) as Obj[]);
			expect(targets.length).toBeGreaterThan(10);
			const used = new Set(
				targets.flatMap(t =>
					[...String(t.expr).matchAll(/\b(?:shop|moleculer)_[a-z0-9_]+/g)].map(m => m[0])
				)
			);
			for (const name of used)
				expect({ name, exported: exported.has(name) }).toEqual({ name, exported: true });
			for (const m of [
				"shop_orders_created_total",
				"shop_orders_confirmed_total",
				"shop_orders_cancelled_total",
				"shop_saga_step_duration_bucket",
				"shop_saga_compensations_total",
				"shop_sagas_parked",
				"shop_inventory_reservations_total",
				"shop_outbox_lag_ms",
				"moleculer_cacher_found_total",
				"moleculer_cacher_get_total",
				"moleculer_circuit_breaker_opened_active"
			])
				expect(used).toContain(m);
			for (const p of dashboard.panels as Obj[])
				if (p.datasource) expect(p.datasource.uid).toBe(ds.uid);
		});

		it("has Prometheus scrape every node's metrics port and path", () => {
			const prom = parse(read("deploy/prometheus/prometheus.yml")) as Obj;
			const job = (prom.scrape_configs as Obj[]).find(j => j.job_name === "moleculer-shop")!;
			expect(job.metrics_path).toBe(metricsPath());
			const sd = (job.dns_sd_configs as Obj[])[0]!;
			expect([...(sd.names as string[])].sort()).toEqual(SERVICES);
			for (const s of SERVICES) expect(String(sd.port)).toBe(envOf(s).METRICS_PORT);
		});
	});

	describe("deploy/k8s", () => {
		const dir = path.join(ROOT, "deploy", "k8s");
		const files = fs
			.readdirSync(dir)
			.filter(f => f.endsWith(".yaml"))
			.sort();
		const kustomization = parse(
			fs.readFileSync(path.join(dir, "kustomization.yaml"), "utf8")
		) as Obj;
		const objects: Obj[] = files
			.filter(f => f !== "kustomization.yaml")
			.flatMap(f =>
				parseAllDocuments(fs.readFileSync(path.join(dir, f), "utf8")).map((doc): Obj => {
					if (doc.errors.length > 0) throw new Error(`${f}: ${doc.errors[0]!.message}`);
					return { ...(doc.toJS() as Obj), __file: f };
				})
			)
			.filter(o => o.kind !== undefined);
		const ofKind = (kind: string): Obj[] => objects.filter(o => o.kind === kind);
		const named = (kind: string, name: string): Obj => {
			const found = objects.find(o => o.kind === kind && o.metadata.name === name);
			if (!found) throw new Error(`no ${kind} ${name}`);
			return found;
		};
		const configMap = named("ConfigMap", "shop-config");
		const secret = named("Secret", "shop-secrets");
		const secretData = secret.stringData as Record<string, string>;
		const deployments = ofKind("Deployment").filter(
			d => d.metadata.labels?.["app.kubernetes.io/name"] === "moleculer-shop"
		);
		const containerOf = (d: Obj): Obj => d.spec.template.spec.containers[0];
		const deploymentOf = (service: string): Obj => {
			const found = deployments.filter(
				d =>
					JSON.stringify(containerOf(d).command) ===
					JSON.stringify(runnerCommand(service))
			);
			expect(found).toHaveLength(1);
			return found[0]!;
		};

		/** A container's environment: its ConfigMaps, then its own entries (values resolved). */
		function envOf(container: Obj): Record<string, string> {
			const env: Record<string, string> = {};
			for (const from of (container.envFrom ?? []) as Obj[]) {
				expect(from.configMapRef).toBeDefined();
				Object.assign(env, named("ConfigMap", from.configMapRef.name).data);
			}
			for (const e of (container.env ?? []) as Obj[]) {
				if (e.value !== undefined) env[e.name] = String(e.value);
				else {
					const ref = e.valueFrom.secretKeyRef as Obj;
					const data = named("Secret", ref.name).stringData as Record<string, string>;
					expect(data).toHaveProperty([ref.key]);
					env[e.name] = data[ref.key]!;
				}
			}
			return env;
		}

		/** `env` with the Secret's placeholders replaced by real values, as an operator would. */
		const realSecrets = (env: Record<string, string>): Record<string, string> => ({
			...env,
			...(env.DATABASE_URL
				? { DATABASE_URL: env.DATABASE_URL.replace("CHANGE-ME", "pw-for-tests") }
				: {}),
			...("JWT_SECRET" in env ? { JWT_SECRET: TEST_SECRET } : {}),
			...("ADMIN_PASSWORD" in env ? { ADMIN_PASSWORD: "a-real-admin-pw-4c9e" } : {})
		});

		/**
		 * The Service a host name resolves through: `<service>`, or `<pod>.<service>` for a pod of
		 * the StatefulSet that Service governs (headless), which must have that pod's ordinal.
		 */
		function serviceOf(host: string): Obj {
			const [first, second] = host.split(".");
			if (second === undefined) return named("Service", first!);
			const svc = named("Service", second);
			expect(svc.spec.clusterIP).toBe("None");
			const sts = ofKind("StatefulSet").find(x => x.spec.serviceName === second);
			expect(sts).toBeDefined();
			const m = new RegExp(`^${sts!.metadata.name}-(\\d+)$`).exec(first!);
			expect({ host, pod: m !== null }).toEqual({ host, pod: true });
			expect(Number(m![1])).toBeLessThan(sts!.spec.replicas as number);
			return svc;
		}

		/** A container port by name or number. */
		function portOf(container: Obj, port: string | number): number {
			if (typeof port === "number") return port;
			const p = ((container.ports ?? []) as Obj[]).find(x => x.name === port);
			if (!p) throw new Error(`container ${container.name} has no port ${port}`);
			return p.containerPort as number;
		}

		it("parses, and the kustomization lists every file", () => {
			expect(objects.length).toBeGreaterThan(10);
			const resources = (kustomization.resources as string[]).slice().sort();
			expect(resources).toEqual(files.filter(f => f !== "kustomization.yaml"));
			const readme = fs.readFileSync(path.join(dir, "README.md"), "utf8");
			for (const f of files)
				expect(readme).toContain(
					f.replace(
						/^(users|products|inventory|orders|payments|notifications)\.yaml$/,
						"<service>.yaml"
					)
				);
		});

		it("puts everything in the one Namespace", () => {
			const [ns] = ofKind("Namespace");
			expect(ns).toBeDefined();
			expect(kustomization.namespace).toBe(ns!.metadata.name);
			for (const o of objects.filter(x => x.kind !== "Namespace"))
				expect({ o: `${o.kind}/${o.metadata.name}`, ns: o.metadata.namespace }).toEqual({
					o: `${o.kind}/${o.metadata.name}`,
					ns: ns!.metadata.name
				});
		});

		it("keeps secrets in the Secret, with clearly marked placeholders", () => {
			for (const name of Object.keys(configMap.data)) expect(SECRET_VARS).not.toContain(name);
			for (const name of ["JWT_SECRET", "DATABASE_URL", "ADMIN_PASSWORD"])
				expect(secretData).toHaveProperty([name]);
			for (const [name, value] of Object.entries(secretData))
				expect({ name, placeholder: value.includes("CHANGE-ME") }).toEqual({
					name,
					placeholder: true
				});
			// Each one is refused in production (platform/security/secrets.ts), none passes (the admin password
			// shipped as "CHANGE-ME-admin-password" passed the password policy).
			for (const [name, value] of Object.entries(secretData)) {
				const url = (SECRET_URL_VARIABLES as readonly string[]).includes(name);
				expect({ name, refused: placeholderReason(value, url) !== null }).toEqual({
					name,
					refused: true
				});
				if (name === "POSTGRES_PASSWORD") continue; // the postgres image's, not the shop's
				// The token secret and the admin password are refused outside production too
				// (too short, too weak): no forgotten placeholder works anywhere.
				if (name === "JWT_SECRET" || name === "ADMIN_PASSWORD")
					expect(() => loadConfig(configEnv({ [name]: value }))).toThrow(ConfigError);
				expect(() =>
					loadConfig(
						configEnv({
							NODE_ENV: "production",
							JWT_SECRET: TEST_SECRET,
							[name]: value
						})
					)
				).toThrow(new RegExp(`^${name} still holds a placeholder`));
			}
			for (const name of [...Object.keys(configMap.data), ...Object.keys(secretData)])
				expect({ name, known: CONFIG_VARS.has(name) || name in INFRA_VARS }).toEqual({
					name,
					known: true
				});
			// The Secret's DATABASE_URL carries the password Postgres is initialised with.
			expect(decodeURIComponent(new URL(secretData.DATABASE_URL!).password)).toBe(
				secretData.POSTGRES_PASSWORD
			);
		});

		it("has one Deployment per service, with its replicas, running exactly its service file", () => {
			expect(deployments).toHaveLength(SERVICES.length);
			const images = new Set(deployments.map(d => containerOf(d).image.split(":")[0]));
			expect([...images]).toEqual([(kustomization.images as Obj[])[0]!.name]);
			for (const s of SERVICES) {
				const d = deploymentOf(s);
				expect(d.metadata.name).toBe(s);
				expect(d.spec.replicas).toBeGreaterThanOrEqual(MIN_REPLICAS[s] ?? 1);
				const labels = d.spec.template.metadata.labels as Obj;
				expect(labels).toMatchObject(d.spec.selector.matchLabels);
			}
		});

		it("gives every node the variables it needs, all read by platform/config.ts and accepted by it", () => {
			const computed = new Set<string>();
			for (const s of SERVICES) {
				const env = envOf(containerOf(deploymentOf(s)));
				// SERVICES and SERVICEDIR are moleculer-runner's own (which service it loads).
				for (const name of Object.keys(env).filter(n => !RUNNER_VARS.includes(n)))
					expect({ s, name, read: CONFIG_VARS.has(name) }).toEqual({
						s,
						name,
						read: true
					});
				const needs = [
					...NODE_VARS,
					...((DATABASE_SERVICES as readonly string[]).includes(s)
						? ["DATABASE_URL"]
						: []),
					...(s === "api" ? ["PORT"] : [])
				];
				for (const name of needs)
					expect({ s, name, set: name in env }).toEqual({ s, name, set: true });
				expectSecretsOnlyWhereUsed(s, env);
				// The placeholder secrets keep a node from starting; real ones are accepted. (The
				// gateway gets no secret at all.)
				if (Object.values(env).some(v => v.includes("CHANGE-ME")))
					expect(() => loadConfig(configEnv(env))).toThrow(ConfigError);
				else expect(s).toBe("api");
				const c = loadConfig(configEnv(realSecrets(env)));
				expect(c.production).toBe(true);
				for (const [u, port] of [
					...c.transporter!.split(",").map(t => [t, 4222]),
					[c.cacher, 6379],
					...(c.databaseUrl ? [[c.databaseUrl, 5432]] : [])
				] as [string, number][]) {
					const url = new URL(u);
					const svc = serviceOf(url.hostname);
					expect((svc.spec.ports as Obj[]).map(p => p.port)).toContain(
						Number(url.port) || port
					);
				}
				if (c.databaseUrl)
					for (const db of computedDatabases(realSecrets(env))) computed.add(db);
			}
			// Postgres initialises exactly those databases, for the user and password of DATABASE_URL.
			const init = named("ConfigMap", "postgres-init").data["init.sql"] as string;
			expect(createdDatabases(init)).toEqual([...computed].sort());
			expect(createdDatabases(init)).toEqual(
				createdDatabases(read("deploy/postgres/init.sql"))
			);
			const pg = envOf(named("StatefulSet", "postgres").spec.template.spec.containers[0]);
			const url = new URL(secretData.DATABASE_URL!);
			expect(decodeURIComponent(url.username)).toBe(pg.POSTGRES_USER);
			expect(decodeURIComponent(url.password)).toBe(pg.POSTGRES_PASSWORD);
		});

		it("probes endpoints that exist on the ports PORT, HEALTH_PORT and METRICS_PORT say", () => {
			const port = Number(configMap.data.PORT);
			const metricsPort = Number(configMap.data.METRICS_PORT);
			const healthPort = Number(configMap.data.HEALTH_PORT);
			expect(healthPort).toBeGreaterThan(0);
			const routes = gatewayRootPaths();
			for (const s of SERVICES) {
				const c = containerOf(deploymentOf(s));
				expect(portOf(c, "metrics")).toBe(metricsPort);
				const allowed = new Set([
					`${metricsPort}${metricsPath()}`,
					...NODE_HEALTH_PATHS.map(r => `${healthPort}${r}`),
					...(s === "api" ? [...routes].map(r => `${port}${r}`) : [])
				]);
				// Nodes without HTTP of their own probe their node's /health and /ready exactly.
				if (s !== "api") {
					expect(portOf(c, "health")).toBe(healthPort);
					expect({ s, live: c.livenessProbe.httpGet }).toEqual({
						s,
						live: { path: "/health", port: "health" }
					});
					expect({ s, ready: c.readinessProbe.httpGet }).toEqual({
						s,
						ready: { path: "/ready", port: "health" }
					});
				}
				for (const probe of ["livenessProbe", "readinessProbe"]) {
					const get = c[probe]?.httpGet as Obj | undefined;
					expect({ s, probe, defined: get !== undefined }).toEqual({
						s,
						probe,
						defined: true
					});
					expect(allowed).toContain(`${portOf(c, get!.port)}${get!.path}`);
				}
				if (c.startupProbe)
					expect(allowed).toContain(
						`${portOf(c, c.startupProbe.httpGet.port)}${c.startupProbe.httpGet.path}`
					);
			}
			const api = containerOf(deploymentOf("api"));
			expect(portOf(api, "http")).toBe(port);
			expect(api.livenessProbe.httpGet.path).toBe("/health");
			expect(api.readinessProbe.httpGet.path).toBe("/ready");
		});

		it("outlasts the broker's shutdown, limits resources and runs non-root", () => {
			for (const s of SERVICES) {
				const pod = deploymentOf(s).spec.template.spec as Obj;
				const c = pod.containers[0] as Obj;
				const preStop = (c.lifecycle?.preStop?.exec?.command ?? []) as string[];
				const preStopSeconds = preStop[0] === "sleep" ? Number(preStop[1]) : 0;
				expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(
					shutdownSeconds + preStopSeconds
				);
				for (const kind of ["requests", "limits"])
					for (const r of ["cpu", "memory"])
						expect({ s, kind, r, set: c.resources?.[kind]?.[r] !== undefined }).toEqual(
							{ s, kind, r, set: true }
						);
				expect(pod.securityContext.runAsNonRoot).toBe(true);
				expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
				expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
			}
		});

		it("exposes the gateway and every node's metrics through Services that select them", () => {
			const matches = (selector: Obj, d: Obj): boolean =>
				Object.entries(selector).every(
					([k, v]) => d.spec.template.metadata.labels[k] === v
				);
			const api = named("Service", "api");
			const apiDeployment = deploymentOf("api");
			expect(deployments.filter(d => matches(api.spec.selector, d))).toEqual([apiDeployment]);
			for (const p of api.spec.ports as Obj[])
				expect(portOf(containerOf(apiDeployment), p.targetPort)).toBe(
					Number(configMap.data.PORT)
				);
			const metrics = named("Service", "shop-metrics");
			expect(deployments.filter(d => matches(metrics.spec.selector, d))).toHaveLength(
				SERVICES.length
			);
			for (const d of deployments)
				portOf(containerOf(d), (metrics.spec.ports as Obj[])[0]!.targetPort);
			// Each budget covers exactly one workload (a Deployment, or NATS's StatefulSet), and every
			// Deployment or StatefulSet of more than one pod has one.
			const workloads = [...deployments, ...ofKind("StatefulSet")];
			for (const pdb of ofKind("PodDisruptionBudget"))
				expect(
					workloads.filter(d => matches(pdb.spec.selector.matchLabels, d))
				).toHaveLength(1);
			for (const w of workloads.filter(x => x.spec.replicas > 1))
				expect({
					w: w.metadata.name,
					pdb: ofKind("PodDisruptionBudget").some(p =>
						matches(p.spec.selector.matchLabels, w)
					)
				}).toEqual({ w: w.metadata.name, pdb: true });
		});

		it("runs NATS as a StatefulSet of three behind a headless Service, routed to every pod", () => {
			const nats = named("StatefulSet", "nats");
			const conf = named("ConfigMap", "nats-config").data["nats.conf"] as string;
			expect(nats.spec.replicas).toBe(NATS_SERVERS);
			// All pods start together: alone, a server never gets ready (no meta leader).
			expect(nats.spec.podManagementPolicy).toBe("Parallel");
			const svc = named("Service", nats.spec.serviceName);
			expect(svc.spec.clusterIP).toBe("None");
			expect(svc.spec.publishNotReadyAddresses).toBe(true);
			const c = nats.spec.template.spec.containers[0] as Obj;
			const cluster = clusterBlock(conf);
			expect(portOf(c, "cluster")).toBe(cluster.listenPort);
			expect(portOf(c, "client")).toBe(4222);
			expect((svc.spec.ports as Obj[]).find(p => p.targetPort === "cluster")?.port).toBe(
				cluster.listenPort
			);
			// The routes: every pod by its stable DNS name, `<pod>.<headless service>`.
			expect(cluster.routes).toEqual(
				Array.from(
					{ length: NATS_SERVERS },
					(_, i) =>
						`nats://${nats.metadata.name}-${i}.${svc.metadata.name}:${cluster.listenPort}`
				)
			);
			// Each server named after its pod (stable across reschedules): JetStream's peer identity.
			expect(topLevel(conf, "server_name")).toBe("$SERVER_NAME");
			const name = (c.env as Obj[]).find(e => e.name === "SERVER_NAME");
			expect(name?.valueFrom?.fieldRef?.fieldPath).toBe("metadata.name");
			// The same cluster, JetStream and limits as deploy/nats/nats.conf, routes aside.
			const compose = read("deploy/nats/nats.conf");
			expect(jetstreamBlock(conf)!.replace(/\s+/g, " ").trim()).toBe(
				jetstreamBlock(compose)!.replace(/#.*$/gm, "").replace(/\s+/g, " ").trim()
			);
			expect(cluster.name).toBe(clusterBlock(compose).name);
			for (const key of ["port", "http_port", "max_payload"])
				expect({ key, v: topLevel(conf, key) }).toEqual({ key, v: topLevel(compose, key) });
			// A voluntary disruption takes one server at most: two of three keep the quorum.
			const pdb = ofKind("PodDisruptionBudget").find(
				p => p.spec.selector.matchLabels["app.kubernetes.io/name"] === "nats"
			);
			expect(pdb?.spec.maxUnavailable).toBe(1);
			// Every node lists every server and asks for a replica on each.
			expect(
				configMap.data.TRANSPORTER.split(",").map((u: string) => new URL(u).host)
			).toEqual(Array.from({ length: NATS_SERVERS }, (_, i) => `nats-${i}.nats:4222`));
			expect(configMap.data.JETSTREAM_REPLICAS).toBe(String(NATS_SERVERS));
			const cfg = loadConfig(
				configEnv(realSecrets(envOf(containerOf(deploymentOf("orders")))))
			);
			expect(cfg.jetstreamReplicas).toBe(NATS_SERVERS);
			expect(cfg.jetstreamReplicas).toBeLessThanOrEqual(nats.spec.replicas);
		});

		it("runs two pods of each stateful service of an order's path", () => {
			for (const s of REPLICATED)
				expect({ s, r: deploymentOf(s).spec.replicas }).toEqual({ s, r: 2 });
		});

		it("runs NATS with JetStream (sync_interval always), and the infrastructure with probes", () => {
			const conf = named("ConfigMap", "nats-config").data["nats.conf"] as string;
			expect(jetstreamBlock(conf)).toMatch(/^\s*sync_interval\s*[:=]\s*"?always"?\s*$/m);
			// JetStream stores on the StatefulSet's persistent volume.
			const nats = named("StatefulSet", "nats");
			const claims = new Set(
				(nats.spec.volumeClaimTemplates as Obj[]).map(v => v.metadata.name)
			);
			const mounts = (nats.spec.template.spec.containers[0].volumeMounts as Obj[]).filter(m =>
				claims.has(m.name)
			);
			expect(mounts.some(m => isUnder(storeDir(conf), m.mountPath))).toBe(true);
			for (const name of ["nats", "postgres"]) {
				const sts = named("StatefulSet", name);
				expect(sts.spec.template.metadata.labels).toMatchObject(
					sts.spec.selector.matchLabels
				);
				expect(named("Service", sts.spec.serviceName)).toBeDefined();
			}
			expect(
				Number(
					/^postgres:(\d+)/.exec(
						named("StatefulSet", "postgres").spec.template.spec.containers[0].image
					)?.[1]
				)
			).toBeGreaterThanOrEqual(16);
			for (const o of [...ofKind("StatefulSet"), ...ofKind("Deployment")])
				for (const c of o.spec.template.spec.containers as Obj[]) {
					expect(c.livenessProbe).toBeDefined();
					expect(c.readinessProbe).toBeDefined();
					expect(c.resources?.limits?.memory).toBeDefined();
				}
		});
	});

	describe("README.md", () => {
		it("says how to scale out and run compose and Kubernetes", () => {
			const readme = read("README.md");
			const section = readme.split(/^## /m).find(s => s.startsWith("Scaling out"));
			expect(section).toBeDefined();
			expect(section).toContain("docker compose up --build");
			expect(section).toContain("kubectl apply -k deploy/k8s");
		});
	});
});
