/**
 * The gateway keeps its own list of the services `GET /ready` requires (it runs alone under
 * moleculer-runner and cannot import app/: services/api/cluster-services.ts says why); it must
 * not drift from app/services.ts, the ONE list, nor from the folders under services/.
 */
import fs from "node:fs";
import path from "node:path";
import { DATABASE_SERVICES, SHOP_SERVICES } from "../../app/services";
import { OUTBOX_SERVICES, READINESS_SERVICES } from "../../services/api/cluster-services";

const ROOT = path.join(__dirname, "..", "..");

describe("the lists of services", () => {
	it("app/services.ts names exactly the folders under services/", () => {
		const folders = fs
			.readdirSync(path.join(ROOT, "services"))
			.filter(d => fs.existsSync(path.join(ROOT, "services", d, `${d}.service.ts`)));
		expect([...SHOP_SERVICES].sort()).toEqual(folders.sort());
	});

	it("the gateway's readiness list is every service with a database", () => {
		expect([...READINESS_SERVICES].sort()).toEqual([...DATABASE_SERVICES].sort());
	});

	it("the services with an outbox are the ones whose source enqueues events", () => {
		const withOutbox = SHOP_SERVICES.filter(s =>
			/OutboxMixin\(/.test(
				fs.readFileSync(path.join(ROOT, "services", s, `${s}.service.ts`), "utf8")
			)
		);
		expect([...OUTBOX_SERVICES].sort()).toEqual([...withOutbox].sort());
	});
});
