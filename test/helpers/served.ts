// The certificate a TLS listener serves for a name: what the ACME tests poll for. One handshake
// from 127.0.0.1 (or `host`), verified against `ca`, then closed.
import type { X509Certificate } from 'node:crypto';
import tls from 'node:tls';

export interface ServedOptions {
  /** The listener's address (default 127.0.0.1). */
  host?: string;
  /** Accept a certificate for another name (still verified against `ca`). */
  anyName?: boolean;
}

/** The served certificate; rejects on a handshake error, a 10 s timeout or no certificate. */
export function servedCertificate(port: number, servername: string, ca: string | Buffer, opts: ServedOptions = {}): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: opts.host ?? '127.0.0.1', port, servername, ca, ...(opts.anyName ? { checkServerIdentity: () => undefined } : {}),
    }, () => {
      const cert = s.getPeerX509Certificate();
      s.destroy();
      if (cert) resolve(cert); else reject(new Error('no peer certificate'));
    });
    s.on('error', reject);
    s.setTimeout(10_000, () => s.destroy(new Error('timed out')));
  });
}

/** The served certificate, or undefined where servedCertificate would reject. */
export function servedOrNone(port: number, servername: string, ca: string | Buffer, opts: ServedOptions = {}): Promise<X509Certificate | undefined> {
  return servedCertificate(port, servername, ca, opts).catch(() => undefined);
}

/** A keep-alive HTTPS connection: each get() sends one request and resolves with its status. */
export async function keepAlive(port: number, servername: string, ca: string | Buffer): Promise<{ get(): Promise<number>; close(): void }> {
  const s = await new Promise<tls.TLSSocket>((resolve, reject) => {
    const c = tls.connect({ host: '127.0.0.1', port, servername, ca }, () => resolve(c));
    c.once('error', reject);
  });
  s.setEncoding('utf8');
  return {
    get: () => new Promise<number>((resolve, reject) => {
      let buf = '';
      const onData = (d: string): void => {
        buf += d;
        const m = /^HTTP\/1\.1 (\d{3})[\s\S]*?\r\n\r\n([\s\S]*)$/.exec(buf);
        const len = /content-length: (\d+)/i.exec(buf);
        if (m && len && m[2]!.length >= Number(len[1])) {
          s.off('data', onData);
          resolve(Number(m[1]));
        }
      };
      s.on('data', onData);
      s.once('error', reject);
      s.write(`GET / HTTP/1.1\r\nHost: ${servername}\r\n\r\n`);
    }),
    close: () => s.destroy(),
  };
}
