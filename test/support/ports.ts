/** A TCP port free on 127.0.0.1 right now (the OS picks it); shared with bin/cluster.ts. */
export { freePort } from "../../tools/local-servers";
