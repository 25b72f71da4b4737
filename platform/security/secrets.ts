/**
 * Placeholder secrets: the values the deployment files ship and the documentation shows as
 * examples. In production (`NODE_ENV=production`) platform/config.ts refuses to start while any
 * secret still holds one, naming the variable (issue 16, item 10): `deploy/k8s/secret.yaml`
 * shipped `ADMIN_PASSWORD: CHANGE-ME-admin-password`, which passes the password policy, so a
 * cluster applied without editing it had a publicly known administrator password.
 *
 * A value is a placeholder when
 * - it contains `CHANGE-ME` (any case; also `CHANGEME`, `CHANGE_ME`): every value of
 *   deploy/k8s/secret.yaml does;
 * - it is, or (for a URL) its user or password is, one of the documented examples
 *   (`EXAMPLE_SECRET_VALUES`): the README's sample start-up output shows a generated admin
 *   password, and README/CONTRACT/docs/security.md show credentials in URLs as
 *   `postgres://user:pass@host`, `nats://user:password@host`, `nats://<token>@host`,
 *   `redis://:pass@host`.
 *
 * test/unit/deploy.test.ts checks that every value of deploy/k8s/secret.yaml is refused here.
 */

/** The secret variables: the value itself is secret. */
export const SECRET_VARIABLES = ["JWT_SECRET", "ADMIN_PASSWORD", "NATS_TOKEN"] as const;

/** Variables holding URLs that may carry credentials (user, password or token). */
export const SECRET_URL_VARIABLES = ["DATABASE_URL", "TRANSPORTER", "CACHER"] as const;

/** Marker of a value that must be replaced (deploy/k8s/secret.yaml). */
const CHANGE_ME = /change[-_ ]?me/i;

/**
 * Example values of the documentation (compared case-insensitively): README.md's sample output
 * ("Admin admin@example.com / YSIRbbRIESlGR8xo"), and the credentials of its example URLs.
 */
export const EXAMPLE_SECRET_VALUES: readonly string[] = [
	"YSIRbbRIESlGR8xo",
	"pass",
	"password",
	"<password>",
	"token",
	"<token>"
];

function isExample(value: string): boolean {
	const v = value.trim().toLowerCase();
	return EXAMPLE_SECRET_VALUES.some(e => e.toLowerCase() === v);
}

/** The credentials of a URL (user, password), decoded; none when `raw` is not a URL. */
function urlCredentials(raw: string): string[] {
	let u: URL;
	try {
		u = new URL(raw);
	} catch {
		return [];
	}
	const decode = (s: string): string => {
		try {
			return decodeURIComponent(s);
		} catch {
			return s;
		}
	};
	return [u.username, u.password].filter(Boolean).map(decode);
}

/**
 * Why `value` of variable `name` is a placeholder, or null when it is not one.
 * @param url - the variable holds a URL: its user and password are compared with the examples
 */
export function placeholderReason(value: string, url = false): string | null {
	if (CHANGE_ME.test(value)) return `it contains the placeholder "CHANGE-ME"`;
	if (!url && isExample(value)) return "it is an example value from the documentation";
	if (url) {
		const creds = urlCredentials(value);
		if (creds.some(c => CHANGE_ME.test(c))) return `it contains the placeholder "CHANGE-ME"`;
		if (creds.some(isExample)) return "its credentials are an example from the documentation";
	}
	return null;
}

/**
 * The first secret of `env` that still holds a placeholder, as a message naming the variable
 * (without its value), or null.
 * @param urlVariables - more URL variables to check (`<SERVICE>_DATABASE_URL`)
 */
export function placeholderSecret(
	env: Record<string, string | undefined>,
	urlVariables: readonly string[] = []
): string | null {
	const check = (name: string, url: boolean): string | null => {
		const raw = env[name]?.trim();
		if (!raw) return null;
		const why = placeholderReason(raw, url);
		return why
			? `${name} still holds a placeholder (${why}): set a real secret before starting with NODE_ENV=production`
			: null;
	};
	for (const name of SECRET_VARIABLES) {
		const m = check(name, false);
		if (m) return m;
	}
	for (const name of [...SECRET_URL_VARIABLES, ...urlVariables]) {
		const m = check(name, true);
		if (m) return m;
	}
	return null;
}
