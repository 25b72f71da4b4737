/**
 * Preloaded into the shop by bench/saga-probe.mjs (`COUNT=1`): counts the SQL statements sent,
 * by database and text; on SIGUSR2 writes them to QUERY_COUNTS_FILE and starts again.
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
	return orig.call(this, config, values, cb);
};
process.on("SIGUSR2", () => {
	const all = [...counts].sort((a, b) => b[1] - a[1]);
	require("fs").writeFileSync(process.env.QUERY_COUNTS_FILE, JSON.stringify(all, null, 1));
	counts.clear();
});
