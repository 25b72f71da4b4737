/**
 * Preloaded into the shop by bench/saga-probe.mjs (`COUNT=1`): counts the SQL statements sent,
 * by database and text, and the flights (round trips): a statement sent while an earlier one on
 * the same connection is still unanswered (node-postgres' pipelining, platform/db/pool.ts) goes
 * in that one's flight, under the key `(flights)`. On SIGUSR2 writes them to QUERY_COUNTS_FILE
 * and starts again.
 */
const path = require("node:path");
const pg = require(require.resolve("pg", { paths: [path.join(__dirname, "..")] }));
const counts = new Map();
const orig = pg.Client.prototype.query;
pg.Client.prototype.query = function (config, values, cb) {
	const text = typeof config === "string" ? config : config && config.text;
	const db = this.database || "?";
	if (text) {
		const k = db.replace(/^p_/, "") + " | " + text.replace(/\s+/g, " ").trim().slice(0, 90);
		counts.set(k, (counts.get(k) || 0) + 1);
	}
	if (!this.__unanswered) {
		const k = `(flights) ${db.replace(/^p_/, "")}`;
		counts.set(k, (counts.get(k) || 0) + 1);
	}
	this.__unanswered = (this.__unanswered || 0) + 1;
	const answered = () => (this.__unanswered -= 1);
	if (typeof values === "function" || typeof cb === "function") {
		// The callback form (Sequelize's connections): answered when it is called.
		const last = typeof cb === "function" ? 2 : 1;
		const given = last === 2 ? cb : values;
		const wrapped = function (...a) {
			answered();
			return given.apply(this, a);
		};
		return last === 2
			? orig.call(this, config, values, wrapped)
			: orig.call(this, config, wrapped);
	}
	const r = orig.call(this, config, values, cb);
	if (r && typeof r.then === "function") r.then(answered, answered);
	else if (config && typeof config.on === "function") {
		config.once("end", answered);
		config.once("error", answered);
	} else answered();
	return r;
};
process.on("SIGUSR2", () => {
	const all = [...counts].sort((a, b) => b[1] - a[1]);
	require("fs").writeFileSync(process.env.QUERY_COUNTS_FILE, JSON.stringify(all, null, 1));
	counts.clear();
});
