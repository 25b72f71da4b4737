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
