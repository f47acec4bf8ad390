// Session tickets shared across proxies: each epoch's key is derived from one secret (a
// non-extractable key in the HSM cluster, or a file), so a ticket one proxy issued opens on another
// during its two epochs and on none after; proxies with their own (local) keys do not share.
// End to end: two `hsmproxy serve` processes (one with 2 workers) on the same running cluster.
import t, { type Test } from 'tap';
import { writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { EpochKeyFeeder, fileEpochSource, epochMessage, type EpochSecretSource } from '../src/app/ticket-keys.js';
import { parseConfig } from '../src/config/index.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { startDemoUpstream } from '../src/proxy/index.js';
import { TicketKeys, ticketKeyFromEpochSecret } from '../src/tls/index.js';
import { connectTls, devCa, getOn, prepareServeDir, serveYaml, startServe, type ServeProcess } from './helpers/serve-fixture.js';

const quiet = pino({ level: 'silent' });
// The end-to-end test's epoch: short, so it sees two rotations; long enough for a loaded machine.
const EPOCH = 3000;
const R = 1000;

/** TicketKeys on a clock the test moves, fed from `source`. */
async function fed(t: Test, source: EpochSecretSource, clock: { now: number }): Promise<TicketKeys> {
  const keys = new TicketKeys({ rotateEveryMs: R, now: () => clock.now });
  const feeder = new EpochKeyFeeder({ keys, source, rotateEveryMs: R, log: quiet });
  t.teardown(() => feeder.stop());
  t.equal(await feeder.start(), true);
  return keys;
}

t.test('the same epoch secret gives the same key name and key; another epoch or secret does not', async (t) => {
  const s = Buffer.alloc(32, 7);
  t.same(ticketKeyFromEpochSecret(5, s), ticketKeyFromEpochSecret(5, Buffer.alloc(32, 7)));
  t.not(ticketKeyFromEpochSecret(5, s).key, ticketKeyFromEpochSecret(5, Buffer.alloc(32, 8)).key);
  t.not(ticketKeyFromEpochSecret(5, s).name, ticketKeyFromEpochSecret(5, s).key.slice(0, 32), 'the name is not the key');
  t.throws(() => ticketKeyFromEpochSecret(5, Buffer.alloc(16)), { code: 'TLS_ERR_TICKET_CONFIG' });
  t.not(epochMessage(R, 1).toString(), epochMessage(2 * R, 1).toString(), 'the epoch length is part of what is MACed');
});

t.test('from one file secret: proxy A\'s ticket opens on B for two epochs, then nowhere; local keys do not share', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'ticket.key');
  writeFileSync(file, Buffer.alloc(80, 0x5a), { mode: 0o600 });
  const clock = { now: 1_000_000 * R + 100 };
  const a = await fed(t, await fileEpochSource(file, R), clock);
  const b = await fed(t, await fileEpochSource(file, R), clock);
  const ticket = a.seal(Buffer.from('session state'));
  t.same(b.open(ticket), Buffer.from('session state'), 'B opens A\'s ticket');
  clock.now += R;
  t.same(b.open(ticket), Buffer.from('session state'), 'one rotation later (the previous epoch is accepted)');
  clock.now += R;
  t.equal(b.open(ticket), null, 'two rotations later it no longer opens on B');
  t.equal(a.open(ticket), null, 'nor on A');

  const otherFile = join(dir, 'other.key');
  writeFileSync(otherFile, Buffer.alloc(48, 0x11), { mode: 0o600 });
  const c = await fed(t, await fileEpochSource(otherFile, R), clock);
  t.equal(c.open(a.seal(Buffer.from('x'))), null, 'another secret opens nothing');
  const local = new TicketKeys({ rotateEveryMs: R, now: () => clock.now });
  t.equal(local.open(a.seal(Buffer.from('x'))), null, 'nor do local keys');
  t.equal(a.open(local.seal(Buffer.from('x'))), null);
});

t.test('a source that fails is retried; meanwhile the proxy seals with its own key', async (t) => {
  const clock = { now: 2_000_000 * R };
  let fail = true;
  const source: EpochSecretSource = {
    describe: 'flaky', derive: async (e) => {
      if (fail) throw new Error('HSM unavailable');
      return Buffer.alloc(32, e & 0xff);
    },
  };
  const keys = new TicketKeys({ rotateEveryMs: R, now: () => clock.now });
  const feeder = new EpochKeyFeeder({ keys, source, rotateEveryMs: R, log: quiet, retryMs: 20 });
  t.teardown(() => feeder.stop());
  t.equal(await feeder.start(), false);
  const before = keys.seal(Buffer.from('own'));
  t.same(keys.open(before), Buffer.from('own'), 'tickets still work on this proxy');
  const other = new TicketKeys({ rotateEveryMs: R, now: () => clock.now });
  other.install([ticketKeyFromEpochSecret(2_000_000, Buffer.alloc(32, 2_000_000 & 0xff))]);
  t.equal(other.open(keys.seal(Buffer.from('x'))), null, 'but not elsewhere yet');
  fail = false;
  const until = Date.now() + 10_000;
  while (other.open(keys.seal(Buffer.from('x'))) === null && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  t.same(other.open(keys.seal(Buffer.from('x'))), Buffer.from('x'), 'after the retry, the derived key seals');
});

t.test('file sources: too short or missing is a clear error', async (t) => {
  const dir = t.testdir();
  writeFileSync(join(dir, 'short.key'), Buffer.alloc(16));
  await t.rejects(fileEpochSource(join(dir, 'short.key'), R), { message: /holds 16 bytes; it needs at least 32 random bytes/ });
  await t.rejects(fileEpochSource(join(dir, 'none.key'), R), { message: /tickets\.file: cannot read/ });
});

t.test('config: tickets', async (t) => {
  const dir = t.testdir();
  const keyFile = join(dir, 'ticket.key');
  writeFileSync(keyFile, Buffer.alloc(48));
  chmodSync(keyFile, 0o600);
  const yaml = (tickets: string, hsm = '') => `
listeners: [{ port: 8443, certificates: [{ cert: a.pem, key: a.key }] }]
routes: [{ upstream: [ "http://127.0.0.1:8080" ] }]
${hsm}
${tickets}
`;
  const d = parseConfig(yaml(''), { checkFiles: false }).tickets;
  t.same(d, { keys: 'local', rotateEveryMs: 3_600_000, hsmKeyLabel: 'hsmproxy-session-tickets' });
  t.same(parseConfig(yaml('tickets: { keys: hsm, rotateEveryMs: 5000 }'), { checkFiles: false }).tickets, { keys: 'hsm', rotateEveryMs: 5000, hsmKeyLabel: 'hsmproxy-session-tickets' });
  t.equal(parseConfig(yaml(`tickets: { keys: file, file: ${keyFile} }`, 'hsm: { mode: pkcs11, module: /usr/lib/x.so }'), { checkFiles: false }).tickets.file, keyFile);
  const bad: Array<[string, string, RegExp]> = [
    ['tickets: { keys: hsm }', 'hsm: { mode: pkcs11, module: /usr/lib/x.so }', /tickets\.keys: keys: hsm needs the simulated cluster .* use keys: file/],
    ['tickets: { keys: file }', '', /tickets\.file: required/],
    [`tickets: { keys: local, file: ${keyFile} }`, '', /tickets\.file: is read only with keys: file/],
    ['tickets: { keys: shared }', '', /tickets\.keys: expected one of 'local', 'hsm', 'file'/],
    ['tickets: { rotateEveryMs: 10 }', '', /tickets\.rotateEveryMs: expected milliseconds from 1000 to 86400000/],
  ];
  for (const [tk, hsm, message] of bad) t.throws(() => parseConfig(yaml(tk, hsm), { checkFiles: false }), { message }, tk);
});

// ---- two proxies on one running cluster ----

const d = await prepareServeDir();
t.teardown(() => d.cleanup());

/** Full handshake on `port`, a request (the tickets travel with its response), and the session it left. */
async function ticketFrom(t: Test, port: number, ca: Buffer): Promise<Buffer> {
  const s = await connectTls(port, ca);
  const session = new Promise<Buffer>((resolve) => s.once('session', resolve));
  t.equal(s.isSessionReused(), false);
  t.equal(await getOn(s), 200);
  return session;
}

async function resumes(port: number, ca: Buffer, session: Buffer): Promise<boolean> {
  const s = await connectTls(port, ca, { session });
  const reused = s.isSessionReused();
  await getOn(s);
  return reused;
}

t.test('tickets.keys hsm: a ticket from proxy A resumes on proxy B (2 workers); two rotations later it does not', async (t) => {
  const cluster = await startEmbeddedCluster({ dir: d.data, scryptCost: 1024 });
  t.teardown(() => cluster.stop());
  const upstream = await startDemoUpstream();
  t.teardown(() => upstream.close());
  const ca = await devCa(d);
  const cu = cluster.credentials.cu;
  const env = { HSMPROXY_PIN: `${cu.user}:${cu.password}` };
  const yaml = (extra: string) => serveYaml(d, upstream.url, extra).replace(/hsm: \{[^}]*\}/, `hsm: { mode: cluster, manifest: ${join(d.data, 'cluster.json')} }`);
  const stop = async (s: ServeProcess) => { if (s.child.exitCode === null) s.child.kill('SIGTERM'); await s.exited; };

  // Keys derived in the HSM (local keys do not share: tested above, measured in bench/tickets-resumption.ts).
  const tickets = `tickets: { keys: hsm, rotateEveryMs: ${EPOCH} }`;
  const a = await startServe(d, yaml(tickets), env);
  t.teardown(() => stop(a));
  const b = await startServe(d, yaml(`${tickets}\nworkers: 2`), env);
  t.teardown(() => stop(b));
  const secrets = (await cluster.client.findKeys({ label: 'hsmproxy-session-tickets' }));
  t.equal(secrets.length, 1, 'one secret key for the cluster, made by the first proxy');
  t.match(secrets[0], { class: 'secret', type: 'generic-secret', token: true, extractable: false, sensitive: true });
  const issuedAt = Date.now();
  const ticket = await ticketFrom(t, a.port, ca);
  const first = await resumes(b.port, ca, ticket);
  if (!first) {
    const pattern: boolean[] = [];
    for (let i = 0; i < 4; i++) pattern.push(await resumes(b.port, ca, ticket));
    t.comment(JSON.stringify({ pattern, age: Date.now() - issuedAt, epochAtIssue: Math.floor(issuedAt / EPOCH), b: b.logs().filter((l) => Number(l.level) >= 40 || /ticket/.test(String(l.msg))) }));
  }
  t.equal(first, true, 'A\'s ticket resumes on B');
  t.equal(await resumes(b.port, ca, ticket), true, 'on B again (another worker, perhaps)');
  const fromB = await ticketFrom(t, b.port, ca);
  t.equal(await resumes(a.port, ca, fromB), true, 'and B\'s on A');
  // Two rotations: epoch of issue + 2 epochs of 2 s have begun.
  const expired = (Math.floor(issuedAt / EPOCH) + 2) * EPOCH + 200;
  await new Promise((r) => setTimeout(r, Math.max(0, expired - Date.now())));
  t.equal(await resumes(b.port, ca, ticket), false, 'two rotations later A\'s ticket no longer resumes on B');
  const fresh = await ticketFrom(t, a.port, ca);
  t.equal(await resumes(b.port, ca, fresh), true, 'a ticket of the new epoch does');
  t.match(a.stderr() + JSON.stringify(a.logs()), /session-ticket keys derived per epoch/);
});
