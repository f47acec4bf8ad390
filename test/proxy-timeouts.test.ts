// Client-side timeouts: a client that never finishes its headers, and an idle keep-alive connection.
import t from 'tap';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { baseYaml, startHarness, type Harness } from './helpers/proxy-harness.js';

/** Opens a TLS connection, writes `data`, and resolves with what the proxy sent before closing. */
function openAndWait(h: Harness, data: string, limitMs: number): Promise<{ text: string; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const sock = tls.connect({ host: '127.0.0.1', port: h.port, servername: 'localhost', ca: readFileSync(h.ca) }, () => sock.write(data));
    let text = '';
    sock.setEncoding('utf8').on('data', (d: string) => { text += d; });
    const guard = setTimeout(() => { sock.destroy(); reject(new Error(`connection still open after ${limitMs} ms`)); }, limitMs);
    sock.on('error', () => undefined);
    sock.on('close', () => { clearTimeout(guard); resolve({ text, closedAfterMs: Date.now() - started }); });
  });
}

const yaml = (timeouts: string) => baseYaml('  - upstream: [ "{{up0}}" ]') + `timeouts: { ${timeouts} }\n`;

t.test('a client that does not finish its request headers gets a 408 and is closed', async (t) => {
  const h = await startHarness(t, yaml('headersMs: 400, requestMs: 800'));
  const r = await openAndWait(h, 'GET / HTTP/1.1\r\nhost: localhost\r\nx-partial: ', 8000);
  t.match(r.text, /^HTTP\/1\.1 408 Request Timeout/);
  t.ok(r.closedAfterMs >= 300, `not before the timeout (${r.closedAfterMs} ms)`);
  t.ok(h.logs.some((l) => l.msg === 'client error' && l.status === 408), 'logged');
});

t.test('an idle keep-alive connection is closed after idleMs', async (t) => {
  const h = await startHarness(t, yaml('idleMs: 300'));
  const r = await openAndWait(h, 'GET / HTTP/1.1\r\nhost: localhost\r\n\r\n', 8000);
  t.match(r.text, /^HTTP\/1\.1 200 OK/, 'the request was answered');
  t.ok(r.closedAfterMs >= 250, `kept alive for a while (${r.closedAfterMs} ms)`);
});
