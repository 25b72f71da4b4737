/**
 * The development JWT secret (NODE_ENV other than production, `JWT_SECRET` unset): one per data
 * dir, so the nodes of one machine agree on it.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

/**
 * The development JWT secret: generated once per data dir and kept in `<DATA_DIR>/jwt-secret`,
 * so every node started on this machine with the same DATA_DIR agrees on it.
 */
export function developmentSecret(dataDir: string): string {
	const file = path.join(dataDir, "jwt-secret");
	try {
		return fs.readFileSync(file, "utf8").trim();
	} catch {
		fs.mkdirSync(dataDir, { recursive: true });
		const secret = crypto.randomBytes(48).toString("base64url");
		try {
			fs.writeFileSync(file, secret + "\n", { mode: 0o600, flag: "wx" });
			return secret;
		} catch {
			// Another process wrote it first: use theirs.
			return fs.readFileSync(file, "utf8").trim();
		}
	}
}
