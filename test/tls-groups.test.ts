// Key exchange groups (sans-IO): every group negotiates with a client offering only it, HelloRetryRequest
// to each, the hybrid ML-KEM groups preferred over a classical share, the `groups` order, and malformed
// shares of every group (each wrong size, off-curve points, out-of-range values) → illegal_parameter.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { AlertDescription, TlsAlertError, type AlertName } from '../src/tls/alert.js';
import { prepareCertEntry } from '../src/tls/certselect.js';
import { ServerConnection } from '../src/tls/connection.js';
import { ExtensionType } from '../src/tls/extensions.js';
import { FFDHE2048_P, FFDHE3072_P, FFDHE4096_P } from '../src/tls/ffdhe.js';
import type { ServerHandshakeConfig } from '../src/tls/hello12.js';
import { DEFAULT_GROUPS, GROUP_NAMES, parseGroups } from '../src/tls/kex.js';
import { ContentType, plaintextRecords } from '../src/tls/record.js';
import { SignatureScheme } from '../src/tls/signer.js';
import { NamedGroup, groupName } from '../src/tls/suites.js';
import { clientKey, ffdhePrime, type ClientKey } from './helpers/kex-client.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { SoftSigner } from './helpers/soft-signer.js';
import { encodeClientHello, exchange, ext, readServerFlight, type Ext } from './helpers/tls13-client.js';

const certs = makeTestCerts(['localhost']);
t.teardown(() => certs.cleanup());
const G = NamedGroup;
/** A group nobody implements here (brainpoolP256r1 of RFC 7027), for "a share we cannot use". */
const UNKNOWN = 0x001a;

function config(over: Partial<ServerHandshakeConfig> = {}): ServerHandshakeConfig {
  return {
    certificates: [prepareCertEntry({ chain: certs.ec.chain, signer: new SoftSigner(certs.ec.key) })],
    ticketCount: 0, ticketLifetimeS: 3600, verifyAfterSign: () => true, now: Date.now, ...over,
  };
}

function hello(groups: number[], shares: Array<{ group: number; key: Buffer }>, random = Buffer.alloc(32, 9)): Buffer {
  const extensions: Ext[] = [
    ext.versions(), ext.groups(groups), ext.sigAlgs([SignatureScheme.ecdsa_secp256r1_sha256]), ext.keyShares(shares),
  ];
  return encodeClientHello({ random, extensions });
}

/** ServerHello's key_share: the selected group (HRR) or the group and key (SH). */
function serverKeyShare(out: Buffer): { hrr: boolean; group: number; key?: Buffer; raw: Buffer } {
  const raw = out.subarray(5, 5 + out.readUInt16BE(3));
  const hrr = raw.subarray(6, 38).equals(Buffer.from('cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c', 'hex'));
  let at = 4 + 2 + 32;
  at += 1 + raw[at]!; // session id
  at += 3; // suite, compression
  const end = at + 2 + raw.readUInt16BE(at);
  at += 2;
  while (at < end) {
    const type = raw.readUInt16BE(at); const len = raw.readUInt16BE(at + 2);
    const body = raw.subarray(at + 4, at + 4 + len);
    if (type === ExtensionType.key_share) {
      return hrr ? { hrr, group: body.readUInt16BE(0), raw } : { hrr, group: body.readUInt16BE(0), key: body.subarray(4), raw };
    }
    at += 4 + len;
  }
  throw new Error('no key_share in ServerHello');
}

/** Completes a handshake whose ClientHello `ch` carried `key`; checks the server Finished and ours. */
async function finish(t: Test, conn: ServerConnection, ch: Buffer, key: ClientKey, out: Buffer, prefix: Buffer[] = []): Promise<void> {
  const c = readServerFlight(ch, key, out, undefined, prefix);
  await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
  t.ok(conn.established, `${groupName(key.group)}: both Finished messages verify (same shared secret)`);
  t.equal(conn.negotiated.group, key.group);
}

function expectAlert(t: Test, conn: ServerConnection, alert: AlertName, what: string): void {
  const err = conn.error;
  t.equal(err instanceof TlsAlertError ? err.alert : -1, AlertDescription[alert], `${what}: ${alert} (${err?.message})`);
}

const ALL = DEFAULT_GROUPS;

t.test('every group negotiates with a client that offers only it', async (t) => {
  for (const g of ALL) {
    const conn = new ServerConnection(config());
    const key = clientKey(g);
    const ch = hello([g], [{ group: g, key: key.publicBytes() }]);
    const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
    const ks = serverKeyShare(out);
    t.equal(ks.group, g, `${groupName(g)} selected`);
    const want = { [G.X25519MLKEM768]: 1120, [G.SecP256r1MLKEM768]: 1153 }[g];
    if (want) t.equal(ks.key!.length, want, `${groupName(g)}: server share is ${want} bytes`);
    await finish(t, conn, ch, key, out);
  }
});

t.test('HelloRetryRequest to each group when the client sent no share for it', async (t) => {
  for (const g of ALL) {
    const conn = new ServerConnection(config());
    const ch1 = hello([UNKNOWN, g], [{ group: UNKNOWN, key: Buffer.alloc(65, 4) }]);
    const out1 = await exchange(conn, plaintextRecords(ContentType.handshake, ch1));
    const hrr = serverKeyShare(out1);
    t.ok(hrr.hrr, `${groupName(g)}: HelloRetryRequest`);
    t.equal(hrr.group, g, `${groupName(g)}: HRR names it`);
    const key = clientKey(g);
    const ch2 = hello([UNKNOWN, g], [{ group: g, key: key.publicBytes() }]);
    const out2 = await exchange(conn, plaintextRecords(ContentType.handshake, ch2));
    const prefix = [Buffer.concat([Buffer.from([254, 0, 0, 32]), createHash('sha256').update(ch1).digest()]), hrr.raw];
    await finish(t, conn, ch2, key, out2, prefix);
  }
});

t.test('the hybrid is preferred when offered: used with its share, asked for with HRR without one', async (t) => {
  const x = clientKey(G.x25519);
  const pq = clientKey(G.X25519MLKEM768);
  // As Chrome sends it: both shares.
  let conn = new ServerConnection(config());
  let ch = hello([G.X25519MLKEM768, G.x25519], [{ group: G.X25519MLKEM768, key: pq.publicBytes() }, { group: G.x25519, key: x.publicBytes() }]);
  let out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
  t.equal(serverKeyShare(out).group, G.X25519MLKEM768, 'both shares → X25519MLKEM768');
  await finish(t, conn, ch, pq, out);
  // Listed, but only an x25519 share: a HelloRetryRequest for the hybrid.
  conn = new ServerConnection(config());
  ch = hello([G.x25519, G.X25519MLKEM768], [{ group: G.x25519, key: x.publicBytes() }]);
  out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
  t.same(serverKeyShare(out), { ...serverKeyShare(out), hrr: true, group: G.X25519MLKEM768 }, 'HRR to X25519MLKEM768');
  // Another hybrid's share is used rather than a retry for our first hybrid.
  conn = new ServerConnection(config());
  const p = clientKey(G.SecP256r1MLKEM768);
  ch = hello([G.X25519MLKEM768, G.SecP256r1MLKEM768, G.x25519], [{ group: G.SecP256r1MLKEM768, key: p.publicBytes() }, { group: G.x25519, key: x.publicBytes() }]);
  out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
  t.equal(serverKeyShare(out).hrr, false);
  await finish(t, conn, ch, p, out);
});

t.test('groups: order and restriction', async (t) => {
  const x = clientKey(G.x25519);
  const pq = clientKey(G.X25519MLKEM768);
  const both = [{ group: G.X25519MLKEM768, key: pq.publicBytes() }, { group: G.x25519, key: x.publicBytes() }];
  let conn = new ServerConnection(config({ groups: parseGroups(['x25519', 'X25519MLKEM768']) }));
  let ch = hello([G.X25519MLKEM768, G.x25519], both);
  let out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
  t.equal(serverKeyShare(out).group, G.x25519, 'x25519 listed first wins');
  await finish(t, conn, ch, x, out);
  conn = new ServerConnection(config({ groups: parseGroups(['secp384r1']) }));
  await exchange(conn, plaintextRecords(ContentType.handshake, hello([G.X25519MLKEM768, G.x25519], both)));
  expectAlert(t, conn, 'handshake_failure', 'no group in common with groups: [secp384r1]');
  conn = new ServerConnection(config({ groups: parseGroups(['secp384r1', 'x25519']) }));
  ch = hello([G.secp384r1, G.x25519], [{ group: G.x25519, key: x.publicBytes() }]);
  out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
  t.equal(serverKeyShare(out).group, G.x25519, 'a classical share is used rather than HRR to a classical first choice');
  t.throws(() => parseGroups(['x25519', 'P-256']), /unknown group 'P-256'/);
  t.throws(() => parseGroups(['x25519', 'x25519']), /listed twice/);
  t.throws(() => parseGroups([]), /at least one/);
  t.throws(() => parseGroups(['toString']), /unknown group/);
  t.same([...GROUP_NAMES].sort(), Object.keys(NamedGroup).sort(), 'every implemented group can be named');
});

const SHARE_LEN = new Map<number, number>([
  [G.x25519, 32], [G.x448, 56], [G.secp256r1, 65], [G.secp384r1, 97], [G.secp521r1, 133],
  [G.ffdhe2048, 256], [G.ffdhe3072, 384], [G.ffdhe4096, 512], [G.X25519MLKEM768, 1216], [G.SecP256r1MLKEM768, 1249],
]);

t.test('a share of the wrong size, for each group, is illegal_parameter (chosen or not)', async (t) => {
  for (const g of ALL) {
    const good = clientKey(g).publicBytes();
    t.equal(good.length, SHARE_LEN.get(g), `${groupName(g)} share is ${SHARE_LEN.get(g)} bytes`);
    for (const bad of [good.subarray(0, good.length - 1), Buffer.concat([good, Buffer.from([0])])]) {
      const conn = new ServerConnection(config());
      await exchange(conn, plaintextRecords(ContentType.handshake, hello([g], [{ group: g, key: bad }])));
      expectAlert(t, conn, 'illegal_parameter', `${groupName(g)} share of ${bad.length} bytes`);
    }
    // Next to a good x25519 share the server would pick, a malformed share of another group still fails.
    if (g !== G.x25519) {
      const conn = new ServerConnection(config({ groups: [G.x25519, g] }));
      const x = clientKey(G.x25519).publicBytes();
      await exchange(conn, plaintextRecords(ContentType.handshake, hello([G.x25519, g], [{ group: G.x25519, key: x }, { group: g, key: good.subarray(1) }])));
      expectAlert(t, conn, 'illegal_parameter', `${groupName(g)} malformed beside a usable x25519 share`);
    }
  }
});

t.test('shares of the right size but invalid content are illegal_parameter', async (t) => {
  const p256 = clientKey(G.secp256r1).publicBytes();
  const offCurve = Buffer.from(p256); offCurve[64] ^= 1;
  const compressed = Buffer.concat([Buffer.from([0x02]), p256.subarray(1, 33), Buffer.alloc(32)]);
  const ek = clientKey(G.X25519MLKEM768).publicBytes().subarray(0, 1184);
  // FIPS 203 §7.2: a coefficient of 0xfff (≥ q = 3329) fails the modulus check.
  const badEk = Buffer.from(ek); badEk[0] = 0xff; badEk[1] |= 0x0f;
  const x = clientKey(G.x25519).publicBytes();
  const pMinus1 = (p: Buffer): Buffer => { const b = Buffer.from(p); b[b.length - 1]! -= 1; return b; };
  const one = (len: number): Buffer => { const b = Buffer.alloc(len); b[len - 1] = 1; return b; };
  const cases: Array<[string, number, Buffer]> = [
    ['P-256 point off the curve', G.secp256r1, offCurve],
    ['P-256 point in compressed form (padded)', G.secp256r1, compressed],
    ['x25519 all-zero point (low order)', G.x25519, Buffer.alloc(32)],
    ['x448 all-zero point (low order)', G.x448, Buffer.alloc(56)],
    ['ffdhe2048 Y = 1', G.ffdhe2048, one(256)],
    ['ffdhe2048 Y = p - 1', G.ffdhe2048, pMinus1(FFDHE2048_P)],
    ['ffdhe3072 Y = 0', G.ffdhe3072, Buffer.alloc(384)],
    ['ffdhe4096 Y = p', G.ffdhe4096, FFDHE4096_P],
    ['X25519MLKEM768 encapsulation key failing the modulus check', G.X25519MLKEM768, Buffer.concat([badEk, x])],
    ['X25519MLKEM768 with an all-zero X25519 part', G.X25519MLKEM768, Buffer.concat([ek, Buffer.alloc(32)])],
    ['SecP256r1MLKEM768 with an off-curve point', G.SecP256r1MLKEM768, Buffer.concat([offCurve, ek])],
    ['SecP256r1MLKEM768 encapsulation key failing the modulus check', G.SecP256r1MLKEM768, Buffer.concat([p256, badEk])],
  ];
  for (const [what, g, key] of cases) {
    const conn = new ServerConnection(config());
    await exchange(conn, plaintextRecords(ContentType.handshake, hello([g], [{ group: g, key }])));
    expectAlert(t, conn, 'illegal_parameter', what);
  }
});

t.test('the RFC 7919 primes are OpenSSL\'s', async (t) => {
  t.same(FFDHE2048_P, ffdhePrime(G.ffdhe2048));
  t.same(FFDHE3072_P, ffdhePrime(G.ffdhe3072));
  t.same(FFDHE4096_P, ffdhePrime(G.ffdhe4096));
});
