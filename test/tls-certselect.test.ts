// Certificate choice: SNI (exact, then one-label wildcard), then what the client can verify.
import t from 'tap';
import { AlertDescription, TlsAlertError } from '../src/tls/alert.js';
import { certSignatureSchemes, prepareCertEntry, selectCertificate } from '../src/tls/certselect.js';
import { SignatureScheme as S } from '../src/tls/signer.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { SoftSigner } from './helpers/soft-signer.js';

const certs = makeTestCerts(['localhost', '*.example.com']);
t.teardown(() => certs.cleanup());
const rsa = prepareCertEntry({ chain: certs.rsa.chain, signer: new SoftSigner(certs.rsa.key) });
const ec = prepareCertEntry({ chain: certs.ec.chain, signer: new SoftSigner(certs.ec.key) });
const ec384 = prepareCertEntry({ chain: certs.ec384.chain, signer: new SoftSigner(certs.ec384.key) });
const apiOnly = prepareCertEntry({ chain: certs.rsa.chain, signer: new SoftSigner(certs.rsa.key) }, ['api.example.com']);
const all = [rsa, ec, ec384];

const alertOf = (f: () => unknown): number => { try { f(); } catch (e) { return e instanceof TlsAlertError ? e.alert : -1; } return -2; };

t.test('names come from the leaf DNS SANs unless given', async (t) => {
  t.same(ec.names, ['localhost', '*.example.com']);
  t.same(apiOnly.names, ['api.example.com']);
});

t.test('ECDSA is preferred when the client offers it, else RSA-PSS', async (t) => {
  t.equal(selectCertificate(all, undefined, [S.rsa_pss_rsae_sha256, S.ecdsa_secp256r1_sha256]).entry, ec);
  const r = selectCertificate(all, undefined, [S.rsa_pss_rsae_sha512]);
  t.equal(r.entry, rsa);
  t.equal(r.scheme, S.rsa_pss_rsae_sha512);
  t.equal(selectCertificate(all, undefined, [S.ecdsa_secp384r1_sha384]).entry, ec384, 'the P-384 key for its scheme');
});

t.test('exact SNI beats a wildcard; a wildcard covers exactly one label', async (t) => {
  const entries = [rsa, apiOnly];
  t.equal(selectCertificate(entries, 'api.example.com', [S.rsa_pss_rsae_sha256]).entry, apiOnly);
  t.equal(selectCertificate(entries, 'www.example.com', [S.rsa_pss_rsae_sha256]).entry, rsa);
  const strict = (sni: string) => alertOf(() => selectCertificate(entries, sni, [S.rsa_pss_rsae_sha256], undefined, true));
  t.equal(strict('a.b.example.com'), AlertDescription.unrecognized_name);
  t.equal(strict('example.com'), AlertDescription.unrecognized_name);
  // Without strict, the default certificate (the first entry and those for its names) serves unknown names.
  t.equal(selectCertificate(entries, 'a.b.example.com', [S.rsa_pss_rsae_sha256]).entry, rsa);
  t.equal(selectCertificate([apiOnly, rsa], 'example.com', [S.rsa_pss_rsae_sha256]).entry, apiOnly);
});

t.test('no usable scheme → handshake_failure; PKCS#1 and SHA-1 are never used in TLS 1.3', async (t) => {
  t.equal(alertOf(() => selectCertificate(all, undefined, [S.rsa_pkcs1_sha256, 0x0201])), AlertDescription.handshake_failure);
  t.equal(alertOf(() => selectCertificate([ec], undefined, [S.ecdsa_secp384r1_sha384])), AlertDescription.handshake_failure, 'P-256 key cannot sign ecdsa_secp384r1_sha384');
});

t.test('signature_algorithms_cert prefers a chain the client can verify', async (t) => {
  t.same(certSignatureSchemes(certs.rsa.chain[0]!), [S.rsa_pkcs1_sha256], 'self-signed RSA leaf is sha256WithRSAEncryption');
  t.same(ec.chainSchemes, [S.ecdsa_secp256r1_sha256], 'CA-issued leaf; the root self-signature is not counted');
  const pssSigned = { ...rsa, chainSchemes: [S.rsa_pss_rsae_sha256] };
  t.equal(selectCertificate([rsa, pssSigned], undefined, [S.rsa_pss_rsae_sha256], [S.rsa_pss_rsae_sha256]).entry, pssSigned,
    'the chain signed with an offered algorithm wins over an earlier one');
  t.equal(selectCertificate([rsa, pssSigned], undefined, [S.rsa_pss_rsae_sha256]).entry, pssSigned, 'without the extension, signature_algorithms applies to the chain');
  t.equal(selectCertificate([rsa, pssSigned], undefined, [S.rsa_pss_rsae_sha256], [S.rsa_pkcs1_sha256]).entry, rsa, 'and the other way round');
  t.equal(selectCertificate([ec, rsa], undefined, [S.rsa_pss_rsae_sha256, S.ecdsa_secp256r1_sha256], [S.rsa_pkcs1_sha256]).entry, ec,
    'key type still decides first; an unverifiable chain is sent rather than failing (RFC 8446 §4.4.2.2)');
});

t.test('a signer whose key type differs from the certificate is refused at startup', async (t) => {
  t.throws(() => prepareCertEntry({ chain: certs.rsa.chain, signer: new SoftSigner(certs.ec.key) }), /signer holds a ec key/);
});
