// The audit log of the simulated HSM: what it records, that any edit, removal or reordering is
// detected and named by line, and that the chain is keyed by the HSM (issue 19): someone who can
// rewrite the files but not read the master key cannot recompute it, cut its tail, drop its head,
// or pass the log off as one of the first (unkeyed) format.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { verifyAuditLog, readAuditKey, Hsm } from '../src/hsm/device/index.js';
import { AuditLog } from '../src/hsm/device/audit.js';
import { freshHsm, tempDir } from './helpers/hsm-device.js';

const GENESIS = '0'.repeat(64);
const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

async function busyLog(t: Test): Promise<{ path: string; dir: string; key: Buffer; lines: string[]; hsm: Hsm }> {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  await f.cu('bob');
  await t.rejects(f.hsm.login('alice', 'wrong-password'));
  const k = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'k' });
  await f.hsm.shareKey(alice, k.result.privateKey.keyId, 'bob');
  await f.hsm.unshareKey(alice, k.result.privateKey.keyId, 'bob');
  await t.rejects(f.hsm.sign(f.co, { keyId: k.result.privateKey.keyId, mechanism: 'ecdsa-sha256', data: Buffer.from('x') }));
  await f.hsm.deleteKey(alice, k.result.privateKey.keyId);
  const path = f.hsm.auditLogPath;
  return { path, dir: f.dir, key: await readAuditKey(f.dir), lines: (await readFile(path, 'utf8')).trim().split('\n'), hsm: f.hsm };
}

// What an attacker without the key can do: recompute every chain value from line `from` on as a
// plain SHA-256 over the record (the first format's rule), whichever field holds it, and rewrite
// the head to match.
function recomputeUnkeyed(lines: string[], from: number, edit: (rec: Record<string, unknown>) => void = () => undefined): { seq: number; last: string } {
  let prev = from === 0 ? GENESIS : ((JSON.parse(lines[from - 1]!) as Record<string, string>).mac ?? (JSON.parse(lines[from - 1]!) as Record<string, string>).hash)!;
  for (let j = from; j < lines.length; j++) {
    const rec = JSON.parse(lines[j]!) as Record<string, unknown>;
    if (j === from) edit(rec);
    const field = 'mac' in rec ? 'mac' : 'hash';
    delete rec[field];
    rec.prev = prev;
    rec[field] = sha256(JSON.stringify(rec));
    prev = rec[field] as string;
    lines[j] = JSON.stringify(rec);
  }
  return { seq: lines.length, last: prev };
}

async function writeForgedHead(path: string, seq: number, last: string): Promise<void> {
  // Fields of both formats' heads, each filled with what the attacker can compute.
  await writeFile(path + '.head', JSON.stringify({ seq, hash: last, last, mac: sha256(JSON.stringify({ seq, last })) }) + '\n');
}

t.test('logins (ok and failed), user changes, key create/share/unshare/delete and denials are recorded', async (t) => {
  const { lines } = await busyLog(t);
  const events = lines.map((l) => JSON.parse(l) as { event: string; ok: boolean });
  const kinds = new Set(events.map((e) => `${e.event}:${e.ok}`));
  for (const k of ['hsm.init:true', 'login:true', 'login:false', 'user.password:true', 'user.create:true', 'key.create:true', 'key.share:true', 'key.unshare:true', 'denied:false', 'key.delete:true']) {
    t.ok(kinds.has(k), `records ${k}`);
  }
});

t.test('an untouched log verifies under its HSM\'s audit key', async (t) => {
  const { path, key, lines } = await busyLog(t);
  t.same(await verifyAuditLog(path, key), { ok: true, entries: lines.length });
});

t.test('the log does not verify under another HSM\'s audit key', async (t) => {
  const { path } = await busyLog(t);
  const other = await freshHsm(t);
  t.match(await verifyAuditLog(path, await readAuditKey(other.dir)), { ok: false, line: 1, reason: /does not verify under this HSM's audit key/ });
});

t.test('editing a line is detected at that line', async (t) => {
  const { path, key, lines } = await busyLog(t);
  const i = lines.findIndex((l) => l.includes('"event":"login"') && l.includes('"ok":false'));
  lines[i] = lines[i]!.replace('"ok":false', '"ok":true');
  await writeFile(path, lines.join('\n') + '\n');
  t.match(await verifyAuditLog(path, key), { ok: false, line: i + 1, reason: /edited/ });
});

t.test('an edited entry with the chain recomputed as plain SHA-256 (and the head rewritten) does not verify', async (t) => {
  const { path, key, lines } = await busyLog(t);
  const i = lines.findIndex((l) => l.includes('"event":"login"') && l.includes('"ok":false'));
  const { seq, last } = recomputeUnkeyed(lines, i, (rec) => { rec.ok = true; });
  await writeFile(path, lines.join('\n') + '\n');
  await writeForgedHead(path, seq, last);
  t.match(await verifyAuditLog(path, key), { ok: false, line: i + 1 }, 'the failed login cannot be turned into a successful one');
});

t.test('a log rewritten whole in the first (unkeyed) format is reported as such, never as intact', async (t) => {
  const { path, key, lines } = await busyLog(t);
  const old = lines.map((l) => {
    const rec = JSON.parse(l) as Record<string, unknown>;
    delete rec.mac;
    return JSON.stringify({ ...rec, hash: 'x' });
  });
  const { seq, last } = recomputeUnkeyed(old, 0);
  await writeFile(path, old.join('\n') + '\n');
  await writeForgedHead(path, seq, last);
  t.match(await verifyAuditLog(path, key), { ok: false, unkeyed: true, line: 1, reason: /old unkeyed format/ });
});

t.test('a missing head file fails verification', async (t) => {
  const { path, key } = await busyLog(t);
  await rm(path + '.head');
  t.match(await verifyAuditLog(path, key), { ok: false, reason: /head file audit\.log\.head is missing/ });
});

t.test('removing entries from the end is detected through the head file', async (t) => {
  const { path, key, lines } = await busyLog(t);
  await writeFile(path, lines.slice(0, -2).join('\n') + '\n');
  t.match(await verifyAuditLog(path, key), { ok: false, reason: /removed from the end/ });
});

t.test('removing entries from the end and rewriting the head to match is detected', async (t) => {
  const { path, key, lines } = await busyLog(t);
  const kept = lines.slice(0, -2);
  await writeFile(path, kept.join('\n') + '\n');
  const last = JSON.parse(kept.at(-1)!) as Record<string, string>;
  await writeForgedHead(path, kept.length, last.mac ?? last.hash!);
  t.match(await verifyAuditLog(path, key), { ok: false, line: kept.length, reason: /head file/ });
});

t.test('deleting a line is detected where the chain breaks', async (t) => {
  const { path, key, lines } = await busyLog(t);
  lines.splice(4, 1);
  await writeFile(path, lines.join('\n') + '\n');
  t.match(await verifyAuditLog(path, key), { ok: false, line: 5, reason: /removed or reordered/ });
});

t.test('reordering two lines is detected', async (t) => {
  const { path, key, lines } = await busyLog(t);
  [lines[2], lines[3]] = [lines[3]!, lines[2]!];
  await writeFile(path, lines.join('\n') + '\n');
  t.match(await verifyAuditLog(path, key), { ok: false, line: 3 });
});

t.test('a line that is not JSON is named', async (t) => {
  const { path, key, lines } = await busyLog(t);
  lines[1] = '{"broken';
  await writeFile(path, lines.join('\n') + '\n');
  t.match(await verifyAuditLog(path, key), { ok: false, line: 2, reason: /not valid JSON/ });
});

t.test('an entry cannot set the fields the log sets itself (seq, time, chain)', async (t) => {
  const dir = await tempDir(t);
  const key = Buffer.alloc(32, 1);
  const path = join(dir, 'audit.log');
  const log = AuditLog.open(path, key, { hsm: 'hsm-1' });
  const before = Date.now();
  log.append({ event: 'a', ok: true });
  log.append({ event: 'b', ok: true, seq: 1000, time: '1999-01-01T00:00:00.000Z', prev: GENESIS, hash: 'f'.repeat(64), hsm: 'hsm-9' });
  log.close();
  const recs = (await readFile(path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(recs.map((r) => r.seq), [1, 2], 'sequence numbers are the log\'s');
  t.ok(Date.parse(recs[1]!.time as string) >= before - 1000, 'the time is the log\'s, not 1999');
  t.equal(recs[1]!.hsm, 'hsm-1', 'the HSM id is the log\'s');
  t.notOk('hash' in recs[1]!, 'no caller-supplied chain field is written');
  t.same(await verifyAuditLog(path, key), { ok: true, entries: 2 });
});

t.test('the chain continues across a restart', async (t) => {
  const f = await freshHsm(t);
  await f.hsm.close();
  const again = await Hsm.open({ ...f.opts, initialPassword: undefined });
  await again.login('admin', 'officer-pw1');
  await again.close();
  t.match(await verifyAuditLog(again.auditLogPath, await readAuditKey(f.dir)), { ok: true });
});

t.test('a log of the first format on disk is moved aside when the HSM opens, and the new keyed log names its last hash', async (t) => {
  const f = await freshHsm(t);
  await f.hsm.close();
  const path = f.hsm.auditLogPath;
  // The first format: {seq, time, ..., prev, hash} with hash = SHA-256 of the line without it.
  const old: string[] = [];
  let prev = GENESIS;
  for (let seq = 1; seq <= 3; seq++) {
    const rec: Record<string, unknown> = { seq, time: new Date().toISOString(), hsm: 'hsm-test', event: 'login', user: 'admin', ok: true, prev };
    rec.hash = prev = sha256(JSON.stringify(rec));
    old.push(JSON.stringify(rec));
  }
  await writeFile(path, old.join('\n') + '\n');
  await writeFile(path + '.head', JSON.stringify({ seq: 3, hash: prev }) + '\n');
  const key = await readAuditKey(f.dir);
  t.match(await verifyAuditLog(path, key), { ok: false, unkeyed: true, reason: /old unkeyed format/ }, 'verify says what it is rather than failing on a line');

  const again = await Hsm.open({ ...f.opts, initialPassword: undefined });
  await again.close();
  t.match(await verifyAuditLog(path, key), { ok: true }, 'the new log verifies');
  const first = JSON.parse((await readFile(path, 'utf8')).split('\n')[0]!) as Record<string, unknown>;
  t.match(first, { seq: 1, event: 'audit.rekeyed', previousEntries: 3, previousHash: prev, previousLog: /^audit\.log\.unkeyed-/ });
  const moved = (await readdir(f.dir)).filter((n) => n.startsWith('audit.log.unkeyed-')).sort();
  t.same(moved, [first.previousLog, `${String(first.previousLog)}.head`], 'the old log and its head are kept');
  t.equal(await readFile(join(f.dir, first.previousLog as string), 'utf8'), old.join('\n') + '\n');
});
