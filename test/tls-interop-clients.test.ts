// Interop with curl (through node's http.Server over TlsSocket), node:tls
// (session reuse), gnutls-cli and Python ssl, all on loopback.
import t from 'tap';
import http from 'node:http';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { startInteropServer, runClient } from './helpers/tls-interop.js';

t.test('curl --tlsv1.3 GET and POST through http.Server over TlsSocket', async (t) => {
  // node's http.Server over TlsSocket, answering with what it received (the proxy itself runs
  // its own HTTP/1.1 layer over TlsSocket: test/proxy-hsm-front.test.ts).
  const front = http.createServer((req, res) => {
    if (req.url === '/big') return void res.end(Buffer.alloc(4 * 1024 * 1024, 'x'));
    const h = createHash('sha256');
    let n = 0;
    const proto = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
    req.on('data', (d: Buffer) => { h.update(d); n += d.length; });
    req.on('end', () => res.end(`${req.method} ${req.url} len=${n} sha=${h.digest('hex').slice(0, 16)} proto=${proto}\n`));
  });
  const srv = await startInteropServer({}, (s) => front.emit('connection', s));
  t.teardown(async () => { await srv.close(); front.close(); });

  const curl = ['--silent', '--show-error', '--tlsv1.3', '--cacert', srv.caFile, '--resolve', `localhost:${srv.port}:127.0.0.1`, '--max-time', '8'];
  const get = await runClient('curl', [...curl, `https://localhost:${srv.port}/hello?x=1`]);
  t.equal(get.stdout, 'GET /hello?x=1 len=0 sha=e3b0c44298fc1c14 proto=https\n', `GET proxied (${get.stderr})`);

  const body = Buffer.alloc(300_000, 'abcdefghij');
  const expected = createHash('sha256').update(body).digest('hex').slice(0, 16);
  const bodyFile = `${srv.certs.dir}/body.bin`;
  (await import('node:fs')).writeFileSync(bodyFile, body);
  const post = await runClient('curl', [...curl, '--data-binary', `@${bodyFile}`, `https://localhost:${srv.port}/upload`]);
  t.equal(post.stdout, `POST /upload len=300000 sha=${expected} proto=https\n`, 'a 300 kB POST body arrives intact');

  const two = await runClient('curl', [...curl, `https://localhost:${srv.port}/a`, `https://localhost:${srv.port}/b`]);
  t.match(two.stdout, /GET \/a[\s\S]*GET \/b/, 'keep-alive: two requests on one connection');

  const big = await runClient('curl', [...curl, '-H', 'Connection: close', '-o', '/dev/null', '-w', '%{size_download}', `https://localhost:${srv.port}/big`]);
  t.equal(big.stdout, String(4 * 1024 * 1024), `a 4 MB response with Connection: close is not truncated (${big.stderr})`);
});

t.test('node:tls client: ALPN, getCipher and session reuse', async (t) => {
  const srv = await startInteropServer();
  t.teardown(() => srv.close());
  const ca = readFileSync(srv.caFile);
  const connect = (session?: Buffer): Promise<{ reused: boolean; banner: string; session?: Buffer; alpn: string | false }> => new Promise((resolve, reject) => {
    let banner = '';
    let sess: Buffer | undefined;
    const c = tls.connect({ host: '127.0.0.1', port: srv.port, servername: 'localhost', ca, minVersion: 'TLSv1.3', session, ALPNProtocols: ['http/1.1'] });
    c.on('session', (s: Buffer) => { sess ??= s; });
    c.on('data', (d: Buffer) => {
      banner += d.toString();
      if (banner.endsWith('\n')) {
        const out = { reused: c.isSessionReused(), banner, alpn: c.alpnProtocol ?? false };
        setTimeout(() => { c.end(); resolve({ ...out, session: sess }); }, 50); // let the tickets arrive
      }
    });
    c.on('error', reject);
  });
  const first = await connect();
  t.equal(first.reused, false);
  t.equal(first.alpn, 'http/1.1');
  t.match(first.banner, 'hello TLS_AES_128_GCM_SHA256 resumed=false');
  t.ok(first.session, 'a ticket arrived');
  const second = await connect(first.session);
  t.equal(second.reused, true, 'client resumed');
  t.match(second.banner, 'resumed=true', 'server isSessionReused() is true');
  t.equal(srv.sockets[1]!.isSessionReused(), true);
});

t.test('gnutls-cli completes a handshake and exchanges data', async (t) => {
  const srv = await startInteropServer();
  t.teardown(() => srv.close());
  const r = await runClient('gnutls-cli', ['--x509cafile', srv.caFile, '--port', String(srv.port), '--sni-hostname', 'localhost', '--verify-hostname', 'localhost', '--priority', 'NORMAL:-VERS-ALL:+VERS-TLS1.3', '127.0.0.1'], { waitFor: /hello \S+ resumed/, steps: [[50, 'ping\n'], [400, '']] });
  t.match(r.stdout, /hello TLS_AES_128_GCM_SHA256/, `banner received (${r.stderr.slice(-300)})`);
  t.match(r.stdout, /echo ping/);
  t.match(r.stdout + r.stderr, /TLS1\.3/);
});

t.test('Python ssl completes a verified handshake', async (t) => {
  const srv = await startInteropServer();
  t.teardown(() => srv.close());
  const script = [
    'import socket, ssl, sys',
    `ctx = ssl.create_default_context(cafile=${JSON.stringify(srv.caFile)})`,
    'ctx.minimum_version = ssl.TLSVersion.TLSv1_3',
    `s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", ${srv.port}), timeout=5), server_hostname="localhost")`,
    'print(s.version(), s.cipher()[0])',
    'print(s.recv(200).decode().strip())',
    's.sendall(b"ping\\n")',
    'print(s.recv(200).decode().strip())',
    's.close()',
  ].join('\n');
  const r = await runClient('python3', ['-c', script]);
  t.equal(r.stdout, 'TLSv1.3 TLS_AES_128_GCM_SHA256\nhello TLS_AES_128_GCM_SHA256 resumed=false\necho ping\n', r.stderr);
});
