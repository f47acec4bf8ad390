// The audit log of the simulated HSM: what it records, and that any edit, removal or
// reordering is detected and named by line.
import t, { type Test } from 'tap';
import { readFile, writeFile } from 'node:fs/promises';
import { verifyAuditLog, Hsm } from '../src/hsm/device/index.js';
import { freshHsm } from './helpers/hsm-device.js';

async function busyLog(t: Test): Promise<{ path: string; lines: string[]; hsm: Hsm }> {
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
  return { path, lines: (await readFile(path, 'utf8')).trim().split('\n'), hsm: f.hsm };
}

t.test('logins (ok and failed), user changes, key create/share/unshare/delete and denials are recorded', async (t) => {
  const { lines } = await busyLog(t);
  const events = lines.map((l) => JSON.parse(l) as { event: string; ok: boolean });
  const kinds = new Set(events.map((e) => `${e.event}:${e.ok}`));
  for (const k of ['hsm.init:true', 'login:true', 'login:false', 'user.password:true', 'user.create:true', 'key.create:true', 'key.share:true', 'key.unshare:true', 'denied:false', 'key.delete:true']) {
    t.ok(kinds.has(k), `records ${k}`);
  }
});

t.test('an untouched log verifies', async (t) => {
  const { path, lines } = await busyLog(t);
  t.same(await verifyAuditLog(path), { ok: true, entries: lines.length });
});

t.test('editing a line is detected at that line', async (t) => {
  const { path, lines } = await busyLog(t);
  const i = lines.findIndex((l) => l.includes('"login:false"') || (l.includes('"event":"login"') && l.includes('"ok":false')));
  lines[i] = lines[i]!.replace('"ok":false', '"ok":true');
  await writeFile(path, lines.join('\n') + '\n');
  t.match(await verifyAuditLog(path), { ok: false, line: i + 1, reason: /edited/ });
});

t.test('an edited line whose hash was recomputed is caught at the next line', async (t) => {
  const { path, lines } = await busyLog(t);
  const { createHash } = await import('node:crypto');
  const rec = JSON.parse(lines[3]!) as Record<string, unknown>;
  rec.user = 'someone-else';
  delete rec.hash;
  rec.hash = createHash('sha256').update(JSON.stringify(rec)).digest('hex');
  lines[3] = JSON.stringify(rec);
  await writeFile(path, lines.join('\n') + '\n');
  t.match(await verifyAuditLog(path), { ok: false, line: 5, reason: /previous-entry hash/ });
});

t.test('deleting a line is detected where the chain breaks', async (t) => {
  const { path, lines } = await busyLog(t);
  lines.splice(4, 1);
  await writeFile(path, lines.join('\n') + '\n');
  t.match(await verifyAuditLog(path), { ok: false, line: 5 });
});

t.test('reordering two lines is detected', async (t) => {
  const { path, lines } = await busyLog(t);
  [lines[2], lines[3]] = [lines[3]!, lines[2]!];
  await writeFile(path, lines.join('\n') + '\n');
  t.match(await verifyAuditLog(path), { ok: false, line: 3 });
});

t.test('removing entries from the end is detected through the head file', async (t) => {
  const { path, lines } = await busyLog(t);
  await writeFile(path, lines.slice(0, -2).join('\n') + '\n');
  t.match(await verifyAuditLog(path), { ok: false, reason: /removed from the end/ });
});

t.test('a line that is not JSON is named', async (t) => {
  const { path, lines } = await busyLog(t);
  lines[1] = '{"broken';
  await writeFile(path, lines.join('\n') + '\n');
  t.match(await verifyAuditLog(path), { ok: false, line: 2, reason: /not valid JSON/ });
});

t.test('the chain continues across a restart', async (t) => {
  const f = await freshHsm(t);
  await f.hsm.close();
  const again = await Hsm.open({ ...f.opts, initialPassword: undefined });
  await again.login('admin', 'officer-pw1');
  await again.close();
  t.match(await verifyAuditLog(again.auditLogPath), { ok: true });
});
