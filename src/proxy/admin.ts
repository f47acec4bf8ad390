// The admin HTTP server: /metrics (Prometheus text), /healthz (the process is up), /readyz
// (certificates loaded and an HSM holding their keys is up — decided by the caller's callback)
// and /scaling (the scaling advisor's recommendation as JSON, when the caller runs one).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { MetricsSource } from '../metrics/index.js';
import { AdminListenError } from './errors.js';

/** Whether the proxy should receive traffic, and if not, why. */
export interface ReadinessReport { ready: boolean; reasons: string[] }

/** Answers /readyz; may be async (it can ask the HSM client). */
export type ReadinessCheck = () => ReadinessReport | Promise<ReadinessReport>;

/** Answers /scaling: the advisor's JSON document (metrics/ ScalingReport). */
export type ScalingSource = () => unknown;

/** Serves the admin endpoints on a plain-HTTP port (bind it to loopback or a private network). */
export class AdminServer {
  private readonly server: http.Server;

  constructor(
    private readonly source: MetricsSource, private readonly readiness: ReadinessCheck,
    private readonly scaling?: ScalingSource,
  ) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5_000;
  }

  /** Starts listening; AdminListenError names admin.port when the port is taken. */
  listen(port: number, address: string): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const fail = (err: NodeJS.ErrnoException) => reject(new AdminListenError(address, port, err));
      this.server.once('error', fail);
      this.server.listen(port, address, () => {
        this.server.off('error', fail);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** The bound address. */
  address(): AddressInfo | undefined {
    return (this.server.address() as AddressInfo | null) ?? undefined;
  }

  /** Stops the server and drops its keep-alive connections. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'use GET\n');
    try {
      if (path === '/metrics') return send(200, this.source.contentType, await this.source.metrics());
      if (path === '/healthz') return send(200, 'text/plain', 'ok\n');
      if (path === '/readyz') {
        const r = await this.readiness();
        return send(r.ready ? 200 : 503, 'application/json', JSON.stringify(r) + '\n');
      }
      if (path === '/scaling') {
        if (!this.scaling) return send(404, 'text/plain', 'no scaling advice here: it needs the simulated HSM cluster (hsm.mode embedded or cluster)\n');
        return send(200, 'application/json', JSON.stringify(await this.scaling(), null, 2) + '\n');
      }
      send(404, 'text/plain', 'not found; try /metrics, /healthz or /readyz (or /scaling for the scaling advice)\n');
    } catch (err) {
      send(500, 'text/plain', `admin error: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  }
}
