/**
 * Node's on-disk compile cache (`module.enableCompileCache()`) for the modules this process loads
 * after it: a second start reads V8's code cache instead of compiling the shop's CommonJS modules
 * (its dist/ and node_modules) again. Imported first by the start scripts, for its side effect.
 *
 * Where: `NODE_COMPILE_CACHE` when set, else Node's default (`<os.tmpdir()>/node-compile-cache`);
 * `NODE_DISABLE_COMPILE_CACHE=1` turns it off. Entries are keyed by the module's path and checked
 * against its content, so a rebuilt file is compiled again; a directory that cannot be written
 * only means no cache.
 */
import nodeModule from "node:module";

nodeModule.enableCompileCache();

/**
 * Writes the cache of the modules compiled so far (e.g. once the shop is ready): Node writes it
 * at exit too, but not when the process is killed.
 */
export function flushCompileCache(): void {
	try {
		nodeModule.flushCompileCache();
	} catch {
		// a cache that cannot be written is no cache: nothing to do
	}
}
