// `hsm serve` flags set the appliance's peer limits: a peer that never finishes mTLS is closed
// after --handshake-timeout-ms, and --max-pending-per-source refuses one address's excess at once.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliEntry, runCli } from './helpers/cli.js';
import { cliInProcess, freePort, killChild } from './helpers/hsm-cluster.js';

const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-serve-limits-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const port = await freePort();
const env = { HSMPROXY_DIR: dir };
const init = await cliInProcess(['cluster', 'init', '--base-port', String(port), '--json'], env);
if (init.error) throw init.error;

/** Opens a TCP connection that sends nothing; resolves with how long until the node closed it (or `limitMs`). */
function idle(limitMs: number): Promise<{ closedAfterMs: number | undefined }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const s = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' });
    const guard = setTimeout(() => { s.destroy(); resolve({ closedAfterMs: undefined }); }, limitMs);
    s.on('error', () => undefined);
    s.on('close', () => { clearTimeout(guard); resolve({ closedAfterMs: Date.now() - started }); });
  });
}

t.test('the flags reach the appliance', async (t) => {
  const serve = spawn(process.execPath, ['--import=tsx', cliEntry, 'hsm', 'serve', '--dir', dir, '--handshake-timeout-ms', '700', '--max-pending-per-source', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => killChild(serve));
  await new Promise<void>((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => reject(new Error(`hsm serve did not start: ${log}`)), 30_000);
    serve.stdout.setEncoding('utf8').on('data', (d: string) => { log += d; if (log.includes('HSM listening')) { clearTimeout(timer); resolve(); } });
    serve.stderr.setEncoding('utf8').on('data', (d: string) => { log += d; });
  });
  const [a, b, c] = await Promise.all([idle(15_000), idle(15_000), new Promise<{ closedAfterMs: number | undefined }>((r) => setTimeout(() => r(idle(15_000)), 200))]);
  t.ok(c.closedAfterMs !== undefined && c.closedAfterMs < 600, `a third pending connection from the same address is refused at once (${c.closedAfterMs} ms)`);
  for (const x of [a, b]) t.ok(x.closedAfterMs !== undefined && x.closedAfterMs >= 600, `an idle peer is closed at the handshake timeout, not before (${x.closedAfterMs} ms)`);
});

t.test('a flag that is not a positive whole number is a usage error', async (t) => {
  const r = await runCli(['hsm', 'serve', '--dir', dir, '--max-pending', '0']);
  t.equal(r.code, 2);
  t.match(r.stderr, /expected a positive whole number, got "0"/);
});
