/** The part of autocannon's programmatic API the benchmarks use (autocannon ships no types). */
declare module "autocannon" {
	namespace autocannon {
		interface Histogram {
			average: number;
			mean: number;
			p50: number;
			p90: number;
			p99: number;
			max: number;
		}
		interface RawRequest {
			method?: string;
			path?: string;
			headers?: Record<string, string>;
			body?: string;
		}
		interface RequestSpec extends RawRequest {
			setupRequest?: (req: RawRequest, context: Record<string, unknown>) => RawRequest;
			onResponse?: (status: number, body: string, context: Record<string, unknown>) => void;
		}
		interface Options {
			url: string;
			connections?: number;
			duration?: number;
			amount?: number;
			overallRate?: number;
			timeout?: number;
			method?: string;
			headers?: Record<string, string>;
			body?: string;
			requests?: RequestSpec[];
		}
		interface Result {
			requests: Histogram & { total: number; sent: number };
			latency: Histogram;
			throughput: Histogram;
			errors: number;
			timeouts: number;
			non2xx: number;
			"2xx": number;
			"4xx": number;
			"5xx": number;
			duration: number;
		}
	}
	function autocannon(opts: autocannon.Options): Promise<autocannon.Result>;
	export = autocannon;
}
