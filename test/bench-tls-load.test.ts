// The C handshake client behind `npm run bench:tls` measures what its rows say: in "resumed"
// mode nearly every connection after a thread's first resumes on a ticket (an OpenSSL client
// that frees a connection without sending close_notify marks its session not resumable, and
// every "resumed" figure was once a full handshake for that reason), in "full" mode none does.
// Against hsmproxy's TlsServer and node:tls alike. Needs a C compiler and OpenSSL headers.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { buildTlsLoad, type TlsLoadClient } from '../bench/lib/tls-load.js';
import { startHsmproxyTls, startNodeTls, softEngineSigner } from '../bench/lib/servers.js';
import { makeTestCerts } from './helpers/tls-certs.js';

let client: TlsLoadClient | undefined;
let why = '';
try {
  execFileSync('openssl', ['version'], { stdio: 'ignore' });
  client = buildTlsLoad();
} catch (err) {
  why = (err as Error).message;
}
const certs = makeTestCerts(['localhost']);
t.teardown(() => { certs.cleanup(); client?.cleanup(); });

const THREADS = 2;

t.test('resumed mode resumes on hsmproxy\'s tickets; full mode never resumes', { skip: client ? false : why }, async (t) => {
  const soft = await softEngineSigner(certs.ec.keyFile);
  const server = await startHsmproxyTls(certs.ec.chain, soft.signer);
  try {
    const resumed = await client!.run(server.port, 1, THREADS, 'resumed');
    t.equal(resumed.errors, 0, 'no failed connection');
    t.ok(resumed.connections > THREADS * 2, `${resumed.connections} connections made`);
    t.ok(resumed.resumed >= resumed.connections - THREADS, `${resumed.resumed} of ${resumed.connections} resumed (each thread's first is full)`);
    const full = await client!.run(server.port, 1, THREADS, 'full');
    t.equal(full.errors, 0);
    t.equal(full.resumed, 0, 'full mode offers no ticket');
  } finally {
    await server.close();
    await soft.close();
  }
});

t.test('resumed mode resumes against node:tls, the baseline, too', { skip: client ? false : why }, async (t) => {
  const server = await startNodeTls(certs.ec.certFile, certs.ec.keyFile);
  try {
    const r = await client!.run(server.port, 1, THREADS, 'resumed');
    t.equal(r.errors, 0);
    t.ok(r.resumed >= r.connections - THREADS, `${r.resumed} of ${r.connections} resumed`);
  } finally {
    await server.close();
  }
});
