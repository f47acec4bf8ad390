// Proxy test certificates made with the openssl binary: a CA and leaf certificates it issues.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const run = (args: string[], cwd: string) => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
const newKey = (type: 'ec' | 'rsa') => (type === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'] : ['-newkey', 'rsa:2048']);

/** Creates `ca.pem` / `ca.key` (ECDSA P-256) in `dir`; returns the CA certificate path. */
export function makeCa(dir: string): string {
  run(['req', '-x509', ...newKey('ec'), '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=hsmproxy test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  return join(dir, 'ca.pem');
}

let serial = 1000;

/** Issues `<base>.pem` / `<base>.key` for `names` (DNS names; IPs allowed) signed by the CA in `dir`. */
export function issue(dir: string, base: string, names: string[], type: 'ec' | 'rsa' = 'ec'): { cert: string; key: string; serial: string } {
  const san = names.map((n) => (/^[\d.]+$/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  writeFileSync(join(dir, `${base}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  run(['req', ...newKey(type), '-nodes', '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${names[0]}`], dir);
  const s = (serial++).toString(16).toUpperCase();
  run(['x509', '-req', '-in', `${base}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', `0x${s}`, '-days', '2',
    '-extfile', `${base}.ext`, '-out', `${base}.pem`], dir);
  return { cert: join(dir, `${base}.pem`), key: join(dir, `${base}.key`), serial: s.length % 2 ? `0${s}` : s };
}
