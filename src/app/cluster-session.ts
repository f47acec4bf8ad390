// How CLI commands reach the whole cluster: a ClusterClient logged in with the command's
// credentials (balanced, failed over, changes replicated to every HSM), with the same one-line
// error as a single connection when no HSM of the cluster can be reached.
import { ClusterClient } from '../hsm/client/cluster-client.js';
import { connectCluster } from '../hsm/cluster/membership.js';
import type { ClusterManifest } from '../hsm/cluster/manifest.js';
import { UsageError } from './errors.js';

/** Connects to every HSM of the cluster in `dir` and logs in; UsageError when none is reachable. */
export async function openCluster(
  dir: string, m: ClusterManifest, pin: { user: string; password: string },
): Promise<ClusterClient> {
  try {
    return await connectCluster(dir, { credentials: pin, watch: false, extra: { requireOne: true } });
  } catch (err) {
    if ((err as { code?: unknown }).code === 'HSM_ERR_UNREACHABLE') {
      const h = m.hsms[0];
      const where = h ? `HSM ${h.id} at ${h.address}:${h.port}` : 'any HSM';
      throw new UsageError(`cannot reach ${where}: is it running? start it with \`hsmproxy hsm serve --dir ${dir} --hsm ${h?.id ?? 'hsm-1'}\` (or all of them: \`hsmproxy cluster start --dir ${dir}\`)`, 1);
    }
    throw err;
  }
}
