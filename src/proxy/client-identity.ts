// The verified client certificate (mTLS) as request headers for the upstream. Headers a client
// sent under those names are always removed first, on every listener, so an upstream that trusts
// them cannot be fooled by a client without a certificate (header spoofing).
import { createHash, type X509Certificate } from 'node:crypto';
import { DEFAULTS, type ClientAuthConfig, type ClientCertHeaders } from '../config/index.js';
import type { TlsSocketLike } from './listener.js';

/** What the proxy knows about the client certificate of one connection. */
export interface ClientIdentity {
  /** SUCCESS: verified certificate; NONE: none; FAILED: presented but not verified (node:tls optional mode). */
  verify: 'SUCCESS' | 'NONE' | 'FAILED';
  subject?: string;
  sans?: string[];
  fingerprint256?: string;
}

/** node's TLSSocket also exposes the peer certificate itself. */
interface NodePeerSource { getPeerX509Certificate?(): X509Certificate | undefined }

/** Reads the client identity of a connection: tls/ TlsSocket.peerIdentity, or node:tls's peer certificate. */
export function clientIdentity(socket: TlsSocketLike): ClientIdentity {
  const s = socket as TlsSocketLike & NodePeerSource;
  if (s.peerIdentity) return { verify: 'SUCCESS', subject: s.peerIdentity.subject, sans: s.peerIdentity.sans, fingerprint256: s.peerIdentity.fingerprint256 };
  const cert = typeof s.getPeerX509Certificate === 'function' ? s.getPeerX509Certificate() : undefined;
  if (!cert) return { verify: 'NONE' };
  if (!s.authorized) return { verify: 'FAILED' };
  return {
    verify: 'SUCCESS', subject: cert.subject.split('\n').join(', '),
    sans: (cert.subjectAltName ?? '').split(', ').filter(Boolean).map((x) => x.replace(/^IP Address:/, 'IP:')),
    fingerprint256: createHash('sha256').update(cert.raw).digest('hex'),
  };
}

/** Header-safe text: printable ASCII kept, everything else (and '%') percent-encoded as UTF-8. */
export function headerValue(s: string): string {
  return s.replace(/[^\x20-\x7e]|%/gu, (c) => { try { return encodeURIComponent(c); } catch { return '%EF%BF%BD'; } });
}

/** Per-connection header names (set when the connection is accepted) and the strip-then-set step. */
export class ClientIdentityHeaders {
  private readonly bySocket = new WeakMap<object, ClientCertHeaders>();

  /** Remembers the header names of the listener that accepted `socket`. */
  bind(socket: TlsSocketLike, clientAuth: ClientAuthConfig | undefined): void {
    this.bySocket.set(socket, clientAuth?.headers ?? DEFAULTS.clientCertHeaders);
  }

  /**
   * Appends the identity headers of `socket`'s verified certificate to `out`. The caller has
   * already dropped every client-sent header named in `identityHeaderNames` (all listeners' names).
   */
  apply(out: Array<[string, string]>, socket: TlsSocketLike): ClientIdentity {
    const names = this.bySocket.get(socket) ?? DEFAULTS.clientCertHeaders;
    const id = clientIdentity(socket);
    out.push([names.verify, id.verify]);
    if (id.verify !== 'SUCCESS') return id;
    out.push([names.subject, headerValue(id.subject ?? '')]);
    if (id.sans?.length) out.push([names.san, headerValue(id.sans.join(', '))]);
    out.push([names.fingerprint, id.fingerprint256 ?? '']);
    return id;
  }
}

/** Every client-certificate header name any listener of `listeners` uses, plus the defaults. */
export function identityHeaderNames(listeners: ReadonlyArray<{ clientAuth?: ClientAuthConfig }>): Set<string> {
  const names = new Set<string>(Object.values(DEFAULTS.clientCertHeaders));
  for (const l of listeners) for (const n of Object.values(l.clientAuth?.headers ?? {})) names.add(n.toLowerCase());
  return names;
}
