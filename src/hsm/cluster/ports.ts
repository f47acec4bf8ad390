// hsm/cluster: which of a cluster's HSM ports something else already listens on, so `cluster
// init` can say so while the user can still pick others, instead of the HSM failing to start
// later. Node built-ins only.
import { createServer } from 'node:net';
import type { ManifestHsm } from './manifest.js';

/** An HSM whose address:port is taken now. */
export interface PortInUse { hsm: string; address: string; port: number }

/** Whether listening on address:port fails with EADDRINUSE (any other failure is not this check's business). */
function inUse(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EADDRINUSE'));
    s.listen({ host: address, port, exclusive: true }, () => s.close(() => resolve(false)));
  });
}

/** The HSMs of `hsms` whose port is in use right now, in order. */
export async function portsInUse(hsms: readonly ManifestHsm[]): Promise<PortInUse[]> {
  const taken = await Promise.all(hsms.map((h) => inUse(h.address, h.port)));
  return hsms.filter((_, i) => taken[i]).map((h) => ({ hsm: h.id, address: h.address, port: h.port }));
}

