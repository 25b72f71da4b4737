/**
 * Summarises a V8 CPU profile (`node --cpu-prof`): self time per function, the top N.
 * Format: the Chrome DevTools Protocol `Profiler.Profile` (nodes with callFrame and hitCount,
 * samples, timeDeltas), https://chromedevtools.github.io/devtools-protocol/tot/Profiler/#type-Profile
 */
import fs from "node:fs";
import path from "node:path";

interface ProfileNode {
	id: number;
	callFrame: { functionName: string; url: string; lineNumber: number };
	hitCount?: number;
}
interface Profile {
	nodes: ProfileNode[];
	samples: number[];
	timeDeltas: number[];
	startTime: number;
	endTime: number;
}

export interface TopFunction {
	functionName: string;
	/** `file:line`, relative to the project (node_modules kept visible). */
	where: string;
	selfMs: number;
	selfPercent: number;
}

/** The top `n` functions by self time over every `.cpuprofile` in `dir`. */
export function summarizeProfile(dir: string, n: number): TopFunction[] {
	const files = fs.existsSync(dir)
		? fs.readdirSync(dir).filter(f => f.endsWith(".cpuprofile"))
		: [];
	const self = new Map<string, { functionName: string; where: string; us: number }>();
	let total = 0;
	for (const file of files) {
		const p = JSON.parse(fs.readFileSync(path.join(dir, file), "utf8")) as Profile;
		const byId = new Map(p.nodes.map(node => [node.id, node]));
		p.samples.forEach((id, i) => {
			const node = byId.get(id);
			if (!node) return;
			const dt = p.timeDeltas[i] ?? 0;
			total += dt;
			const f = node.callFrame;
			const where = f.url
				? `${f.url.replace(/^file:\/\//, "").replace(/^.*?\/(node_modules|dist)\//, "$1/")}:${f.lineNumber + 1}`
				: "(native)";
			const name = f.functionName || "(anonymous)";
			const key = `${name}@${where}`;
			const e = self.get(key) ?? { functionName: name, where, us: 0 };
			e.us += dt;
			self.set(key, e);
		});
	}
	return [...self.values()]
		.sort((a, b) => b.us - a.us)
		.slice(0, n)
		.map(e => ({
			functionName: e.functionName,
			where: e.where,
			selfMs: Math.round(e.us / 1000),
			selfPercent: total ? Math.round((e.us / total) * 1000) / 10 : 0
		}));
}

/** A part of the process and its share of the profile's samples. */
export interface OwnerShare {
	/**
	 * `pg`, `moleculer`… (a package: the innermost `node_modules/<name>` frame of the sample's
	 * stack), `shop: platform/db`… (the shop's own code, by folder), `node` (only Node's own
	 * frames on the stack: timers, socket reads before a package's handler), or V8's own entries
	 * (`(garbage collector)`, `(program)`).
	 */
	owner: string;
	ms: number;
	/** Of the busy time (every sample but `(idle)`). */
	percent: number;
}

/** Who a frame belongs to, or null for Node's own and native frames. */
function ownerOf(url: string): string | null {
	const file = url.replace(/^file:\/\//, "");
	const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file);
	if (pkg) return pkg[1]!;
	const shop = /\/dist\/([^/]+)\/(?:([^/]+)\/)?/.exec(file);
	if (shop) return `shop: ${shop[1]}${shop[2] && !shop[2].endsWith(".js") ? `/${shop[2]}` : ""}`;
	return null;
}

/**
 * The busy time of every `.cpuprofile` in `dir` by owner: each sample is charged to the innermost
 * frame of its stack that belongs to a package or to the shop, so a native socket write or a
 * `JSON.stringify` counts for the code that asked for it (a `writev` under pg's connection is
 * pg's, under sonic-boom the log's). Sorted by share, largest first.
 */
export function summarizeByOwner(dir: string): { busyMs: number; owners: OwnerShare[] } {
	const files = fs.existsSync(dir)
		? fs.readdirSync(dir).filter(f => f.endsWith(".cpuprofile"))
		: [];
	const by = new Map<string, number>();
	let busy = 0;
	for (const file of files) {
		const p = JSON.parse(fs.readFileSync(path.join(dir, file), "utf8")) as Profile & {
			nodes: (ProfileNode & { children?: number[] })[];
		};
		const parent = new Map<number, number>();
		for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
		const byId = new Map(p.nodes.map(n => [n.id, n]));
		const memo = new Map<number, string>();
		const owner = (id: number): string => {
			const known = memo.get(id);
			if (known) return known;
			const n = byId.get(id)!;
			const name = n.callFrame.functionName;
			let o: string;
			if (name === "(garbage collector)" || name === "(program)" || name === "(idle)")
				o = name;
			else {
				const up = parent.get(id);
				o = ownerOf(n.callFrame.url) ?? (up === undefined ? "node" : owner(up));
			}
			memo.set(id, o);
			return o;
		};
		p.samples.forEach((id, i) => {
			const o = owner(id);
			const dt = p.timeDeltas[i] ?? 0;
			if (o === "(idle)") return;
			busy += dt;
			by.set(o, (by.get(o) ?? 0) + dt);
		});
	}
	return {
		busyMs: Math.round(busy / 1000),
		owners: [...by]
			.sort((a, b) => b[1] - a[1])
			.map(([owner, us]) => ({
				owner,
				ms: Math.round(us / 1000),
				percent: busy ? Math.round((us / busy) * 1000) / 10 : 0
			}))
	};
}

/** `node dist/bench/profile.js <dir> [ms per order]`: the owners' shares (and ms per order). */
if (require.main === module) {
	const [dir, perOrder] = process.argv.slice(2);
	if (!dir) throw new Error("usage: node dist/bench/profile.js <profile dir> [CPU ms per order]");
	const { busyMs, owners } = summarizeByOwner(dir);
	console.log(`busy ${busyMs} ms`);
	for (const o of owners)
		console.log(
			`${String(o.percent).padStart(5)} %  ${perOrder ? `${((o.percent / 100) * Number(perOrder)).toFixed(2).padStart(6)} ms/order  ` : ""}${o.owner}`
		);
}
