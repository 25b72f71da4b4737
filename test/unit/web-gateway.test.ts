/**
 * The gateway's web side (mixins/web.mixin.ts) without a browser: which requests are pages, API
 * or order streams, the orders-per-second window, and that EVERY gateway node sees every order
 * event (a group per node; Moleculer balances an event between the members of one group). The
 * pages themselves, the streams and the dashboard run in Chromium: test/browser.
 */
import type { IncomingMessage } from "node:http";
import { ServiceBroker } from "moleculer";
import { isApiPath, isPageRequest } from "../../mixins/web.mixin";
import { OrderRateWindow } from "../../services/api/order-rate";
import {
	isOrderStreamPath,
	orderIdOf,
	OrderStreamsMixin,
	sseMessage
} from "../../services/api/order-streams";

const req = (method: string, url: string, accept = "text/html"): IncomingMessage =>
	({ method, url, headers: { accept } }) as unknown as IncomingMessage;

describe("web gateway helpers", () => {
	it("tells API paths, pages and order streams apart", () => {
		for (const p of ["/api", "/api/", "/api/products?x=1", "/health", "/ready", "/ready?x"])
			expect(isApiPath(p)).toBe(true);
		for (const p of ["/", "/admin", "/apis", "/healthz", "/orders/1", "/assets/a.js"])
			expect(isApiPath(p)).toBe(false);

		expect(isPageRequest(req("GET", "/admin"))).toBe(true);
		expect(isPageRequest(req("HEAD", "/orders/6f1c2f4e"))).toBe(true);
		expect(isPageRequest(req("GET", "/admin", "*/*"))).toBe(false);
		expect(isPageRequest(req("POST", "/admin"))).toBe(false);
		expect(isPageRequest(req("GET", "/assets/missing.js"))).toBe(false);
		expect(isPageRequest(req("GET", "/api/nope"))).toBe(false);
		// moleculer-web strips the route's prefix from `url`; originalUrl is what the client sent.
		const stripped = {
			...req("GET", "/nope"),
			originalUrl: "/api/nope"
		} as unknown as IncomingMessage;
		expect(isPageRequest(stripped)).toBe(false);

		expect(isOrderStreamPath("/api/orders/abc/events")).toBe(true);
		expect(isOrderStreamPath("/api/orders/abc/events?x=1")).toBe(true);
		expect(isOrderStreamPath("/api/orders/abc")).toBe(false);
		expect(isOrderStreamPath("/api/orders/abc/events/more")).toBe(false);
	});

	it("finds the order of order and saga events", () => {
		expect(orderIdOf("order.created", { order: { id: "o1" } })).toBe("o1");
		expect(orderIdOf("saga.stepCompleted", { name: "order", data: { orderId: "o2" } })).toBe(
			"o2"
		);
		expect(orderIdOf("saga.started", { name: "other", data: { orderId: "o3" } })).toBeNull();
		expect(orderIdOf("order.created", null)).toBeNull();
		expect(sseMessage("order", { a: 1 })).toBe('event: order\ndata: {"a":1}\n\n');
	});

	it("counts order events per second over a sliding window", () => {
		const w = new OrderRateWindow(10);
		const t0 = 1_000_000;
		w.add("created", t0);
		w.add("created", t0 + 500);
		w.add("confirmed", t0 + 1_200);
		const s = w.series(3, t0 + 1_999);
		expect(s.map(p => p.at)).toEqual([999_000, 1_000_000, 1_001_000]);
		expect(s[1]).toMatchObject({ created: 2, confirmed: 0 });
		expect(s[2]).toMatchObject({ confirmed: 1 });
		w.add("cancelled", t0 + 20_000); // drops the seconds older than 10 s
		const later = w.series(30, t0 + 20_000);
		expect(later.reduce((n, p) => n + p.created, 0)).toBe(0);
		expect(later[later.length - 1]).toMatchObject({ cancelled: 1 });
	});

	it("gives every gateway node every order event (one group per node)", async () => {
		const brokers = ["gw-1", "gw-2", "orders-1"].map(
			nodeID =>
				new ServiceBroker({
					nodeID,
					namespace: `web-${process.pid}`,
					transporter: "Fake",
					logger: false
				})
		);
		const [gw1, gw2, emitter] = brokers as [ServiceBroker, ServiceBroker, ServiceBroker];
		for (const b of [gw1, gw2]) b.createService({ name: "api", mixins: [OrderStreamsMixin()] });
		try {
			await Promise.all(brokers.map(b => b.start()));
			await emitter.waitForServices(["api"]);
			await new Promise(r => setTimeout(r, 300)); // both gateways' event subscriptions known
			for (let i = 0; i < 4; i++)
				await emitter.emit("order.created", { order: { id: `o${i}` } });
			const created = async (b: ServiceBroker): Promise<number> => {
				const r = (await b.call("api.orderRate", { seconds: 10 })) as {
					points: { created: number }[];
				};
				return r.points.reduce((n, p) => n + p.created, 0);
			};
			const until = Date.now() + 5_000;
			while (Date.now() < until && ((await created(gw1)) < 4 || (await created(gw2)) < 4))
				await new Promise(r => setTimeout(r, 50));
			expect(await created(gw1)).toBe(4);
			expect(await created(gw2)).toBe(4);
		} finally {
			await Promise.all(brokers.map(b => b.stop()));
		}
	});
});
