/**
 * The users service's public shapes: what other services, tests and the web app may import.
 */
import type { AuthUser } from "../../platform/context";

/** A user as the API shows it (never the password hash): `{ id, email, name, role }`. */
export type PublicUser = AuthUser;

/** `{ user, token }` answered by register and login. */
export interface AuthResult {
	user: PublicUser;
	/** Bearer access token (JWT, HS256), valid `JWT_EXPIRES_IN` seconds (default 3600). */
	token: string;
}

/** `user.registered`: a customer signed up. */
export type UserRegistered = PublicUser;
