/**
 * A local SMTP sink for development (docs/email.md): accepts every message on 127.0.0.1 (any
 * login, no TLS), prints its envelope, headers and text to stdout and saves it as an `.eml` file
 * under `.data/mail/` (open it with any mail client). Not for production: it delivers nothing.
 *
 *   node_modules/.bin/tsx tools/mail-sink.ts [port]          # default 1025
 *   SMTP_URL=smtp://127.0.0.1:1025 npm start                  # in another terminal
 *
 * Built on the `smtp-server` package (a devDependency; the tests' sink too).
 */
import fs from "node:fs";
import path from "node:path";
import { SMTPServer } from "smtp-server";

const port = Number(process.argv[2] ?? 1025);
const dir = path.resolve(".data", "mail");
fs.mkdirSync(dir, { recursive: true });

const server = new SMTPServer({
	logger: false,
	disabledCommands: ["STARTTLS"],
	authOptional: true,
	allowInsecureAuth: true,
	onAuth(auth, _session, cb) {
		cb(null, { user: auth.username ?? "anonymous" });
	},
	onData(stream, session, cb) {
		const chunks: Buffer[] = [];
		stream.on("data", (c: Buffer) => chunks.push(c));
		stream.on("end", () => {
			const raw = Buffer.concat(chunks).toString("utf8");
			const file = path.join(
				dir,
				`${new Date().toISOString().replace(/[:.]/g, "-")}-${session.id}.eml`
			);
			fs.writeFileSync(file, raw);
			const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : "";
			const to = session.envelope.rcptTo.map(a => a.address).join(", ");
			process.stdout.write(
				`\n=== ${new Date().toISOString()} MAIL FROM:<${from}> RCPT TO:<${to}> (${file})\n${raw.trimEnd()}\n`
			);
			cb();
		});
	}
});
server.on("error", (err: Error) => process.stderr.write(`mail sink: ${err.message}\n`));
server.listen(port, "127.0.0.1", () =>
	process.stdout.write(
		`Mail sink on smtp://127.0.0.1:${port} (saving to ${dir}); start the shop with SMTP_URL=smtp://127.0.0.1:${port}\n`
	)
);
for (const signal of ["SIGINT", "SIGTERM"] as const)
	process.once(signal, () => server.close(() => process.exit(0)));
