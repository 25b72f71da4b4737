import type { JSX } from "preact";
import type { RatePoint } from "../api";

const W = 600;
const H = 160;
const PAD = { left: 28, right: 8, top: 10, bottom: 20 };
const SERIES = ["created", "confirmed", "cancelled"] as const;

/** Orders per second as three lines (SVG, no library); the totals are also given as text. */
export function RateChart({ points }: { points: RatePoint[] }): JSX.Element {
	const max = Math.max(1, ...points.flatMap(p => SERIES.map(s => p[s])));
	const n = Math.max(1, points.length - 1);
	const x = (i: number): number => PAD.left + (i / n) * (W - PAD.left - PAD.right);
	const y = (v: number): number => PAD.top + (1 - v / max) * (H - PAD.top - PAD.bottom);
	const totals = Object.fromEntries(
		SERIES.map(s => [s, points.reduce((sum, p) => sum + p[s], 0)])
	) as Record<(typeof SERIES)[number], number>;
	const seconds = points.length;
	const peak = Math.max(0, ...points.map(p => p.created));
	return (
		<figure class="chart">
			<svg
				viewBox={`0 0 ${W} ${H}`}
				role="img"
				aria-labelledby="rate-chart-caption"
				preserveAspectRatio="none"
			>
				<line class="axis" x1={PAD.left} y1={y(0)} x2={W - PAD.right} y2={y(0)} />
				<line class="grid" x1={PAD.left} y1={y(max)} x2={W - PAD.right} y2={y(max)} />
				<text class="tick" x={PAD.left - 4} y={y(max) + 4} text-anchor="end">
					{max}
				</text>
				<text class="tick" x={PAD.left - 4} y={y(0) + 4} text-anchor="end">
					0
				</text>
				<text class="tick" x={PAD.left} y={H - 4}>
					−{seconds} s
				</text>
				<text class="tick" x={W - PAD.right} y={H - 4} text-anchor="end">
					now
				</text>
				{SERIES.map(s => (
					<polyline
						key={s}
						class={`line line-${s}`}
						points={points
							.map((p, i) => `${x(i).toFixed(1)},${y(p[s]).toFixed(1)}`)
							.join(" ")}
					/>
				))}
			</svg>
			<figcaption id="rate-chart-caption">
				<span class="legend legend-created">created {totals.created}</span>
				<span class="legend legend-confirmed">confirmed {totals.confirmed}</span>
				<span class="legend legend-cancelled">cancelled {totals.cancelled}</span>
				<span class="muted">
					in the last {seconds} s · peak {peak} orders/s
				</span>
			</figcaption>
		</figure>
	);
}
