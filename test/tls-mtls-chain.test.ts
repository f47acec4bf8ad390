// Client-certificate chain verification (src/tls/client-auth.ts) as a specification: which chains
// a listener trusts, and the alert each kind of bad chain earns.
import t, { type Test } from 'tap';
import { createPublicKey } from 'node:crypto';
import { AlertDescription, TlsAlertError, TlsError, type AlertName } from '../src/tls/alert.js';
import { prepareClientAuth, verifyClientChain, type ClientAuthOptions, type ClientAuthPolicy } from '../src/tls/client-auth.js';
import * as x509 from '../src/pki/x509.js';
import { ClientPki, type Issued } from './helpers/client-pki.js';

const pki = new ClientPki();
t.teardown(() => pki.cleanup());
const DAY = 86_400_000;
const now = Date.now();

const ca = await pki.ca('Client Root');
const otherCa = await pki.ca('Some Other Root');
const alice = await pki.issue(ca, { cn: 'alice', rdn: 'O=Acme', sans: [{ type: 'dns', value: 'alice.clients.example' }, { type: 'url', value: 'spiffe://acme/alice' }] });

function policy(over: Partial<ClientAuthOptions> = {}, anchors: Issued[] = [ca]): ClientAuthPolicy {
  return prepareClientAuth({ mode: 'require', ca: anchors.map((a) => a.der), ...over })!;
}

function refused(t: Test, p: ClientAuthPolicy, chain: Issued[], alert: AlertName, at = now): void {
  try {
    verifyClientChain(p, chain.map((c) => c.der), at);
    t.fail(`expected ${alert}`);
  } catch (err) {
    t.ok(err instanceof TlsAlertError, 'a TLS alert');
    t.equal((err as TlsAlertError).alert, AlertDescription[alert], `${alert}: ${(err as Error).message}`);
  }
}

t.test('a leaf issued by a trusted CA verifies and yields its identity', async (t) => {
  const id = verifyClientChain(policy(), [alice.der], now);
  t.equal(id.subject, 'CN=alice, O=Acme');
  t.equal(id.issuer, 'CN=Client Root');
  t.same(id.sans, ['DNS:alice.clients.example', 'URI:spiffe://acme/alice']);
  t.match(id.fingerprint256, /^[0-9a-f]{64}$/);
  t.same(id.chain, [alice.der]);
});

t.test('a leaf from another CA is unknown_ca', async (t) => {
  refused(t, policy(), [await pki.issue(otherCa, { cn: 'mallory' })], 'unknown_ca');
});

t.test('a self-signed client certificate not in the bundle is unknown_ca', async (t) => {
  refused(t, policy(), [await pki.issue(undefined, { cn: 'selfie' })], 'unknown_ca');
});

t.test('a leaf whose signature was not made by the CA it names is bad_certificate', async (t) => {
  // Same subject name as the trusted root, different key: the issuer name matches, the signature does not.
  const impostor = await pki.ca('Client Root');
  refused(t, policy(), [await pki.issue(impostor, { cn: 'forged' })], 'bad_certificate');
});

t.test('an expired leaf is certificate_expired', async (t) => {
  const old = await pki.issue(ca, { cn: 'old', notBefore: new Date(now - 10 * DAY), notAfter: new Date(now - DAY) });
  refused(t, policy(), [old], 'certificate_expired');
});

t.test('a leaf not valid yet is certificate_expired', async (t) => {
  const future = await pki.issue(ca, { cn: 'future', notBefore: new Date(now + DAY), notAfter: new Date(now + 10 * DAY) });
  refused(t, policy(), [future], 'certificate_expired');
});

t.test('an expired trusted CA fails every chain with certificate_expired', async (t) => {
  const oldRoot = await pki.ca('Old Root', { notBefore: new Date(now - 10 * DAY), notAfter: new Date(now - DAY) });
  refused(t, policy({}, [oldRoot]), [await pki.issue(oldRoot, { cn: 'x' })], 'certificate_expired');
});

t.test('a leaf whose EKU lacks clientAuth is unsupported_certificate', async (t) => {
  refused(t, policy(), [await pki.issue(ca, { cn: 'server-only', eku: [x509.ExtendedKeyUsage.serverAuth] })], 'unsupported_certificate');
});

t.test('a leaf without any EKU extension is accepted (no restriction stated)', async (t) => {
  t.equal(verifyClientChain(policy(), [(await pki.issue(ca, { cn: 'no-eku', eku: null })).der], now).subject, 'CN=no-eku');
});

t.test('a leaf whose keyUsage lacks digitalSignature is unsupported_certificate', async (t) => {
  refused(t, policy(), [await pki.issue(ca, { cn: 'encipher-only', keyUsage: x509.KeyUsageFlags.keyEncipherment })], 'unsupported_certificate');
});

t.test('an unknown critical extension is unsupported_certificate', async (t) => {
  const ext = new x509.Extension('1.3.6.1.4.1.99999.1', true, new Uint8Array([0x05, 0x00]));
  refused(t, policy(), [await pki.issue(ca, { cn: 'odd', extra: [ext] })], 'unsupported_certificate');
});

t.test('a chain through an intermediate CA verifies when the client sends the intermediate', async (t) => {
  const inter = await pki.issue(ca, { cn: 'Issuing CA', ca: true, eku: null, keyUsage: x509.KeyUsageFlags.keyCertSign });
  const bob = await pki.issue(inter, { cn: 'bob' });
  t.equal(verifyClientChain(policy(), [bob.der, inter.der], now).subject, 'CN=bob');
  t.equal(verifyClientChain(policy(), [bob.der, inter.der, ca.der], now).subject, 'CN=bob', 'the root may be sent too');
  refused(t, policy(), [bob], 'unknown_ca');
});

t.test('an intermediate that is not a CA cannot issue: bad_certificate', async (t) => {
  const notCa = await pki.issue(ca, { cn: 'just a leaf', eku: null, keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature });
  refused(t, policy(), [await pki.issue(notCa, { cn: 'carol' }), notCa], 'bad_certificate');
});

t.test('pathLenConstraint limits the intermediates below a CA: bad_certificate', async (t) => {
  const root0 = await pki.ca('Root pathlen 0', { pathLength: 0 });
  const inter = await pki.issue(root0, { cn: 'Too deep CA', ca: true, eku: null, keyUsage: x509.KeyUsageFlags.keyCertSign });
  refused(t, policy({}, [root0]), [await pki.issue(inter, { cn: 'dave' }), inter], 'bad_certificate');
  t.ok(verifyClientChain(policy({}, [root0]), [(await pki.issue(root0, { cn: 'erin' })).der], now), 'a leaf directly under it is fine');
});

t.test('a chain longer than maxDepth intermediates is refused', async (t) => {
  const i1 = await pki.issue(ca, { cn: 'I1', ca: true, eku: null, keyUsage: x509.KeyUsageFlags.keyCertSign });
  const i2 = await pki.issue(i1, { cn: 'I2', ca: true, eku: null, keyUsage: x509.KeyUsageFlags.keyCertSign });
  const leaf = await pki.issue(i2, { cn: 'deep' });
  t.ok(verifyClientChain(policy({ maxDepth: 2 }), [leaf.der, i2.der, i1.der], now));
  refused(t, policy({ maxDepth: 1 }), [leaf, i2, i1], 'unknown_ca');
});

t.test('more than 10 certificates are refused before any is parsed', async (t) => {
  refused(t, policy(), Array.from({ length: 11 }, () => alice), 'bad_certificate');
});

t.test('garbage instead of a certificate is bad_certificate', async (t) => {
  try {
    verifyClientChain(policy(), [Buffer.from('30030201ff', 'hex')], now);
    t.fail('accepted garbage');
  } catch (err) {
    t.equal((err as TlsAlertError).alert, AlertDescription.bad_certificate);
  }
});

t.test('allowedSubjects admits a listed subject and refuses others with access_denied', async (t) => {
  t.ok(verifyClientChain(policy({ allowedSubjects: ['CN=alice,O=Acme'] }), [alice.der], now), 'spelling without spaces matches');
  refused(t, policy({ allowedSubjects: ['CN=bob, O=Acme'] }), [alice], 'access_denied');
});

t.test('allowedSans matches exact SANs and one-label DNS wildcards', async (t) => {
  t.ok(verifyClientChain(policy({ allowedSans: ['URI:spiffe://acme/alice'] }), [alice.der], now));
  t.ok(verifyClientChain(policy({ allowedSans: ['DNS:*.clients.example'] }), [alice.der], now));
  refused(t, policy({ allowedSans: ['DNS:*.example'] }), [alice], 'access_denied');
  refused(t, policy({ allowedSans: ['DNS:bob.clients.example'] }), [alice], 'access_denied');
});

t.test('with both lists, matching either one is enough', async (t) => {
  t.ok(verifyClientChain(policy({ allowedSubjects: ['CN=nobody'], allowedSans: ['URI:spiffe://acme/alice'] }), [alice.der], now));
});

t.test('bad clientAuth options fail at server start with a message', async (t) => {
  let err: unknown;
  try { prepareClientAuth({ mode: 'require', ca: 'not a pem' }); } catch (e) { err = e; }
  t.ok(err instanceof TlsError && err.code === 'TLS_ERR_CLIENT_AUTH_CONFIG', 'TLS_ERR_CLIENT_AUTH_CONFIG');
  t.match((err as Error).message, /no certificate/);
  t.throws(() => prepareClientAuth({ mode: 'optional', ca: [ca.der], maxDepth: 99 }), /maxDepth/);
  t.equal(prepareClientAuth({ mode: 'none', ca: '' }), undefined, 'mode none needs no bundle');
});

t.test('the CA bundle subjects become the certificate_authorities names', async (t) => {
  const p = policy({}, [ca, otherCa]);
  t.equal(p.authorities.length, 2);
  t.equal(p.authorities[0]![0], 0x30, 'a DER Name (SEQUENCE)');
  t.ok(ca.der.includes(p.authorities[0]!), 'the subject Name bytes of the first CA');
});

t.test('a chain verified once is remembered, but not past its expiry', async (t) => {
  const p = policy();
  const first = verifyClientChain(p, [alice.der], now);
  t.equal(verifyClientChain(p, [alice.der], now + 1000), first, 'the second check is answered from the cache');
  refused(t, p, [alice], 'certificate_expired', now + 3 * DAY);
});

t.test('the identity carries the leaf public key that checks its CertificateVerify', async (t) => {
  const id = verifyClientChain(policy(), [alice.der], now);
  t.equal(id.publicKey.asymmetricKeyType, 'ec');
  t.ok(id.publicKey.equals(createPublicKey(alice.key)), 'the leaf key');
});
