// The audit log: append-only JSON lines, each ending in an HMAC-SHA256 ("mac") over the exact
// bytes before it, which include the previous line's MAC ("prev"); any edit, removal or
// reordering breaks the chain at a line verify can name. The MAC key is derived from the HSM's
// master key (persist.ts) and never written anywhere, so someone who can rewrite the log but
// cannot read master.key cannot recompute the chain (the first format's plain SHA-256 chain
// anyone could). A head file, MACed too, records the last entry, so cutting the tail is caught;
// a log without its head does not verify. Still undetectable here: rolling both files back to a
// copy taken earlier, and anything done by someone who can read master.key (the HSM's own user).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { deriveDeviceKey } from './persist.js';

/** One audit record as the device hands it in (the log adds `seq`, `time`, `hsm`, `prev`, `mac`). */
export interface AuditEntry {
  event: string;
  /** The user who acted (or tried to), if known. */
  user?: string;
  ok: boolean;
  [field: string]: unknown;
}

/**
 * Result of verifying an audit log: ok, or the first bad line (1-based) and why. `unkeyed`: the
 * log is in the first, plain SHA-256 format, which proves nothing against whoever can write it.
 */
export type AuditVerification =
  | { ok: true; entries: number }
  | { ok: false; entries: number; line: number; reason: string; unkeyed?: true };

/** HKDF label of the audit MAC key under the device master key (changing it orphans every log). */
export const AUDIT_KEY_LABEL = 'hsmproxy audit log mac v2';

const GENESIS = '0'.repeat(64);
// Fields the log sets itself: an entry's own values for them are dropped, never written.
const RESERVED = ['seq', 'time', 'prev', 'mac', 'hash'];
// A line's MAC is the last field, so verify can take the exact bytes it covers.
const MAC_FIELD = /,"mac":"([0-9a-f]{64})"\}$/;

const UNKEYED_REASON = 'this log is in the old unkeyed format (a plain SHA-256 chain, written before the audit key existed): '
  + 'anyone able to write the file could have recomputed it, so it cannot be verified; the HSM moves it aside and starts a keyed log the next time it opens';

// Domain-separated, so a head can never pass for a line or the other way round.
function mac(key: Buffer, domain: 'line' | 'head', body: string): string {
  return createHmac('sha256', key).update(`hsmproxy audit ${domain}\n`).update(body).digest('hex');
}

function sameMac(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

// A line of the first format: a JSON record with a `hash` and no MAC.
function isUnkeyed(line: string): boolean {
  return !MAC_FIELD.test(line) && typeof parseObject(line)?.hash === 'string';
}

function headBody(seq: number, last: string): string {
  return JSON.stringify({ seq, last });
}

/** The audit MAC key of the HSM whose data directory is `dir` (reads its master key; takes no lock). */
export function readAuditKey(dir: string): Promise<Buffer> {
  return deriveDeviceKey(dir, AUDIT_KEY_LABEL);
}

/** Appends MAC-chained entries to one HSM's audit log file. */
export class AuditLog {
  private constructor(
    readonly path: string,
    private readonly key: Buffer,
    private readonly fd: number,
    private prev: string,
    private seq: number,
    private readonly hsm: string | undefined,
  ) {}

  /**
   * Opens (or creates) the log at `path`, continuing the chain from its last line. `key`: the
   * audit key (readAuditKey). `hsm`: written into every entry. A log of the first (unkeyed)
   * format is moved aside and the new log's first entry names it and its last hash.
   */
  static open(path: string, key: Buffer, opts: { hsm?: string } = {}): AuditLog {
    let prev = GENESIS;
    let seq = 0;
    let movedAside: Record<string, unknown> | undefined;
    if (existsSync(path)) {
      const text = readFileSync(path, 'utf8');
      const lines = text.split('\n').filter((l) => l.length > 0);
      const last = lines.at(-1);
      if (lines[0] !== undefined && isUnkeyed(lines[0])) {
        movedAside = moveAside(path, lines);
      } else if (last !== undefined) {
        // A torn last line (crash mid-append) has no MAC: chain from one over its bytes; verify names it.
        prev = MAC_FIELD.exec(last)?.[1] ?? mac(key, 'line', last);
        const s = parseObject(last)?.seq;
        seq = typeof s === 'number' ? s : lines.length;
        if (!text.endsWith('\n')) writeFileSync(path, '\n', { flag: 'a' });
      }
    }
    const log = new AuditLog(path, key, openSync(path, 'a', 0o600), prev, seq, opts.hsm);
    if (movedAside) log.append({ event: 'audit.rekeyed', ok: true, ...movedAside });
    return log;
  }

  /** Appends one entry; synchronous so the chain order is the order of events. */
  append(entry: AuditEntry): void {
    const fields: Record<string, unknown> = { ...entry };
    for (const f of RESERVED) delete fields[f];
    if (this.hsm !== undefined) delete fields.hsm;
    const record = {
      seq: this.seq + 1, time: new Date().toISOString(), ...(this.hsm !== undefined ? { hsm: this.hsm } : {}),
      ...fields, prev: this.prev,
    };
    const body = JSON.stringify(record);
    const m = mac(this.key, 'line', body);
    writeSync(this.fd, `${body.slice(0, -1)},"mac":"${m}"}\n`);
    this.seq++;
    this.prev = m;
    // Written aside and renamed, so a crash never leaves a torn head (which would fail verify).
    const head = headBody(this.seq, m);
    writeFileSync(this.path + '.head.tmp', JSON.stringify({ seq: this.seq, last: m, mac: mac(this.key, 'head', head) }) + '\n', { mode: 0o600 });
    renameSync(this.path + '.head.tmp', this.path + '.head');
  }

  /** Flushes and closes the file. */
  close(): void {
    try {
      fsyncSync(this.fd);
    } finally {
      closeSync(this.fd);
    }
  }
}

// Renames an unkeyed log (and its head) to audit.log.unkeyed-TIME; returns what the new log records of it.
function moveAside(path: string, lines: string[]): Record<string, unknown> {
  const name = `${basename(path)}.unkeyed-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  renameSync(path, join(dirname(path), name));
  if (existsSync(path + '.head')) renameSync(path + '.head', join(dirname(path), `${name}.head`));
  const lastHash = parseObject(lines.at(-1) ?? '')?.hash;
  // The old log's final hash under the new MAC chain: the old file cannot be edited from now on unnoticed.
  return { previousLog: name, previousEntries: lines.length, ...(typeof lastHash === 'string' ? { previousHash: lastHash } : {}) };
}

/** Checks a log's MAC chain under `key` (readAuditKey) and its head file; names the first line that fails. */
export async function verifyAuditLog(path: string, key: Buffer): Promise<AuditVerification> {
  const text = await readFile(path, 'utf8');
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  let prev = GENESIS;
  let seq = 0;
  const macs: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1;
    const raw = lines[i] ?? '';
    const fail = (reason: string): AuditVerification => ({ ok: false, entries: i, line, reason });
    const rec = parseObject(raw);
    if (!rec) return fail('not valid JSON (edited or torn)');
    const found = MAC_FIELD.exec(raw);
    if (!found) {
      if (i === 0 && isUnkeyed(raw)) return { ok: false, entries: 0, line, reason: UNKEYED_REASON, unkeyed: true };
      return fail('it carries no MAC: the line was edited, or written by something other than this HSM');
    }
    const lineMac = found[1] ?? '';
    if (!sameMac(lineMac, mac(key, 'line', raw.slice(0, found.index) + '}'))) {
      return fail("its MAC does not verify under this HSM's audit key: the line was edited (or the log is another HSM's)");
    }
    if (rec.prev !== prev) return fail('its previous-entry MAC does not match the line before it: a line was removed or reordered here');
    if (rec.seq !== seq + 1) return fail(`sequence number ${String(rec.seq)} where ${seq + 1} was expected`);
    prev = lineMac;
    macs.push(prev);
    seq++;
  }
  const end = (reason: string): AuditVerification => ({ ok: false, entries: seq, line: lines.length, reason });
  let headText: string;
  try {
    headText = await readFile(path + '.head', 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    return end(`its head file ${basename(path)}.head is missing (the HSM rewrites it with every entry): without it, entries cut from the end would go unnoticed`);
  }
  const head = parseObject(headText);
  const headSeq = head?.seq;
  const headLast = head?.last;
  if (typeof headSeq !== 'number' || typeof headLast !== 'string' || typeof head?.mac !== 'string' || !sameMac(head.mac, mac(key, 'head', headBody(headSeq, headLast)))) {
    return end(`its head file ${basename(path)}.head does not verify under this HSM's audit key: it was edited or replaced`);
  }
  // The head is written just after each line, so after a crash it may lag by exactly one entry.
  const headOk = (headSeq === seq && headLast === prev)
    || (headSeq === seq - 1 && headLast === (macs[seq - 2] ?? GENESIS));
  if (!headOk) {
    return end(`the log ends at entry ${seq} but its head file records entry ${headSeq} with another MAC: entries were removed from the end or the last one was edited`);
  }
  return { ok: true, entries: seq };
}
