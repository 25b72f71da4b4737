/**
 * Watchdogs: tiny `sh` processes that outlive the Node process that started them and clean up
 * after it when it dies, however it dies (SIGKILL, the OOM killer, a crash). Each holds the read
 * end of a pipe whose write end only its parent holds; the kernel closes it when the parent dies,
 * `read` sees end-of-file, and the watchdog acts. Nothing is polled and no timer runs meanwhile.
 *
 * Each runs in its own process group and ignores SIGINT, SIGTERM and SIGHUP, so that a
 * terminal's Ctrl-C or a `kill -- -<pgid>` of its parent's group does not end it before it has
 * done its job. A graceful stop disarms it (SIGKILL) once the parent has cleaned up itself.
 */
import { spawn, type ChildProcess } from "node:child_process";
import type { Socket } from "node:net";

export interface Watchdog {
	/** The watchdog's pid. */
	readonly pid: number;
	/** Ends the watchdog without it acting (the parent has cleaned up itself). */
	disarm(): void;
}

/**
 * On end-of-file: a fast shutdown (SIGINT) of postmaster $1, if its lock file $2 still names it
 * (a new postmaster on the same directory has another pid and is left alone).
 */
const POSTMASTER_SCRIPT = `trap '' INT TERM HUP
while read -r _; do :; done
{ read -r pid < "$2"; } 2>/dev/null
[ "$pid" = "$1" ] && kill -s INT "$1"
exit 0`;

/**
 * Reads `+<tier> <pgid>` (watch a process group) and `-<tier> <pgid>` (forget it) lines; on
 * end-of-file ends the groups tier by tier, lowest first: SIGTERM to each, up to $1 tenths of a
 * second for them to exit, SIGKILL to what is left.
 */
const GROUPS_SCRIPT = `trap '' INT TERM HUP
groups=" "
while read -r op pgid; do
	case "$op" in
	+*) groups="$groups\${op#+}:$pgid " ;;
	-*) kept=" "; for g in $groups; do [ "$g" = "\${op#-}:$pgid" ] || kept="$kept$g "; done; groups=$kept ;;
	esac
done
for tier in 0 1 2 3; do
	mine=""
	for g in $groups; do [ "\${g%%:*}" = "$tier" ] && mine="$mine \${g#*:}"; done
	[ -z "$mine" ] && continue
	for p in $mine; do kill -s TERM -- "-$p" 2>/dev/null; done
	i=0
	while [ "$i" -lt "$1" ]; do
		alive=""
		for p in $mine; do kill -s 0 -- "-$p" 2>/dev/null && alive="$alive $p"; done
		[ -z "$alive" ] && break
		sleep 0.1
		i=$((i + 1))
	done
	for p in $mine; do kill -s KILL -- "-$p" 2>/dev/null; done
done
exit 0`;

function startSh(script: string, args: readonly string[]): ChildProcess {
	const child = spawn("/bin/sh", ["-c", script, "watchdog", ...args], {
		stdio: ["pipe", "ignore", "ignore"],
		detached: true
	});
	// Neither the process nor its pipe keeps this process's event loop alive.
	child.unref();
	(child.stdin as unknown as Socket).unref();
	child.stdin!.on("error", () => undefined);
	return child;
}

function handle(child: ChildProcess): Watchdog {
	return {
		pid: child.pid ?? -1,
		disarm: () => {
			if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
		}
	};
}

/**
 * Starts a watchdog that gives postmaster `pid` a fast shutdown (SIGINT, what
 * `pg_ctl stop -m fast` sends) when this process dies, if `pidFile` (its `postmaster.pid`) still
 * names it then. Runs as this process's user: root may signal the `postgres` user's process.
 */
export function watchPostmaster(pid: number, pidFile: string): Watchdog {
	return handle(startSh(POSTMASTER_SCRIPT, [String(pid), pidFile]));
}

export interface GroupWatchdog extends Watchdog {
	/** Ends process group `pgid` (a `detached` child's pid) when this process dies. */
	watch(pgid: number, tier?: number): void;
	/** No longer ends `pgid` (its process has exited: its pid may be reused). */
	forget(pgid: number, tier?: number): void;
}

/**
 * Starts a watchdog that ends the process groups it is told about when this process dies: tier 0
 * first (SIGTERM, up to `graceMs` for them to exit, then SIGKILL), then tier 1, and so on up to 3.
 */
export function watchProcessGroups(graceMs: number): GroupWatchdog {
	const child = startSh(GROUPS_SCRIPT, [String(Math.max(1, Math.ceil(graceMs / 100)))]);
	const send = (line: string): void => {
		if (child.stdin?.writable) child.stdin.write(line + "\n");
	};
	return {
		...handle(child),
		watch: (pgid, tier = 0) => send(`+${tier} ${pgid}`),
		forget: (pgid, tier = 0) => send(`-${tier} ${pgid}`)
	};
}
