// Test certificates made with the openssl CLI in a temp dir: an RSA-2048 self-signed leaf,
// and P-256 / P-384 leaves issued by a P-256 test CA (so chains have two certificates).
import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One certificate with its key, as files (for CLI clients) and objects (for the server). */
export interface TestCert {
  keyFile: string;
  certFile: string;
  /** The file a client trusts to verify this certificate. */
  caFile: string;
  /** Leaf first, DER. */
  chain: Buffer[];
  key: KeyObject;
}

export interface TestCerts { dir: string; rsa: TestCert; ec: TestCert; ec384: TestCert; cleanup(): void }

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function pemToDer(pem: string): Buffer[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((m) => Buffer.from(new X509Certificate(m[0]).raw));
}

/** Generates the certificates for `names` (DNS SANs; 127.0.0.1 is always added as an IP SAN). */
export function makeTestCerts(names: string[] = ['localhost']): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-tls-'));
  const san = `subjectAltName=${[...names.map((n) => `DNS:${n}`), 'IP:127.0.0.1'].join(',')}`;
  writeFileSync(join(dir, 'ext.cnf'), `${san}\nbasicConstraints=CA:FALSE\n`);
  const subj = `/CN=${names[0] ?? 'localhost'}`;
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'rsa.key', '-out', 'rsa.crt', '-subj', subj, '-days', '2', '-addext', san], dir);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=hsmproxy test CA', '-days', '2'], dir);
  const issue = (name: string, curve: string): TestCert => {
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', `ec_paramgen_curve:${curve}`, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subj], dir);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.leaf.crt`, '-days', '2', '-extfile', 'ext.cnf', '-sha256'], dir);
    const chainPem = readFileSync(join(dir, `${name}.leaf.crt`), 'utf8') + readFileSync(join(dir, 'ca.crt'), 'utf8');
    writeFileSync(join(dir, `${name}.crt`), chainPem);
    return { keyFile: join(dir, `${name}.key`), certFile: join(dir, `${name}.crt`), caFile: join(dir, 'ca.crt'), chain: pemToDer(chainPem), key: createPrivateKey(readFileSync(join(dir, `${name}.key`))) };
  };
  const rsa: TestCert = {
    keyFile: join(dir, 'rsa.key'), certFile: join(dir, 'rsa.crt'), caFile: join(dir, 'rsa.crt'),
    chain: pemToDer(readFileSync(join(dir, 'rsa.crt'), 'utf8')), key: createPrivateKey(readFileSync(join(dir, 'rsa.key'))),
  };
  const ec = issue('ec', 'P-256');
  const ec384 = issue('ec384', 'P-384');
  // One bundle that trusts everything, for clients given a single CA file.
  writeFileSync(join(dir, 'all-ca.crt'), readFileSync(join(dir, 'rsa.crt'), 'utf8') + readFileSync(join(dir, 'ca.crt'), 'utf8'));
  return { dir, rsa, ec, ec384, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
