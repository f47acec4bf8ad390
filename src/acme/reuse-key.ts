// reuseKey: a renewal keeps the current issue's HSM key (a new CSR signed with it) instead of
// generating a fresh one, e.g. for key pinning. Only a key of the configured type is reused; one
// that cannot be loaded any more is replaced by a fresh key rather than failing the renewal.
import { join } from 'node:path';
import type { AcmeCertificateConfig } from '../config/index.js';
import type { Engine, KeyHandle } from '../engine/index.js';
import type { AcmeLog } from './order.js';
import type { CertificateState } from './store.js';

/** The HSM key the next order of `spec` reuses, or undefined for a fresh key. */
export async function reusableKey(
  spec: AcmeCertificateConfig, state: CertificateState, dir: string, engine: Engine, log: AcmeLog,
): Promise<KeyHandle | undefined> {
  const cur = state.current;
  if (!spec.reuseKey || !cur || state.keyType !== spec.keyType) return undefined;
  try {
    return await engine.loadKey(join(dir, cur.keyFile));
  } catch (err) {
    log.warn({ acme: spec.names[0], keyId: cur.keyId, err: (err as Error).message }, 'reuseKey: the current HSM key cannot be loaded; the renewal generates a fresh one');
    return undefined;
  }
}
