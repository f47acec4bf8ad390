// PROXY protocol v1/v2 on a listener: the header reader against the specification's formats (good,
// malformed, arriving in pieces), the config field, and the offloading listener behind a balancer:
// the header's source address is the client's in X-Forwarded-For, logs and metrics; a header from an
// unlisted source, a malformed one, none at all, or one that never completes closes the connection.
import t from 'tap';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { parseConfig } from '../src/config/index.js';
import { readProxyHeader } from '../src/proxy/proxy-protocol.js';
import { offloadKey, startOffloadFront } from './helpers/offload-front.js';

const SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

/** A v2 header: command (0 LOCAL, 1 PROXY), family/transport byte, address block and TLVs. */
function v2(command: number, fam: number, body: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(body.length);
  return Buffer.concat([SIG, Buffer.from([0x20 | command, fam]), len, body]);
}

function ipv4Block(src: string, dst: string, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(12);
  src.split('.').forEach((o, i) => { b[i] = Number(o); });
  dst.split('.').forEach((o, i) => { b[4 + i] = Number(o); });
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  return b;
}

const tlv = (type: number, value: Buffer) => Buffer.concat([Buffer.from([type, value.length >> 8, value.length & 0xff]), value]);

t.test('v1: TCP4, TCP6 (canonical text) and UNKNOWN; the bytes after the header are not consumed', async (t) => {
  const line = 'PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n';
  const r = readProxyHeader(Buffer.from(`${line}\x16\x03\x01`, 'latin1'));
  t.same(r, {
    done: true, length: line.length,
    header: {
      version: 1, command: 'proxy',
      source: { address: '192.0.2.1', port: 56324, family: 'IPv4' }, destination: { address: '198.51.100.2', port: 443, family: 'IPv4' },
    },
  });
  const six = readProxyHeader(Buffer.from('PROXY TCP6 2001:0db8:0:0::0001 ::1 65535 0\r\n'));
  t.ok(six.done);
  if (six.done && six.header.command === 'proxy') {
    t.same(six.header.source, { address: '2001:db8::1', port: 65535, family: 'IPv6' });
    t.same(six.header.destination, { address: '::1', port: 0, family: 'IPv6' });
  }
  t.same(readProxyHeader(Buffer.from('PROXY UNKNOWN ffff::1 ::1 1 2\r\n')), { done: true, length: 31, header: { version: 1, command: 'local' } });
  t.same(readProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')), { done: true, length: 15, header: { version: 1, command: 'local' } });
});

t.test('v1 arriving a byte at a time is "need more" until the CRLF', async (t) => {
  const line = Buffer.from('PROXY TCP4 10.1.2.3 10.0.0.1 1000 443\r\n');
  for (let n = 1; n < line.length; n++) t.same(readProxyHeader(line.subarray(0, n)), { done: false }, `${n} bytes`);
  t.equal((readProxyHeader(line) as { length: number }).length, line.length);
});

t.test('v1: malformed headers are refused', async (t) => {
  const bad: Array<[string, RegExp]> = [
    ['PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n', /TCP4, TCP6 or UNKNOWN/],
    ['PROXY TCP4 999.2.3.4 1.2.3.4 1 2\r\n', /not an IPv4 address/],
    ['PROXY TCP4 ::1 1.2.3.4 1 2\r\n', /not an IPv4 address/],
    ['PROXY TCP6 1.2.3.4 ::1 1 2\r\n', /not an IPv6 address/],
    ['PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', /not an IPv6 address/],
    ['PROXY TCP4 1.2.3.4 1.2.3.4 0443 2\r\n', /not a port/],
    ['PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n', /not a port/],
    ['PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n', /not a port/],
    ['PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n', /must be "PROXY TCP4/],
    ['PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n', /CRLF/],
    ['PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n', /must be "PROXY TCP4/],
    [`PROXY TCP4 ${'1'.repeat(120)}`, /longer than 107/],
    ['PROXZ', /not a PROXY protocol v1 header/],
    ['GET / HTTP/1.1\r\n', /did not start with a PROXY protocol header/],
    ['\x16\x03\x01\x02\x00', /did not start with a PROXY protocol header/],
  ];
  for (const [input, message] of bad) {
    t.throws(() => readProxyHeader(Buffer.from(input, 'latin1')), { name: 'Error', message, code: 'PROXY_ERR_PROXY_PROTOCOL' }, JSON.stringify(input));
  }
  // A line that is already too long without its CRLF is refused before more arrives.
  t.throws(() => readProxyHeader(Buffer.from(`PROXY TCP4 ${'1'.repeat(100)}`)), { message: /longer than 107/ });
});

t.test('v2: PROXY over TCP4 with TLVs, TCP6, and LOCAL', async (t) => {
  const body = Buffer.concat([ipv4Block('203.0.113.7', '10.0.0.1', 40000, 443), tlv(0x02, Buffer.from('example.com')), tlv(0xea, Buffer.from([1, 2, 3]))]);
  const header = v2(1, 0x11, body);
  const r = readProxyHeader(Buffer.concat([header, Buffer.from([0x16, 0x03, 0x01])]));
  t.same(r, {
    done: true, length: header.length,
    header: {
      version: 2, command: 'proxy',
      source: { address: '203.0.113.7', port: 40000, family: 'IPv4' }, destination: { address: '10.0.0.1', port: 443, family: 'IPv4' },
    },
  });
  const six = Buffer.alloc(36);
  Buffer.from('20010db8000000000000000000000042', 'hex').copy(six, 0);
  six[31] = 1; // ::1
  six.writeUInt16BE(5555, 32);
  six.writeUInt16BE(8443, 34);
  const r6 = readProxyHeader(v2(1, 0x21, six));
  t.ok(r6.done);
  if (r6.done && r6.header.command === 'proxy') {
    t.same(r6.header.source, { address: '2001:db8::42', port: 5555, family: 'IPv6' });
    t.same(r6.header.destination, { address: '::1', port: 8443, family: 'IPv6' });
  }
  // LOCAL: the balancer's own connection (a health check); any address block is ignored.
  t.same(readProxyHeader(v2(0, 0x00, Buffer.alloc(0))), { done: true, length: 16, header: { version: 2, command: 'local' } });
  t.same(readProxyHeader(v2(0, 0x11, ipv4Block('1.1.1.1', '2.2.2.2', 1, 2))), { done: true, length: 28, header: { version: 2, command: 'local' } });
});

t.test('v2 arriving in pieces is "need more" until its length is in', async (t) => {
  const header = v2(1, 0x11, Buffer.concat([ipv4Block('198.51.100.9', '10.0.0.1', 1, 2), tlv(0x04, Buffer.alloc(300, 1))]));
  for (const n of [1, 5, 12, 15, 16, 27, 28, header.length - 1]) t.same(readProxyHeader(header.subarray(0, n)), { done: false }, `${n} bytes`);
  t.ok(readProxyHeader(header).done);
});

t.test('v2: malformed headers are refused', async (t) => {
  const good = ipv4Block('1.2.3.4', '5.6.7.8', 1, 2);
  const bad: Array<[Buffer, RegExp, string]> = [
    [Buffer.concat([SIG.subarray(0, 5), Buffer.from('X')]), /not a PROXY protocol v2 header/, 'signature broken mid-way'],
    [Buffer.concat([SIG, Buffer.from([0x11, 0x11, 0, 12]), good]), /version 1/, 'version nibble 1'],
    [Buffer.concat([SIG, Buffer.from([0x22, 0x11, 0, 12]), good]), /unknown command 2/, 'command 2'],
    [v2(1, 0x12, good), /unsupported address family\/transport 0x12/, 'UDP over IPv4'],
    [v2(1, 0x31, Buffer.alloc(216)), /unsupported address family\/transport 0x31/, 'UNIX stream'],
    [v2(1, 0x00, Buffer.alloc(0)), /unsupported address family\/transport 0x00/, 'PROXY with UNSPEC'],
    [v2(1, 0x11, good.subarray(0, 8)), /8 bytes of address, 12 needed/, 'short IPv4 block'],
    [v2(1, 0x21, good), /12 bytes of address, 36 needed/, 'IPv4 block for IPv6'],
    [v2(1, 0x11, Buffer.concat([good, Buffer.from([0x02, 0x00])])), /truncated TLV/, 'TLV header cut'],
    [v2(1, 0x11, Buffer.concat([good, Buffer.from([0x02, 0x00, 0x09, 0x41])])), /TLV runs past the header/, 'TLV longer than the rest'],
  ];
  for (const [input, message, what] of bad) t.throws(() => readProxyHeader(input), { message, code: 'PROXY_ERR_PROXY_PROTOCOL' }, what);
});

t.test('config: proxyProtocol.from takes addresses and CIDRs; anything else is named with its path', async (t) => {
  const yaml = (pp: string) => `
listeners: [{ port: 8443, certificates: [{ cert: a.pem, key: a.key }]${pp} }]
routes: [{ upstream: [ "http://127.0.0.1:8080" ] }]
`;
  const ok = parseConfig(yaml(', proxyProtocol: { from: [ 10.0.0.0/8, "2001:db8::/32", 127.0.0.9 ] }'), { checkFiles: false });
  t.same(ok.listeners[0]!.proxyProtocol, { from: ['10.0.0.0/8', '2001:db8::/32', '127.0.0.9'] });
  t.equal(parseConfig(yaml(''), { checkFiles: false }).listeners[0]!.proxyProtocol, undefined, 'absent: direct connections');
  const bad: Array<[string, RegExp]> = [
    [', proxyProtocol: { from: [] }', /listeners\[0\]\.proxyProtocol\.from: expected at least 1 item/],
    [', proxyProtocol: { from: [ balancer.local ] }', /listeners\[0\]\.proxyProtocol\.from\[0\]: expected an IP address or CIDR block/],
    [', proxyProtocol: { from: [ 10.0.0.0/33 ] }', /listeners\[0\]\.proxyProtocol\.from\[0\]: expected an IP address or CIDR block/],
    [', proxyProtocol: {}', /listeners\[0\]\.proxyProtocol\.from: required/],
    [', proxyProtocol: { from: [ 10.0.0.1 ], v2only: true }', /listeners\[0\]\.proxyProtocol\.v2only: unknown key/],
    [', proxyProtocol: true', /listeners\[0\]\.proxyProtocol: expected a mapping/],
  ];
  for (const [pp, message] of bad) t.throws(() => parseConfig(yaml(pp), { checkFiles: false }), { message }, pp);
});

// ---- the offloading listener behind a (simulated) balancer at 127.0.0.9 ----

const BALANCER = '127.0.0.9';

interface Outcome { status?: number; echo?: { headers: Record<string, string> }; error?: string }

/** One HTTPS GET whose TCP connection comes from `localAddress` and starts with `preface`. */
function getThrough(port: number, ca: Buffer, preface: Buffer | null, localAddress = BALANCER, headers: Record<string, string> = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const raw = net.connect({ host: '127.0.0.1', port, localAddress });
    if (preface) raw.write(preface);
    const extra = Object.entries(headers).map(([n, v]) => `${n}: ${v}\r\n`).join('');
    const s = tls.connect({ socket: raw, servername: 'localhost', ca }, () => {
      s.write(`GET / HTTP/1.1\r\nHost: localhost\r\n${extra}Connection: close\r\n\r\n`);
    });
    const timer = setTimeout(() => s.destroy(new Error('timed out')), 15_000);
    let out = '';
    let error: string | undefined;
    s.on('data', (c: Buffer) => { out += c.toString('utf8'); });
    s.on('error', (err: NodeJS.ErrnoException) => { error ??= err.code ?? err.message; });
    s.on('close', () => {
      clearTimeout(timer);
      const status = /^HTTP\/1\.1 (\d{3})/.exec(out)?.[1];
      if (!status) { resolve({ error: error ?? 'closed without a response' }); return; }
      const body = out.slice(out.indexOf('\r\n\r\n') + 4);
      resolve({ status: Number(status), echo: JSON.parse(body) as Outcome['echo'] });
    });
  });
}

const v2From = (src: string, sport: number) => v2(1, 0x11, ipv4Block(src, '127.0.0.1', sport, 443));

t.test('behind a listed balancer, the PROXY header\'s source is the client the upstream, logs and metrics see', async (t) => {
  const k = await offloadKey(t);
  const ca = readFileSync(k.cert);
  const h = await startOffloadFront(t, k, `proxyProtocol: { from: [ ${BALANCER}/32 ] }`);
  const viaV2 = await getThrough(h.port, ca, v2From('203.0.113.50', 51000));
  t.equal(viaV2.status, 200, viaV2.error ?? '200');
  t.equal(viaV2.echo?.headers['x-forwarded-for'], '203.0.113.50', 'v2 source in X-Forwarded-For');
  const viaV1 = await getThrough(h.port, ca, Buffer.from('PROXY TCP6 2001:db8::7 ::1 51001 443\r\n'));
  t.equal(viaV1.echo?.headers['x-forwarded-for'], '2001:db8::7', 'v1 source in X-Forwarded-For');
  // LOCAL (the balancer's own health check) and UNKNOWN: the TCP peer is the client.
  const local = await getThrough(h.port, ca, v2(0, 0x00, Buffer.alloc(0)));
  t.equal(local.echo?.headers['x-forwarded-for'], BALANCER);
  // An X-Forwarded-For the client sent is still a lie unless the client is a trusted proxy.
  const lying = await getThrough(h.port, ca, v2From('203.0.113.51', 51002), BALANCER, { 'x-forwarded-for': '10.9.9.9' });
  t.equal(lying.echo?.headers['x-forwarded-for'], '203.0.113.51');

  // Logs: a request the proxy refuses is logged with the client's address, not the balancer's.
  const bad = await new Promise<string>((resolve) => {
    const raw = net.connect({ host: '127.0.0.1', port: h.port, localAddress: BALANCER });
    raw.write(v2From('198.51.100.77', 52000));
    const s = tls.connect({ socket: raw, servername: 'localhost', ca }, () => s.write('GET / HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n'));
    let out = '';
    s.on('data', (c: Buffer) => { out += c.toString('latin1'); });
    s.on('close', () => resolve(out));
    s.on('error', () => resolve(out));
  });
  t.match(bad, /^HTTP\/1\.1 400/);
  t.ok(h.logs.some((l) => l.msg === 'client error' && l.remote === '198.51.100.77'), 'the 400 is logged with the client address');

  const metrics = await h.registry.getSingleMetricAsString('hsmproxy_client_gate_connections_total');
  t.match(metrics, /hsmproxy_client_gate_connections_total\{listener="main",result="proxy-v2"\} [3-9]/);
  t.match(metrics, /result="proxy-v1"\} 1\b/);
  t.match(metrics, /result="local"\} 1\b/);
});

t.test('refused: an unlisted source, a malformed header, no header, a header cut short; others carry on', async (t) => {
  const k = await offloadKey(t);
  const ca = readFileSync(k.cert);
  const h = await startOffloadFront(t, k, `proxyProtocol: { from: [ ${BALANCER} ] }`, {}, 'timeouts: { handshakeMs: 1000 }');
  // 127.0.0.1 is not in from: even a well-formed header from it would let a client pick its address.
  const unlisted = await getThrough(h.port, ca, v2From('203.0.113.60', 1), '127.0.0.1');
  t.ok(unlisted.error, `refused (${unlisted.error})`);
  const malformed = await getThrough(h.port, ca, Buffer.from('PROXY TCP4 203.0.113.61 127.0.0.1 99999 443\r\n'));
  t.ok(malformed.error, `malformed refused (${malformed.error})`);
  const none = await getThrough(h.port, ca, null);
  t.ok(none.error, `plain TLS without a header refused (${none.error})`);
  // A balancer that stops mid-header: closed when the handshake timeout runs out.
  const cut = await new Promise<number>((resolve) => {
    const started = Date.now();
    const raw = net.connect({ host: '127.0.0.1', port: h.port, localAddress: BALANCER });
    raw.write(v2From('203.0.113.62', 1).subarray(0, 20));
    raw.on('close', () => resolve(Date.now() - started));
    raw.on('error', () => undefined);
    raw.resume();
  });
  t.ok(cut >= 900, `closed after the header timeout (${cut} ms)`);
  const fine = await getThrough(h.port, ca, v2From('203.0.113.63', 1));
  t.equal(fine.echo?.headers['x-forwarded-for'], '203.0.113.63', 'the listener still serves');
  const metrics = await h.registry.getSingleMetricAsString('hsmproxy_client_gate_connections_total');
  t.match(metrics, /result="source_not_allowed"\} 1\b/);
  t.match(metrics, /result="malformed"\} 2\b/, 'the bad port and the bare ClientHello');
  t.match(metrics, /result="timeout"\} 1\b/);
});

t.test('without proxyProtocol a PROXY header is not honoured: the handshake fails and the TCP peer stays the client', async (t) => {
  const k = await offloadKey(t);
  const ca = readFileSync(k.cert);
  const h = await startOffloadFront(t, k);
  const spoof = await getThrough(h.port, ca, v2From('203.0.113.70', 1), '127.0.0.1');
  t.ok(spoof.error, `a header where TLS is expected fails the handshake (${spoof.error})`);
  const direct = await getThrough(h.port, ca, null, '127.0.0.33');
  t.equal(direct.echo?.headers['x-forwarded-for'], '127.0.0.33');
});

t.test('per-client limits count the client the PROXY header names, not the balancer', async (t) => {
  const k = await offloadKey(t);
  const ca = readFileSync(k.cert);
  const h = await startOffloadFront(t, k, `proxyProtocol: { from: [ ${BALANCER} ] }, limits: { perClient: { maxConnections: 1 } }`);
  /** An established TLS connection through the balancer for `client`, or the error that ended it. */
  const open = (client: string) => new Promise<tls.TLSSocket | string>((resolve) => {
    const raw = net.connect({ host: '127.0.0.1', port: h.port, localAddress: BALANCER });
    raw.write(v2From(client, 1000));
    const s = tls.connect({ socket: raw, servername: 'localhost', ca }, () => resolve(s));
    s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    s.on('close', () => resolve('closed'));
  });
  const first = await open('203.0.113.80');
  t.type(first, tls.TLSSocket, 'the first client connects');
  const other = await open('203.0.113.81');
  t.type(other, tls.TLSSocket, 'another client behind the same balancer connects too');
  const again = await open('203.0.113.80');
  t.type(again, 'string', `the first client's second connection is refused (${String(again)})`);
  for (const s of [first, other]) if (typeof s !== 'string') s.destroy();
  const refused = await h.registry.getSingleMetricAsString('hsmproxy_tls_connections_refused_total');
  t.match(refused, /reason="client_connections"\} 1\b/);
});
