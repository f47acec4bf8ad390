// nginx as the baseline: a TLS 1.3 server (`return 200`) or a reverse proxy with keep-alive to an
// upstream, with the same certificate and key file as hsmproxy, one worker process (hsmproxy
// serves from one event loop). Skips cleanly when nginx is not installed.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from 'node:net';
import { freePort, treeCpuMs } from './procs.js';

/** A running nginx. */
export interface RunningNginx {
  port: number;
  /** The master's process id (its worker is its child). */
  pid: number;
  /** CPU ms used so far by the master and its worker. */
  cpuMs(): number;
  close(): Promise<void>;
}

const CANDIDATES = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx'];

/** The nginx binary and its version, or why there is none. */
export function findNginx(): { bin: string; version: string } | { missing: string } {
  for (const bin of CANDIDATES) {
    const r = spawnSync(bin, ['-v'], { encoding: 'utf8' });
    if (r.status === 0) return { bin, version: (r.stderr || r.stdout).trim().replace(/^nginx version: /, '') };
  }
  return { missing: 'nginx is not installed (apt-get install nginx-light): the nginx baselines are skipped' };
}

async function waitListening(port: number, child: ChildProcess, logFile: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${readFileSync(logFile, 'utf8').slice(-500)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error('nginx did not start listening within 5 s');
}

/** Starts nginx with `certFile`/`keyFile`; with `upstream` it proxies there (HTTP/1.1 keep-alive), else answers 200 itself. */
export async function startNginx(bin: string, opts: { certFile: string; keyFile: string; upstream?: string; workers?: number; http2?: boolean }): Promise<RunningNginx> {
  const prefix = mkdtempSync(join(tmpdir(), 'hsmproxy-bench-nginx-'));
  mkdirSync(join(prefix, 'logs'));
  const port = await freePort();
  // Upstream connections are kept alive (nginx's default would open one per request).
  const upstreamBlock = opts.upstream ? `upstream bench_upstream { server ${new URL(opts.upstream).host}; keepalive 64; }` : '';
  const location = opts.upstream
    ? 'location / { proxy_pass http://bench_upstream; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; }'
    : 'location / { return 200 "ok"; }';
  const conf = `
worker_processes ${opts.workers ?? 1};
daemon off;
master_process on;
pid ${join(prefix, 'nginx.pid')};
error_log ${join(prefix, 'logs', 'error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${join(prefix, 'body')};
  proxy_temp_path ${join(prefix, 'proxy')};
  fastcgi_temp_path ${join(prefix, 'fastcgi')};
  uwsgi_temp_path ${join(prefix, 'uwsgi')};
  scgi_temp_path ${join(prefix, 'scgi')};
  keepalive_requests 1000000;
  ${opts.http2 ? 'http2_max_requests 1000000;' : ''}
  ${upstreamBlock}
  server {
    listen 127.0.0.1:${port} ssl${opts.http2 ? ' http2' : ''};
    ssl_certificate ${opts.certFile};
    ssl_certificate_key ${opts.keyFile};
    ssl_protocols TLSv1.3;
    ssl_session_tickets on;
    ${location}
  }
}
`;
  const confFile = join(prefix, 'nginx.conf');
  writeFileSync(confFile, conf);
  const child = spawn(bin, ['-p', prefix, '-c', confFile], { stdio: 'ignore' });
  try {
    await waitListening(port, child, join(prefix, 'logs', 'error.log'));
  } catch (err) {
    child.kill('SIGKILL');
    rmSync(prefix, { recursive: true, force: true });
    throw err;
  }
  return {
    port,
    pid: child.pid!,
    cpuMs: () => treeCpuMs(child.pid!),
    close: async () => {
      if (child.exitCode === null) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGQUIT'); // graceful: the master stops its worker
        await Promise.race([gone, sleep(3000)]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      rmSync(prefix, { recursive: true, force: true });
    },
  };
}
