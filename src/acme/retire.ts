// What happens to an issue once a renewal replaced it: its chain and key are kept (connections
// opened before the swap may still use them) until its certificate has expired, then its key is
// destroyed in the HSM and its files removed; except a key still in use, which reuseKey carries
// from issue to issue: then only the expired chain goes.
import type { Backend } from '../engine/index.js';
import type { AcmeLog } from './order.js';
import { removeIssueFiles, type CertificateState, type RetiredKey } from './store.js';

/** The retired list once `previous` (the issue a renewal replaced) has joined it. */
export function retireIssue(state: CertificateState): RetiredKey[] {
  const previous = state.current;
  if (!previous) return [...state.retired];
  const { keyId, keyLabel: label, keyFile, chainFile, notAfter } = previous;
  return [...state.retired, { keyId, label, keyFile, chainFile, notAfter }];
}

/** The key is the current issue's, or that of an issue whose certificate has not expired yet. */
function keyInUse(state: CertificateState, keyId: string, now: number): boolean {
  if (state.current?.keyId === keyId) return true;
  return state.retired.some((r) => r.keyId === keyId && Date.parse(r.notAfter) > now);
}

/**
 * Destroys the keys of retired issues whose certificates expired before `now` (and removes their
 * files); returns the retired issues that stay (not expired, or a destroy that failed and is tried
 * again after the next order).
 */
export async function destroyExpired(
  dir: string, state: CertificateState, backend: Backend, log: AcmeLog, now: number,
): Promise<RetiredKey[]> {
  const keep: RetiredKey[] = [];
  // reuseKey: several expired issues may share one key, destroyed once.
  const destroyed = new Set<string>();
  for (const r of state.retired) {
    if (Date.parse(r.notAfter) > now) { keep.push(r); continue; }
    try {
      if (keyInUse(state, r.keyId, now) || destroyed.has(r.keyId)) {
        // reuseKey: the same key certifies a later issue; only this issue's chain has expired.
        await removeIssueFiles(dir, { chainFile: r.chainFile });
        continue;
      }
      // Another proxy sharing the key may have destroyed it already.
      await backend.delete(r.keyId).catch((err: unknown) => {
        if (!/NOT_FOUND|NO_SUCH/.test(String((err as { code?: unknown }).code))) throw err;
      });
      destroyed.add(r.keyId);
      await removeIssueFiles(dir, r);
    } catch (err) {
      keep.push(r);
      log.warn({ keyId: r.keyId, err: (err as Error).message }, 'could not destroy the key of an expired certificate; will try again');
    }
  }
  return keep;
}
