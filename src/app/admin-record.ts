// The admin URL of a `serve` running on a simulated cluster, recorded in the cluster directory
// (DIR/serve-admin.json) so `hsmproxy cluster advise --dir DIR` can read the running proxy's
// advice (latency included) instead of asking the HSMs only. Written atomically when serve
// listens, removed when it stops cleanly; a proxy that died leaves it behind, and readers tell
// that it is stale because the endpoint does not answer.
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

/** The file's name inside the cluster directory. */
export const ADMIN_RECORD = 'serve-admin.json';

/** What the file holds. */
export interface AdminRecord { url: string; pid: number; startedAt: string }

/** The URL a local client reaches the admin server at (a wildcard bind is reached on loopback). */
export function adminUrl(addr: AddressInfo): string {
  const host = addr.address === '0.0.0.0' ? '127.0.0.1' : addr.address === '::' ? '::1' : addr.address;
  return `http://${host.includes(':') ? `[${host}]` : host}:${addr.port}`;
}

/** Records `addr` in `dir`; returns the function that removes the record (only if it is still this process's). */
export async function writeAdminRecord(dir: string, addr: AddressInfo): Promise<() => Promise<void>> {
  const file = join(dir, ADMIN_RECORD);
  const record: AdminRecord = { url: adminUrl(addr), pid: process.pid, startedAt: new Date().toISOString() };
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(record, null, 2) + '\n', { mode: 0o644 });
  await rename(tmp, file);
  return async () => {
    // Another proxy serving the same cluster may have recorded itself since: leave its record.
    if ((await readAdminRecord(dir))?.pid === process.pid) await rm(file, { force: true });
  };
}

/** The record in `dir`, or undefined when there is none (or it is not one). */
export async function readAdminRecord(dir: string): Promise<AdminRecord | undefined> {
  try {
    const doc = JSON.parse(await readFile(join(dir, ADMIN_RECORD), 'utf8')) as Partial<AdminRecord>;
    return typeof doc.url === 'string' && typeof doc.pid === 'number' ? { url: doc.url, pid: doc.pid, startedAt: String(doc.startedAt ?? '') } : undefined;
  } catch {
    return undefined;
  }
}
