// The audit log: append-only JSON lines, each carrying the SHA-256 of the previous line and its
// own hash, so any edit, removal or reordering breaks the chain at a line verify can name.
// A small head file records the last sequence number and hash, so truncating the tail or
// editing the last line is caught too. (Anyone able to rewrite both files and recompute
// every hash can forge history; sealing the head elsewhere is the cluster's job.)
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, writeFileSync, writeSync, existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/** One audit record as written (before `prev`/`hash` are added). */
export interface AuditEntry {
  event: string;
  /** The user who acted (or tried to), if known. */
  user?: string;
  ok: boolean;
  [field: string]: unknown;
}

/** Result of verifying an audit log: ok, or the first bad line (1-based) and why. */
export type AuditVerification =
  | { ok: true; entries: number }
  | { ok: false; entries: number; line: number; reason: string };

const GENESIS = '0'.repeat(64);

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

// The hash covers every field but `hash` itself, in the order written.
function entryHash(record: Record<string, unknown>): string {
  const { hash: _hash, ...rest } = record;
  return sha256(JSON.stringify(rest));
}

/** Appends hash-chained entries to one HSM's audit log file. */
export class AuditLog {
  private fd: number;
  private prev: string;
  private seq: number;

  private constructor(readonly path: string, fd: number, prev: string, seq: number) {
    this.fd = fd;
    this.prev = prev;
    this.seq = seq;
  }

  /** Opens (or creates) the log at `path`, continuing the chain from its last line. */
  static open(path: string): AuditLog {
    let prev = GENESIS;
    let seq = 0;
    if (existsSync(path)) {
      const lines = readFileSync(path, 'utf8').split('\n').filter((l) => l.length > 0);
      const last = lines.at(-1);
      if (last !== undefined) {
        try {
          const rec = JSON.parse(last) as { seq?: number; hash?: string };
          prev = typeof rec.hash === 'string' ? rec.hash : sha256(last);
          seq = typeof rec.seq === 'number' ? rec.seq : lines.length;
        } catch {
          // A torn last line (crash mid-append): chain from it anyway; verify will name it.
          prev = sha256(last);
          seq = lines.length;
        }
      }
    }
    return new AuditLog(path, openSync(path, 'a', 0o600), prev, seq);
  }

  /** Appends one entry; synchronous so the chain order is the order of events. */
  append(entry: AuditEntry): void {
    const record: Record<string, unknown> = { seq: this.seq + 1, time: new Date().toISOString(), ...entry, prev: this.prev };
    record.hash = entryHash(record);
    writeSync(this.fd, JSON.stringify(record) + '\n');
    this.seq++;
    this.prev = record.hash as string;
    writeFileSync(this.path + '.head', JSON.stringify({ seq: this.seq, hash: this.prev }) + '\n', { mode: 0o600 });
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

/** Checks a log's hash chain (and its head file if present); names the first line that fails. */
export async function verifyAuditLog(path: string): Promise<AuditVerification> {
  const text = await readFile(path, 'utf8');
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  let prev = GENESIS;
  let seq = 0;
  const hashes: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1;
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(lines[i] ?? '') as Record<string, unknown>;
    } catch {
      return { ok: false, entries: i, line, reason: 'not valid JSON (edited or torn)' };
    }
    if (rec.prev !== prev) {
      return { ok: false, entries: i, line, reason: 'its previous-entry hash does not match the line before it: a line was edited, removed or reordered here' };
    }
    if (rec.hash !== entryHash(rec)) return { ok: false, entries: i, line, reason: 'its content does not match its hash: the line was edited' };
    if (rec.seq !== seq + 1) return { ok: false, entries: i, line, reason: `sequence number ${String(rec.seq)} where ${seq + 1} was expected` };
    prev = rec.hash as string;
    hashes.push(prev);
    seq++;
  }
  let head: { seq?: number; hash?: string } | undefined;
  try {
    head = JSON.parse(await readFile(path + '.head', 'utf8')) as { seq?: number; hash?: string };
  } catch {
    head = undefined;
  }
  // The head is written just after each line, so after a crash it may lag by exactly one entry.
  const headOk = !head || (head.seq === seq && head.hash === prev) || (head.seq === seq - 1 && head.hash === (hashes[seq - 2] ?? GENESIS));
  if (!headOk && head) {
    return { ok: false, entries: seq, line: lines.length, reason: `the log ends at entry ${seq} but its head file records entry ${String(head.seq)} with another hash: entries were removed from the end or the last one was edited` };
  }
  return { ok: true, entries: seq };
}
