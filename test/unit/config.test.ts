import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DATABASE_SERVICES } from "../../app/services";
import { ConfigError, loadConfig } from "../../platform/config";
import { EXAMPLE_SECRET_VALUES } from "../../platform/security/secrets";

describe("loadConfig", () => {
	const secret = "s".repeat(32);
	let dataDir: string;

	beforeEach(() => {
		dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-config-"));
	});
	afterEach(() => {
		fs.rmSync(dataDir, { recursive: true, force: true });
	});

	/** An environment with a temp DATA_DIR, so no test writes under the repository. */
	const env = (
		vars: Record<string, string | undefined> = {}
	): Record<string, string | undefined> => ({
		DATA_DIR: dataDir,
		...vars
	});

	it("has the documented defaults", () => {
		const c = loadConfig({ JWT_SECRET: secret });
		expect(c).toMatchObject({
			env: "development",
			production: false,
			port: 3000,
			metricsPort: 3030,
			nodeID: null,
			transporter: null,
			cacher: null,
			databaseUrl: null,
			serviceDatabaseUrls: {},
			databasePrefix: "",
			dataDir: path.resolve(".data"),
			jwtSecret: secret,
			jwtSecretGenerated: false,
			jwtExpiresInSeconds: 3600,
			adminEmail: "admin@example.com",
			adminPassword: null,
			tracingExporter: null,
			jaegerEndpoint: null,
			logLevel: "info",
			bodyLimit: "1mb",
			corsOrigins: "*"
		});
		expect(path.isAbsolute(c.dataDir)).toBe(true);
	});

	it("reads the documented variables", () => {
		const c = loadConfig(
			env({
				NODE_ENV: "production",
				PORT: "8080",
				METRICS_PORT: "0",
				NODE_ID: "node-1",
				TRANSPORTER: "nats://127.0.0.1:4222",
				CACHER: "redis://127.0.0.1:6379",
				DATABASE_URL: "postgres://u:p@db:5432",
				JWT_SECRET: secret,
				ADMIN_EMAIL: "Boss@Example.COM",
				ADMIN_PASSWORD: "long-enough",
				TRACING_EXPORTER: "jaeger",
				JAEGER_ENDPOINT: "http://127.0.0.1:14268/api/traces",
				LOGLEVEL: "debug",
				CORS_ORIGINS: "https://a.example, https://b.example"
			})
		);
		expect(c).toMatchObject({
			env: "production",
			production: true,
			port: 8080,
			metricsPort: 0,
			nodeID: "node-1",
			transporter: "nats://127.0.0.1:4222",
			cacher: "redis://127.0.0.1:6379",
			databaseUrl: "postgres://u:p@db:5432",
			dataDir,
			adminEmail: "boss@example.com",
			adminPassword: "long-enough",
			tracingExporter: "jaeger",
			jaegerEndpoint: "http://127.0.0.1:14268/api/traces",
			logLevel: "debug",
			corsOrigins: ["https://a.example", "https://b.example"]
		});
	});

	it("treats blank variables as unset", () => {
		const c = loadConfig(env({ PORT: "  ", JWT_SECRET: secret, TRANSPORTER: "" }));
		expect(c).toMatchObject({ port: 3000, transporter: null });
	});

	it("generates a development JWT secret once per data dir and reuses it", () => {
		const first = loadConfig(env());
		expect(first.jwtSecretGenerated).toBe(true);
		expect(first.jwtSecret.length).toBeGreaterThanOrEqual(32);
		const file = path.join(dataDir, "jwt-secret");
		expect(fs.readFileSync(file, "utf8").trim()).toBe(first.jwtSecret);
		expect(fs.statSync(file).mode & 0o077).toBe(0);
		expect(loadConfig(env()).jwtSecret).toBe(first.jwtSecret);

		const otherDir = fs.mkdtempSync(path.join(os.tmpdir(), "shop-config-"));
		try {
			expect(loadConfig({ DATA_DIR: otherDir }).jwtSecret).not.toBe(first.jwtSecret);
		} finally {
			fs.rmSync(otherDir, { recursive: true, force: true });
		}
	});

	it("an explicit JWT_SECRET wins over the generated one and writes nothing", () => {
		const c = loadConfig(env({ JWT_SECRET: secret }));
		expect(c).toMatchObject({ jwtSecret: secret, jwtSecretGenerated: false });
		expect(fs.existsSync(path.join(dataDir, "jwt-secret"))).toBe(false);
	});

	it("requires JWT_SECRET when NODE_ENV=production where tokens are signed or verified, and generates none", () => {
		// A node that neither signs nor verifies tokens starts without it ...
		const c = loadConfig(env({ NODE_ENV: "production" }));
		expect(c.jwtSecretGenerated).toBe(false);
		// ... and one that does (users) is refused when it reads it.
		expect(() => c.jwtSecret).toThrow(ConfigError);
		expect(() => c.jwtSecret).toThrow(/JWT_SECRET is required when NODE_ENV=production/);
		expect(fs.existsSync(path.join(dataDir, "jwt-secret"))).toBe(false);
		expect(loadConfig(env({ NODE_ENV: "production", JWT_SECRET: secret })).jwtSecret).toBe(
			secret
		);
	});

	describe("placeholder secrets (platform/security/secrets.ts)", () => {
		const prod = (vars: Record<string, string>): Record<string, string | undefined> =>
			env({ NODE_ENV: "production", JWT_SECRET: secret, ...vars });

		it.each<[string, Record<string, string>, string]>([
			[
				"CHANGE-ME in JWT_SECRET",
				{ JWT_SECRET: `CHANGE-ME-${"x".repeat(32)}` },
				"JWT_SECRET"
			],
			[
				"deploy/k8s/secret.yaml's former ADMIN_PASSWORD",
				{ ADMIN_PASSWORD: "CHANGE-ME-admin-password" },
				"ADMIN_PASSWORD"
			],
			["changeme in any case", { ADMIN_PASSWORD: "ChangeMe-please-1234" }, "ADMIN_PASSWORD"],
			[
				"the example admin password of docs/operations.md",
				{ ADMIN_PASSWORD: "YSIRbbRIESlGR8xo" },
				"ADMIN_PASSWORD"
			],
			["CHANGE-ME in NATS_TOKEN", { NATS_TOKEN: "CHANGE-ME-token" }, "NATS_TOKEN"],
			[
				"secret.yaml's DATABASE_URL",
				{ DATABASE_URL: "postgres://shop:CHANGE-ME@postgres:5432" },
				"DATABASE_URL"
			],
			[
				"the docs' user:pass in DATABASE_URL",
				{ DATABASE_URL: "postgres://user:pass@db:5432" },
				"DATABASE_URL"
			],
			[
				"the docs' user:password in TRANSPORTER",
				{ TRANSPORTER: "nats://user:password@nats:4222" },
				"TRANSPORTER"
			],
			[
				"the docs' <token> in TRANSPORTER",
				{ TRANSPORTER: "nats://%3Ctoken%3E@nats:4222" },
				"TRANSPORTER"
			],
			["the docs' :pass in CACHER", { CACHER: "redis://:pass@redis:6379" }, "CACHER"],
			[
				"CHANGE-ME in a service's database URL",
				{ ORDERS_DATABASE_URL: "postgres://shop:CHANGE-ME@db/orders" },
				"ORDERS_DATABASE_URL"
			]
		])("production refuses %s, naming the variable and not its value", (_l, vars, name) => {
			let err: unknown;
			try {
				loadConfig(prod(vars));
			} catch (e) {
				err = e;
			}
			expect(err).toBeInstanceOf(ConfigError);
			const message = (err as Error).message;
			expect(message).toMatch(new RegExp(`^${name} still holds a placeholder`));
			expect(message).not.toContain(vars[name]);
		});

		it("development accepts them (with the other checks: length, password policy)", () => {
			expect(
				loadConfig(env({ DATABASE_URL: "postgres://user:pass@db:5432" })).databaseUrl
			).toBe("postgres://user:pass@db:5432");
			expect(
				loadConfig(env({ JWT_SECRET: `CHANGE-ME-${"x".repeat(32)}` })).jwtSecretGenerated
			).toBe(false);
		});

		it("production accepts real secrets, whatever the examples", () => {
			const c = loadConfig(
				prod({
					ADMIN_PASSWORD: "a-real-admin-pw-4c9e",
					DATABASE_URL: "postgres://shop:Xk2v9QpL0aZ@db:5432",
					TRANSPORTER: "nats://s3cr3t-t0ken-value@nats:4222",
					CACHER: "redis://:r3d1s-passw0rd@redis:6379"
				})
			);
			expect(c.adminPassword).toBe("a-real-admin-pw-4c9e");
			expect(EXAMPLE_SECRET_VALUES.length).toBeGreaterThan(0);
		});
	});

	it("PAYMENTS_SIMULATED_FAULTS: on by default, off in production unless set", () => {
		expect(loadConfig(env({ JWT_SECRET: secret })).paymentsSimulatedFaults).toBe(true);
		expect(
			loadConfig(env({ JWT_SECRET: secret, NODE_ENV: "production" })).paymentsSimulatedFaults
		).toBe(false);
		expect(
			loadConfig(
				env({
					JWT_SECRET: secret,
					NODE_ENV: "production",
					PAYMENTS_SIMULATED_FAULTS: "true"
				})
			).paymentsSimulatedFaults
		).toBe(true);
		expect(
			loadConfig(env({ JWT_SECRET: secret, PAYMENTS_SIMULATED_FAULTS: "false" }))
				.paymentsSimulatedFaults
		).toBe(false);
		expect(() =>
			loadConfig(env({ JWT_SECRET: secret, PAYMENTS_SIMULATED_FAULTS: "maybe" }))
		).toThrow(/PAYMENTS_SIMULATED_FAULTS/);
	});

	it.each<[string, Record<string, string>, RegExp]>([
		["a short JWT_SECRET", { JWT_SECRET: "s".repeat(31) }, /JWT_SECRET/],
		[
			"a short JWT_SECRET in production",
			{ NODE_ENV: "production", JWT_SECRET: "short" },
			/JWT_SECRET/
		],
		["a non-numeric PORT", { PORT: "abc" }, /PORT/],
		["a negative PORT", { PORT: "-1" }, /PORT/],
		["a fractional PORT", { PORT: "80.5" }, /PORT/],
		["a PORT above 65535", { PORT: "65536" }, /PORT/],
		["a bad METRICS_PORT", { METRICS_PORT: "x" }, /METRICS_PORT/],
		["jaeger without JAEGER_ENDPOINT", { TRACING_EXPORTER: "jaeger" }, /JAEGER_ENDPOINT/],
		["an unknown TRACING_EXPORTER", { TRACING_EXPORTER: "zipkin" }, /TRACING_EXPORTER/],
		[
			"a non-http JAEGER_ENDPOINT",
			{ TRACING_EXPORTER: "jaeger", JAEGER_ENDPOINT: "udp://h:6832" },
			/JAEGER_ENDPOINT/
		],
		["a redis TRANSPORTER", { TRANSPORTER: "redis://127.0.0.1:6379" }, /TRANSPORTER/],
		["an amqp TRANSPORTER", { TRANSPORTER: "amqp://127.0.0.1:5672" }, /TRANSPORTER/],
		["a TRANSPORTER that is no URL", { TRANSPORTER: "127.0.0.1:4222" }, /TRANSPORTER/],
		[
			"a TRANSPORTER list with an entry that is no URL",
			{ TRANSPORTER: "nats://a:4222, nats-b" },
			/TRANSPORTER is not a URL: "nats-b"/
		],
		[
			"a TRANSPORTER list with a redis entry",
			{ TRANSPORTER: "nats://a:4222, redis://b:6379" },
			/TRANSPORTER must use nats: or tls:/
		],
		["a TRANSPORTER of commas only", { TRANSPORTER: " , ," }, /TRANSPORTER lists no NATS/],
		[
			"JETSTREAM_REPLICAS 0",
			{ JETSTREAM_REPLICAS: "0" },
			/JETSTREAM_REPLICAS must be in \[1, 5\]/
		],
		[
			"JETSTREAM_REPLICAS 6",
			{ JETSTREAM_REPLICAS: "6" },
			/JETSTREAM_REPLICAS must be in \[1, 5\]/
		],
		["a fractional JETSTREAM_REPLICAS", { JETSTREAM_REPLICAS: "2.5" }, /JETSTREAM_REPLICAS/],
		["a word for JETSTREAM_REPLICAS", { JETSTREAM_REPLICAS: "three" }, /JETSTREAM_REPLICAS/],
		["NATS_RANDOMIZE that is no boolean", { NATS_RANDOMIZE: "maybe" }, /NATS_RANDOMIZE/],
		["a nats CACHER", { CACHER: "nats://127.0.0.1:4222" }, /CACHER/],
		["a mysql DATABASE_URL", { DATABASE_URL: "mysql://u:p@h/db" }, /DATABASE_URL/],
		[
			"a bad ORDERS_DATABASE_URL",
			{ ORDERS_DATABASE_URL: "http://h/orders" },
			/ORDERS_DATABASE_URL/
		],
		["an unsafe DATABASE_PREFIX", { DATABASE_PREFIX: "x; DROP" }, /DATABASE_PREFIX/],
		["an unknown NODE_ENV", { NODE_ENV: "staging" }, /NODE_ENV/],
		["an unknown LOGLEVEL", { LOGLEVEL: "verbose" }, /LOGLEVEL/],
		["a short ADMIN_PASSWORD", { ADMIN_PASSWORD: "short" }, /ADMIN_PASSWORD/],
		["a too short JWT_EXPIRES_IN", { JWT_EXPIRES_IN: "10" }, /JWT_EXPIRES_IN/]
	])("throws ConfigError for %s", (_label, vars, message) => {
		const run = (): unknown => loadConfig(env({ JWT_SECRET: secret, ...vars }));
		expect(run).toThrow(ConfigError);
		expect(run).toThrow(message);
	});

	it("accepts nats:// and tls:// transporters", () => {
		expect(
			loadConfig(env({ JWT_SECRET: secret, TRANSPORTER: "nats://n:4222" })).transporter
		).toBe("nats://n:4222");
		expect(
			loadConfig(env({ JWT_SECRET: secret, TRANSPORTER: "tls://n:4222" })).transporter
		).toBe("tls://n:4222");
	});

	it("takes a list of NATS servers in TRANSPORTER, with or without spaces after the commas", () => {
		const list = (t: string): string | null =>
			loadConfig(env({ JWT_SECRET: secret, TRANSPORTER: t })).transporter;
		expect(list("nats://a:4222,nats://b:4222,nats://c:4222")).toBe(
			"nats://a:4222,nats://b:4222,nats://c:4222"
		);
		expect(list(" nats://a:4222, nats://b:4222 ,  tls://c:4222,")).toBe(
			"nats://a:4222,nats://b:4222,tls://c:4222"
		);
		// Credentials in one entry; the error of a bad entry never shows them.
		expect(list("nats://tok@a:4222, nats://b:4222")).toBe("nats://tok@a:4222,nats://b:4222");
		expect(() => list("nats://user:hunter2@a:4222, b")).toThrow(
			/TRANSPORTER is not a URL: "b"/
		);
		try {
			list("nats://user:hunter2@a:4222,nats://user:hunter2@%zz");
		} catch (err) {
			expect(String(err)).not.toContain("hunter2");
		}
	});

	it("reads JETSTREAM_REPLICAS (1 by default, 1 to 5) and NATS_RANDOMIZE (true by default)", () => {
		const c = loadConfig(env({ JWT_SECRET: secret }));
		expect(c.jetstreamReplicas).toBe(1);
		expect(c.natsRandomize).toBe(true);
		for (const n of [1, 3, 5])
			expect(
				loadConfig(env({ JWT_SECRET: secret, JETSTREAM_REPLICAS: ` ${n} ` }))
					.jetstreamReplicas
			).toBe(n);
		expect(loadConfig(env({ JWT_SECRET: secret, NATS_RANDOMIZE: "false" })).natsRandomize).toBe(
			false
		);
	});

	it("returns a frozen config, serviceDatabaseUrls included", () => {
		const c = loadConfig(env({ JWT_SECRET: secret, USERS_DATABASE_URL: "postgres://h/u" }));
		expect(Object.isFrozen(c)).toBe(true);
		expect(Object.isFrozen(c.serviceDatabaseUrls)).toBe(true);
		expect(() => {
			(c as { port: number }).port = 1;
		}).toThrow(TypeError);
		expect(() => {
			(c.serviceDatabaseUrls as Record<string, string>).orders = "postgres://h/o";
		}).toThrow(TypeError);
		expect(c.port).toBe(3000);
		expect(c.serviceDatabaseUrls).toEqual({ users: "postgres://h/u" });
	});

	it("puts each <SERVICE>_DATABASE_URL in serviceDatabaseUrls, and only those", () => {
		const vars: Record<string, string> = {
			JWT_SECRET: secret,
			DATABASE_URL: "postgres://u:p@shared:5432"
		};
		for (const s of DATABASE_SERVICES)
			vars[`${s.toUpperCase()}_DATABASE_URL`] = `postgresql://u:p@${s}-db:5432/${s}`;
		const all = loadConfig(env(vars));
		expect(Object.keys(all.serviceDatabaseUrls).sort()).toEqual([...DATABASE_SERVICES].sort());
		for (const s of DATABASE_SERVICES)
			expect(all.serviceDatabaseUrls[s]).toBe(`postgresql://u:p@${s}-db:5432/${s}`);
		expect(all.databaseUrl).toBe("postgres://u:p@shared:5432");

		const one = loadConfig(
			env({ JWT_SECRET: secret, PAYMENTS_DATABASE_URL: "postgres://p@pay:5432/payments" })
		);
		expect(one.serviceDatabaseUrls).toEqual({ payments: "postgres://p@pay:5432/payments" });
		expect(one.databaseUrl).toBeNull();
	});

	it("does not read process.env when given an env object", () => {
		const saved = process.env.PORT;
		process.env.PORT = "4444";
		try {
			expect(loadConfig(env({ JWT_SECRET: secret })).port).toBe(3000);
		} finally {
			if (saved === undefined) delete process.env.PORT;
			else process.env.PORT = saved;
		}
	});
});
