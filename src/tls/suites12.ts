// TLS 1.2 cipher suites: ECDHE key exchange with AEAD only (RFC 5289 AES-GCM, RFC 7905
// ChaCha20-Poly1305), and the server's preference order among them. Imports suites.ts only.
import type { CipherSuite } from './suites.js';

/** A TLS 1.2 suite: the AEAD, the PRF hash, which certificate key it needs. */
export interface CipherSuite12 extends CipherSuite {
  version: 'TLSv1.2';
  /** Certificate key type the suite authenticates with (ECDHE_ECDSA or ECDHE_RSA). */
  auth: 'ec' | 'rsa';
  /** Implicit IV from the key block: a 4-byte salt for GCM (plus an 8-byte explicit nonce), 12 bytes for ChaCha20. */
  fixedIvLen: 4 | 12;
  /** OpenSSL's name, which node:tls getCipher() reports for TLS 1.2. */
  opensslName: string;
}

const suite = (id: number, name: string, opensslName: string, auth: 'ec' | 'rsa', aead: CipherSuite['aead']): CipherSuite12 => {
  const sha384 = aead === 'aes-256-gcm';
  return {
    id, name, opensslName, version: 'TLSv1.2', auth, aead,
    hash: sha384 ? 'sha384' : 'sha256', hashLen: sha384 ? 48 : 32,
    keyLen: aead === 'aes-128-gcm' ? 16 : 32, ivLen: 12, fixedIvLen: aead === 'chacha20-poly1305' ? 12 : 4,
  };
};

/** The TLS 1.2 suites we implement, in server preference order (ECDSA first: cheaper for HSM and client). */
export const TLS12_SUITES: readonly CipherSuite12[] = Object.freeze([
  suite(0xc02b, 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256', 'ECDHE-ECDSA-AES128-GCM-SHA256', 'ec', 'aes-128-gcm'),
  suite(0xc02c, 'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ec', 'aes-256-gcm'),
  suite(0xcca9, 'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'ec', 'chacha20-poly1305'),
  suite(0xc02f, 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'rsa', 'aes-128-gcm'),
  suite(0xc030, 'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384', 'ECDHE-RSA-AES256-GCM-SHA384', 'rsa', 'aes-256-gcm'),
  suite(0xcca8, 'TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256', 'ECDHE-RSA-CHACHA20-POLY1305', 'rsa', 'chacha20-poly1305'),
]);

/** The TLS 1.2 suite with this code point, or undefined. */
export function suite12ById(id: number): CipherSuite12 | undefined {
  return TLS12_SUITES.find((s) => s.id === id);
}

/**
 * Server preference for this client: ECDSA before RSA, AES-GCM before ChaCha20, except that a
 * client whose first listed AEAD suite is ChaCha20 gets ChaCha20 first (BoringSSL's rule: such
 * a client most likely lacks AES hardware). TLS 1.3 suites in the list count too.
 */
export function suitePreference12(clientSuites: readonly number[]): CipherSuite12[] {
  const firstAead = clientSuites.find((id) => suite12ById(id) !== undefined || (id >= 0x1301 && id <= 0x1303));
  const chachaFirst = firstAead === 0x1303 || suite12ById(firstAead ?? -1)?.aead === 'chacha20-poly1305';
  if (!chachaFirst) return [...TLS12_SUITES];
  const rank = (s: CipherSuite12): number => (s.auth === 'ec' ? 0 : 10) + (s.aead === 'chacha20-poly1305' ? 0 : 1);
  return [...TLS12_SUITES].sort((a, b) => rank(a) - rank(b));
}
