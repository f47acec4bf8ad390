// Leases and certificate objects across three HSMs through the cluster client: a lease is held
// only when a strict majority grants it (a minority of grants is no lease, and is given back),
// and a holder whose lease lapsed cannot store over what the next holder stored.
import t from 'tap';
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { ClusterLeases, type ClusterLease } from '../src/hsm/client/leases.js';
import type { HsmConnection } from '../src/hsm/client/connection.js';
import { startEmbeddedCluster, type EmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { connectCluster, linkFactory, membersOf } from '../src/hsm/cluster/membership.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

let cluster: EmbeddedCluster;
let dir: string;
let leases: ClusterLeases;

t.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hsmproxy-leases-'));
  cluster = await startEmbeddedCluster({ dir, hsms: 3, scryptCost: 1024 });
  leases = new ClusterLeases(cluster.client);
});
t.teardown(async () => {
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Runs `fn` on the HSMs named, each addressed directly as the CU. */
async function onHsms<T>(ids: string[], fn: (c: HsmConnection, id: string) => Promise<T>): Promise<T[]> {
  const m = await readManifest(dir);
  const factory = await linkFactory(dir, m);
  return Promise.all(membersOf(m).filter((a) => ids.includes(a.id)).map(async (a) => {
    const c = await factory(a, cluster.credentials.cu);
    try {
      return await fn(c, a.id);
    } finally {
      await c.close();
    }
  }));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const isLease = (v: unknown): v is ClusterLease => typeof (v as { token?: unknown }).token === 'number';

/** A key generated in the cluster and a certificate for it, issued by a throwaway software CA. */
async function keyWithCertificate(cn: string): Promise<{ keyId: string; der: Buffer }> {
  const pair = await cluster.client.generateKeyPair('ec:p256', { label: cn });
  const pub = await cluster.client.exportPublicKey(pair.publicKey.keyId);
  const publicKey = await webcrypto.subtle.importKey('spki', pub.der, { name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify']);
  const ca = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '02', subject: `CN=${cn}`, issuer: 'CN=test ca', notBefore: new Date(), notAfter: new Date(Date.now() + 86_400_000),
    publicKey, signingKey: ca.privateKey, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  return { keyId: pair.privateKey.keyId, der: Buffer.from(cert.rawData) };
}

t.test('a strict majority of the HSMs grants the lease; another holder is refused until it is released', async (t) => {
  const a = await leases.acquire('majority.example', 'proxy-a', 60_000);
  t.ok(isLease(a), 'granted');
  const b = await leases.acquire('majority.example', 'proxy-b', 60_000);
  t.notOk(isLease(b));
  t.match(b, { heldBy: 'proxy-a', granted: 0, members: 3 });
  const listed = await leases.list();
  t.match(listed.find((l) => l.name === 'majority.example'), { holder: 'proxy-a' });
  await leases.release(a as ClusterLease);
  const b2 = await leases.acquire('majority.example', 'proxy-b', 60_000);
  t.ok(isLease(b2) && b2.token > (a as ClusterLease).token, 'granted after release, with a higher token');
});

t.test('grants from a minority of the HSMs are no lease, and are given back', async (t) => {
  // proxy-x holds the name on two of the three HSMs (taken directly, as a partitioned proxy might).
  await onHsms(['hsm-1', 'hsm-2'], (c) => c.leaseAcquire('minority.example', 'proxy-x', 60_000));
  const y = await leases.acquire('minority.example', 'proxy-y', 60_000);
  t.notOk(isLease(y), 'one grant of three is not a lease');
  t.match(y, { heldBy: 'proxy-x', granted: 1, members: 3 });
  const onThird = await onHsms(['hsm-3'], (c) => c.leaseList());
  t.notOk(onThird[0]!.some((l) => l.name === 'minority.example'), 'the lone grant on hsm-3 was released');
});

t.test('the holder whose lease lapsed cannot store over the next holder\'s certificate', async (t) => {
  const name = 'fenced-cluster.example';
  const late = await leases.acquire(name, 'proxy-late', 300);
  t.ok(isLease(late));
  const oldCert = await keyWithCertificate(name);
  await sleep(500);
  const next = await leases.acquire(name, 'proxy-next', 60_000);
  t.ok(isLease(next), 'the expired lease is granted to the next proxy');
  const newCert = await keyWithCertificate(name);
  await leases.storeCertificate({ label: name, keyId: newCert.keyId, chain: [newCert.der], token: (next as ClusterLease).token, note: 'next' });
  await t.rejects(
    leases.storeCertificate({ label: name, keyId: oldCert.keyId, chain: [oldCert.der], token: (late as ClusterLease).token, note: 'late' }),
    { code: 'HSM_ERR_STALE_LEASE', message: /fencing token \d+ is older than token \d+.*nothing was overwritten/ },
  );
  await t.rejects(leases.renew(late as ClusterLease), { message: /not a majority: it is lost/ }, 'nor renew its lease');
  const read = await leases.getCertificate(name);
  t.equal(read?.keyId, newCert.keyId, 'the next holder\'s certificate stays');
  t.equal(read?.note, 'next');
  const each = await onHsms(['hsm-1', 'hsm-2', 'hsm-3'], (c) => c.getCertificate(name));
  t.ok(each.every((c) => c.keyId === newCert.keyId), 'every HSM holds the newer certificate');
});

t.test('challenges published with the lease are listed cluster-wide and go with its release', async (t) => {
  const lease = await leases.acquire('challenged.example', 'proxy-c', 60_000);
  t.ok(isLease(lease));
  await leases.renew(lease as ClusterLease, [{ type: 'tls-alpn-01', name: 'challenged.example', keyAuthorization: 'tok.thumb' }]);
  const listed = (await leases.list()).find((l) => l.name === 'challenged.example');
  t.same(listed?.challenges, [{ type: 'tls-alpn-01', name: 'challenged.example', keyAuthorization: 'tok.thumb' }]);
  await leases.release(lease as ClusterLease);
  t.notOk((await leases.list()).some((l) => l.name === 'challenged.example'));
});

t.test('an HSM that missed a certificate gets the newest copy at the next read', async (t) => {
  const name = 'repair.example';
  const lease = await leases.acquire(name, 'proxy-r', 60_000) as ClusterLease;
  const cert = await keyWithCertificate(name);
  // Stored on two HSMs only (a majority), as if hsm-3 had been down.
  await onHsms(['hsm-1', 'hsm-2'], (c) => c.storeCertificate({ label: name, keyId: cert.keyId, chain: [cert.der], token: lease.token }));
  t.equal((await leases.getCertificate(name))?.keyId, cert.keyId);
  const third = await onHsms(['hsm-3'], (c) => c.getCertificate(name));
  t.equal(third[0]!.keyId, cert.keyId, 'hsm-3 was given the copy');
});

/** Loopback ports nobody listens on (bound, then released). */
async function closedPorts(n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const srv = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    out.push((srv.address() as AddressInfo).port);
    await new Promise((r) => srv.close(r));
  }
  return out;
}

t.test('with HSMs of the manifest down, a lease needs a majority of the whole manifest, not of those that answer', async (t) => {
  const client = await connectCluster(dir, { credentials: cluster.credentials.cu, watch: false });
  t.teardown(() => client.close());
  const live = client.members();
  const [p1, p2, p3] = await closedPorts(3) as [number, number, number];
  const down = (id: string, port: number) => ({ id, host: '127.0.0.1', port });
  const l = new ClusterLeases(client);
  // Two of five down: the three that answer are a majority.
  await client.setMembers([...live, down('hsm-7', p1), down('hsm-8', p2)]);
  const got = await l.acquire('down.example', 'proxy-p', 60_000);
  t.ok(isLease(got), 'three grants of five are a lease');
  await l.release(got as ClusterLease);
  // Three of six down: three grants are not more than half.
  await client.setMembers([...live, down('hsm-7', p1), down('hsm-8', p2), down('hsm-9', p3)]);
  const refused = await l.acquire('down.example', 'proxy-q', 60_000);
  t.notOk(isLease(refused), 'no lease without a majority of the manifest');
  t.match(refused, { granted: 3, members: 6 });
  t.notOk((await leases.list()).some((x) => x.name === 'down.example'), 'the grants were given back');
});

t.test('a certificate deleted on a majority is gone, and an HSM still holding a copy is given the tombstone at the next read', async (t) => {
  const name = 'deleted-cluster.example';
  const first = await leases.acquire(name, 'proxy-d', 60_000) as ClusterLease;
  const cert = await keyWithCertificate(name);
  await leases.storeCertificate({ label: name, keyId: cert.keyId, chain: [cert.der], token: first.token });
  await leases.release(first);
  const second = await leases.acquire(name, 'proxy-d', 60_000) as ClusterLease;
  // Deleted on two HSMs only, as if hsm-3 had been down.
  await onHsms(['hsm-1', 'hsm-2'], (c) => c.deleteCertificate(name, second.token));
  t.equal(await leases.getCertificate(name), undefined, 'the newest state is the deletion');
  const third = await onHsms(['hsm-3'], (c) => c.getCertificate(name));
  t.match(third[0], { deleted: true, token: second.token }, 'hsm-3 was given the tombstone, not the others the copy');
  await leases.release(second);
});
