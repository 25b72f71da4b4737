/**
 * `npm run cluster`'s command line (tools/cluster-args.ts): two nodes of each stateful service of
 * an order's path unless told otherwise, `--nats 1|3|5`, and clear refusals.
 */
import {
	ClusterUsageError,
	DEFAULT_REPLICAS,
	REPLICATED_SERVICES,
	parseClusterArgs
} from "../../tools/cluster-args";

describe("npm run cluster arguments", () => {
	it("defaults to one nats-server and two nodes of orders, inventory, payments, notifications", () => {
		expect(DEFAULT_REPLICAS).toBe(2);
		expect([...REPLICATED_SERVICES].sort()).toEqual(
			["inventory", "notifications", "orders", "payments"].sort()
		);
		expect(parseClusterArgs([])).toEqual({
			natsServers: 1,
			replicas: { orders: 2, inventory: 2, payments: 2, notifications: 2 }
		});
	});

	it("takes --nats 3 (and --nats=5)", () => {
		expect(parseClusterArgs(["--nats", "3"]).natsServers).toBe(3);
		expect(parseClusterArgs(["--nats=5"]).natsServers).toBe(5);
		expect(parseClusterArgs(["--nats", "1"]).natsServers).toBe(1);
	});

	it("refuses a NATS cluster without a majority quorum, or no value", () => {
		for (const bad of [["--nats", "2"], ["--nats", "4"], ["--nats", "0"], ["--nats"]])
			expect(() => parseClusterArgs(bad)).toThrow(ClusterUsageError);
		expect(() => parseClusterArgs(["--nats", "2"])).toThrow(/1, 3, 5/);
	});

	it("sets every replicated service with a bare count, single services by name; later wins", () => {
		expect(parseClusterArgs(["--replicas", "1"]).replicas).toEqual({
			orders: 1,
			inventory: 1,
			payments: 1,
			notifications: 1
		});
		expect(
			parseClusterArgs(["--replicas", "1", "--replicas=orders=3,products=2"]).replicas
		).toEqual({ orders: 3, inventory: 1, payments: 1, notifications: 1, products: 2 });
		expect(parseClusterArgs(["--replicas", "inventory=1", "--nats", "3"])).toEqual({
			natsServers: 3,
			replicas: { orders: 2, inventory: 1, payments: 2, notifications: 2 }
		});
	});

	it("refuses unknown arguments, services, the gateway and counts out of 1..9", () => {
		const cases: [string[], RegExp][] = [
			[["--replica", "2"], /unknown argument "--replica"/],
			[["orders=2"], /unknown argument/],
			[["--replicas", "shipping=2"], /bad replica count "shipping=2"/],
			[["--replicas", "api=2"], /the gateway \(api\) runs once/],
			[["--replicas", "orders=10"], /want 1\.\.9/],
			[["--replicas", "0"], /want 1\.\.9/],
			[["--replicas", "orders="], /want 1\.\.9/],
			[["--replicas"], /--replicas needs a value/]
		];
		for (const [argv, message] of cases) {
			expect(() => parseClusterArgs(argv)).toThrow(ClusterUsageError);
			expect(() => parseClusterArgs(argv)).toThrow(message);
		}
	});
});
