// Persistence of the simulated HSM: token keys and users survive restarts, encrypted at rest;
// a kill -9 in the middle of a burst of key creations loses no acknowledged key.
import t from 'tap';
import { spawn } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hsm, StoreError } from '../src/hsm/device/index.js';
import { freshHsm, TEST_SCRYPT_COST } from './helpers/hsm-device.js';

const CHILD = fileURLToPath(new URL('./helpers/hsm-burst-child.ts', import.meta.url));
const MSG = Buffer.from('persisted');

async function allFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await allFiles(p)));
    else out.push(p);
  }
  return out;
}

t.test('token keys, their attributes, sharing and users survive close and reopen; session keys do not', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  await f.cu('bob');
  const kp = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'web', id: 'ABCD' });
  await f.hsm.shareKey(alice, kp.result.privateKey.keyId, 'bob');
  await f.hsm.generateKey(alice, 'aes:128', { label: 'temp', token: false });
  const before = f.hsm.getKey(alice, kp.result.privateKey.keyId);
  const digest = f.hsm.stateDigest().digest;
  await f.hsm.close();

  const again = await Hsm.open({ ...f.opts, initialPassword: undefined });
  t.teardown(() => again.close());
  const a2 = await again.login('alice', 'alice-password');
  t.same(again.getKey(a2, kp.result.privateKey.keyId), before, 'same handle and attributes');
  t.same(again.occupancy(), { token: 2, session: 0, max: 3500 });
  t.equal(again.stateDigest().digest, digest);
  const b2 = await again.login('bob', 'bob-password');
  const sig = await again.sign(b2, { keyId: kp.result.privateKey.keyId, mechanism: 'ecdsa-sha256', data: MSG });
  t.ok(verify('sha256', MSG, createPublicKey(again.exportPublicKey(b2, kp.result.privateKey.keyId).pem), sig.result));
  await t.rejects(again.login('admin', 'one-time-pw'), { code: 'HSM_ERR_BAD_CREDENTIALS' }, 'the activated CO password persisted');
});

t.test('deleted keys stay deleted after reopen', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const k = await f.hsm.generateKey(alice, 'aes:256', { label: 'gone' });
  await f.hsm.deleteKey(alice, k.result.keyId);
  await f.hsm.close();
  const again = await Hsm.open({ ...f.opts, initialPassword: undefined });
  t.teardown(() => again.close());
  t.same(again.occupancy().token, 0);
});

t.test('key material is encrypted at rest and the master key file is 0600', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  const scalar = Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url');
  await f.hsm.importPrivateKey(alice, { key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), template: { label: 'migrated' } });
  for (const file of await allFiles(f.dir)) {
    const bytes = await readFile(file);
    t.notOk(bytes.includes(der) || bytes.includes(scalar) || bytes.includes(Buffer.from(der.toString('base64'))), `${file} holds no key material in the clear`);
    t.notOk(bytes.includes(Buffer.from('migrated')) && !file.endsWith('audit.log'), `${file} holds no attributes in the clear`);
  }
  t.equal((await stat(join(f.dir, 'master.key'))).mode & 0o777, 0o600);
});

t.test('a half-written temp file left by a crash is ignored and removed on open', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  await f.hsm.generateKey(alice, 'aes:256', { label: 'kept' });
  await f.hsm.close();
  await writeFile(join(f.dir, 'keys', `${'a'.repeat(32)}.key.tmp-123456`), Buffer.from('HSMS1 torn'));
  await writeFile(join(f.dir, 'users.sealed.tmp-abcdef'), Buffer.from('torn'));
  const again = await Hsm.open({ ...f.opts, initialPassword: undefined });
  t.teardown(() => again.close());
  t.equal(again.occupancy().token, 1);
  t.notOk((await allFiles(f.dir)).some((p) => p.includes('.tmp-')), 'temp files removed');
});

t.test('a tampered key file stops the open with a message naming the file', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const k = await f.hsm.generateKey(alice, 'aes:256', { label: 'k' });
  await f.hsm.close();
  const file = join(f.dir, 'keys', `${k.result.keyId}.key`);
  const bytes = await readFile(file);
  bytes[bytes.length - 1] ^= 1;
  await writeFile(file, bytes);
  await t.rejects(Hsm.open({ ...f.opts, initialPassword: undefined }), StoreError);
  await t.rejects(Hsm.open({ ...f.opts, initialPassword: undefined }), { message: new RegExp(`${k.result.keyId}\\.key.*restore`) });
});

t.test('an HSM refuses to open with another cluster key than the one it holds', async (t) => {
  const f = await freshHsm(t, { clusterKey: Buffer.alloc(32, 1) });
  await f.hsm.close();
  await t.rejects(Hsm.open({ ...f.opts, initialPassword: undefined, clusterKey: Buffer.alloc(32, 2) }), { code: 'HSM_ERR_STORE', message: /another cluster/ });
});

interface Burst { acked: string[]; code: number | null; signal: NodeJS.Signals | null; stderr: string }

// Runs the child, kills it with SIGKILL once `killAfter` keys were acknowledged (or after 20 s).
function burst(dir: string, killAfter: number): Promise<Burst> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import=tsx', CHILD, dir, 'alice', 'alice-password', '400'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const acked: string[] = [];
    let buf = '';
    let stderr = '';
    const guard = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (/^[0-9a-f]{32}$/.test(line)) acked.push(line);
        if (acked.length >= killAfter && child.exitCode === null && !child.killed) child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('close', (code, signal) => { clearTimeout(guard); resolve({ acked, code, signal, stderr }); });
  });
}

t.test('kill -9 in the middle of a burst of key creations: the store opens and holds every acknowledged key', async (t) => {
  const f = await freshHsm(t);
  await f.cu('alice');
  await f.hsm.close();
  const all: string[] = [];
  for (const killAfter of [5, 23, 41]) {
    const r = await burst(f.dir, killAfter);
    t.equal(r.signal, 'SIGKILL', `child killed mid-burst (stderr: ${r.stderr.slice(0, 200)})`);
    t.ok(r.acked.length >= killAfter, `${r.acked.length} keys acknowledged before the kill`);
    all.push(...r.acked);
    const again = await Hsm.open({ dir: f.dir, hsmId: 'crash-test', scryptCost: TEST_SCRYPT_COST });
    const s = await again.login('alice', 'alice-password');
    const held = new Set(again.listKeys(s).map((k) => k.keyId));
    const missing = all.filter((id) => !held.has(id));
    t.same(missing, [], 'every acknowledged key is there');
    await again.close();
  }
});

t.test('a data directory held by another live process is refused; a dead holder is taken over', async (t) => {
  const f = await freshHsm(t);
  await f.cu('alice');
  await f.hsm.close();
  const child = spawn(process.execPath, ['--import=tsx', CHILD, f.dir, 'alice', 'alice-password', 'hold'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
  t.teardown(() => { clearTimeout(guard); if (child.exitCode === null) child.kill('SIGKILL'); });
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (d: string) => { if (d.includes('ready')) resolve(); });
    child.on('close', () => reject(new Error('child exited before it was ready')));
  });
  await t.rejects(Hsm.open({ ...f.opts, initialPassword: undefined }), { code: 'HSM_ERR_STORE', message: new RegExp(`in use by process ${child.pid}`) });
  child.kill('SIGKILL');
  await exited;
  const again = await Hsm.open({ ...f.opts, initialPassword: undefined });
  t.teardown(() => again.close());
  t.equal((await again.login('alice', 'alice-password')).user, 'alice');
});
