// Cost of one Argon2id hash on this machine, for the former parameters (argon2's defaults) and the
// current ones (OWASP: services/users/password-hasher.ts): wall time of 10 hashes one after another (p50,
// min, max), CPU time of one (every thread), and the wall time of 50 started at once.
// Figures in docs/security.md ("Password hashing"). Run: `node bench/password-hash.mjs`.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const argon2 = require("argon2");

const PARAMS = {
	"m=64MiB t=3 p=4 (old: argon2's defaults)": { type: argon2.argon2id },
	"m=19MiB t=2 p=1 (current: OWASP)": {
		type: argon2.argon2id,
		memoryCost: 19_456,
		timeCost: 2,
		parallelism: 1
	}
};

const ms = ns => Number(ns) / 1e6;

for (const [label, opts] of Object.entries(PARAMS)) {
	await argon2.hash("warm-up password", opts);
	const walls = [];
	for (let i = 0; i < 10; i++) {
		const t0 = process.hrtime.bigint();
		await argon2.hash(`password ${i}`, opts);
		walls.push(ms(process.hrtime.bigint() - t0));
	}
	walls.sort((a, b) => a - b);
	const cpu0 = process.cpuUsage();
	await argon2.hash("cpu password", opts);
	const cpu = process.cpuUsage(cpu0);
	const t0 = Date.now();
	await Promise.all(Array.from({ length: 50 }, (_, i) => argon2.hash(`burst ${i}`, opts)));
	const burst = Date.now() - t0;
	console.log(
		`${label}: wall p50 ${walls[5].toFixed(0)} ms (min ${walls[0].toFixed(0)}, max ${walls[9].toFixed(0)}),` +
			` CPU ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms per hash, 50 at once ${burst} ms`
	);
}
