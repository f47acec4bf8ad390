// Child process for the embedded-mode test: starts an embedded cluster in DIR, prints the PIDs of
// its HSM node processes as one JSON line, then idles until the parent test kills it (SIGKILL:
// no cleanup code of ours runs). Bounded: exits on its own after 60 s.
import { startEmbeddedCluster } from '../../src/hsm/cluster/embedded.js';

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: embedded-parent DIR\n');
  process.exit(2);
}
const cluster = await startEmbeddedCluster({ dir, hsms: 2, scryptCost: 1024 });
process.stdout.write(JSON.stringify({ pids: [...cluster.supervisor.pids().values()] }) + '\n');
setTimeout(() => { void cluster.stop().finally(() => process.exit(0)); }, 60_000);
