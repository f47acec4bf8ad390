// One hsmproxy TlsServer for bench/tls-ab.ts, in its own process so builds do not share a heap
// or JIT: it loads bench/lib/servers.ts from the build root it is given (a worktree of another
// commit works as well), puts the key into an embedded cluster (or signs with it in-process:
// hsms 0) and reports its port, then its own user/system CPU and its HSMs' CPU when asked.
// Usage (with an IPC channel): tls-ab-server.ts ROOT CERTFILE KEYFILE HSMS
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [root, certFile, keyFile, hsmsArg] = process.argv.slice(2) as [string, string, string, string];
const hsms = Number(hsmsArg);
const servers = await import(pathToFileURL(join(root, 'bench', 'lib', 'servers.ts')).href) as typeof import('./servers.js');
const chain = readFileSync(certFile, 'utf8').split(/(?=-----BEGIN CERTIFICATE-----)/).filter((p) => p.includes('BEGIN CERTIFICATE'))
  .map((p) => Buffer.from(p.replace(/-----[^-]+-----|\s+/g, ''), 'base64'));
const keyed = hsms > 0
  ? await servers.clusterSigner(keyFile, hsms, 'unlimited')
  : { ...await servers.softEngineSigner(keyFile), hsmCpuMs: () => 0 };
const server = await servers.startHsmproxyTls(chain, keyed.signer);
process.on('message', (m: string) => {
  if (m === 'cpu') {
    const c = process.cpuUsage();
    process.send!({ userMs: c.user / 1000, sysMs: c.system / 1000, hsmMs: keyed.hsmCpuMs(), writes: server.writes?.() ?? 0 });
  } else if (m === 'close') {
    void server.close().then(() => keyed.close()).then(() => process.exit(0));
  }
});
process.send!({ port: server.port });
