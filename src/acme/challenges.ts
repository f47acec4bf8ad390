// Challenges waiting for the CA's validation: tls-alpn-01 certificates by server name and http-01
// key authorizations by token. The TLS listeners and the http-01 listener read them.
import type { CertifiedKey } from '../engine/index.js';

/** The challenges this process is answering right now. */
export class PendingChallenges {
  private readonly tlsAlpn = new Map<string, CertifiedKey>();
  private readonly http = new Map<string, string>();

  /** The tls-alpn-01 validation certificate for `servername` (RFC 8737 §3), if one is pending. */
  tlsAlpnCertificate(servername: string): CertifiedKey | undefined {
    return this.tlsAlpn.get(servername.toLowerCase());
  }

  /** The key authorization served at /.well-known/acme-challenge/TOKEN (RFC 8555 §8.3). */
  httpKeyAuthorization(token: string): string | undefined {
    return this.http.get(token);
  }

  addTlsAlpn(name: string, certified: CertifiedKey): () => void {
    const key = name.toLowerCase();
    this.tlsAlpn.set(key, certified);
    return () => { if (this.tlsAlpn.get(key) === certified) this.tlsAlpn.delete(key); };
  }

  addHttp(token: string, keyAuthorization: string): () => void {
    this.http.set(token, keyAuthorization);
    return () => { if (this.http.get(token) === keyAuthorization) this.http.delete(token); };
  }

  get size(): number { return this.tlsAlpn.size + this.http.size; }
}
