import type { JSX } from "preact";
import { useState } from "preact/hooks";
import { api, ApiError, session, type Session } from "../api";
import { Link, navigate, useLocation } from "../router";
import { ErrorMessage, PageTitle } from "../ui";

/** Only a path of this app, never another site. */
function safeNext(next: string | null): string | null {
	return next && next.startsWith("/") && !next.startsWith("//") ? next : null;
}

/** `/login` and `/register`. */
export function AuthPage({ mode }: { mode: "login" | "register" }): JSX.Element {
	const { query } = useLocation();
	const next = safeNext(query.get("next"));
	const [name, setName] = useState("");
	const [email, setEmail] = useState("");
	const [password, setPassword] = useState("");
	const [busy, setBusy] = useState(false);
	const [error, setError] = useState<ApiError | null>(null);

	const onSubmit = async (e: Event): Promise<void> => {
		e.preventDefault();
		setBusy(true);
		setError(null);
		try {
			const s =
				mode === "login"
					? await api<Session>("POST", "/users/login", { email, password })
					: await api<Session>("POST", "/users/register", { email, password, name });
			session.set({ token: s.token, user: s.user });
			navigate(next ?? (s.user.role === "admin" ? "/admin" : "/"), { replace: true });
		} catch (err) {
			setError(err as ApiError);
		} finally {
			setBusy(false);
		}
	};

	const other = mode === "login" ? "/register" : "/login";
	const withNext = next ? `${other}?next=${encodeURIComponent(next)}` : other;
	return (
		<section class="narrow">
			<PageTitle>{mode === "login" ? "Log in" : "Create an account"}</PageTitle>
			<form class="stack" onSubmit={onSubmit}>
				{mode === "register" && (
					<>
						<label for="name">Name</label>
						<input
							id="name"
							name="name"
							autocomplete="name"
							required
							maxLength={100}
							value={name}
							onInput={e => setName((e.target as HTMLInputElement).value)}
						/>
					</>
				)}
				<label for="email">E-mail</label>
				<input
					id="email"
					name="email"
					type="email"
					autocomplete="email"
					required
					value={email}
					onInput={e => setEmail((e.target as HTMLInputElement).value)}
				/>
				<label for="password">Password</label>
				<input
					id="password"
					name="password"
					type="password"
					autocomplete={mode === "login" ? "current-password" : "new-password"}
					required
					minLength={mode === "register" ? 10 : undefined}
					maxLength={256}
					aria-describedby={mode === "register" ? "password-help" : undefined}
					value={password}
					onInput={e => setPassword((e.target as HTMLInputElement).value)}
				/>
				{mode === "register" && (
					<p id="password-help" class="muted">
						10 to 256 characters; not your e-mail address or a common password.
					</p>
				)}
				<button type="submit" disabled={busy}>
					{mode === "login" ? "Log in" : "Create account"}
				</button>
				<ErrorMessage error={error} />
			</form>
			<p>
				{mode === "login" ? "New here? " : "Have an account? "}
				<Link href={withNext}>{mode === "login" ? "Create an account" : "Log in"}</Link>
			</p>
		</section>
	);
}
