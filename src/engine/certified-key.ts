// A CertifiedKey (certificate chain + Signer) for tls/ from a key reference and a PEM chain file,
// checked at load time: the leaf certificate's public key must be the HSM key's (rustls
// `Credentials::new` reports InconsistentKeys; nginx refuses to start with "key values mismatch").
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { pemCertificates } from '../tls/pem.js';
import type { Engine, SignerOptions } from './engine.js';
import { EngineError } from './errors.js';
import type { CertifiedKey, EngineSigner } from './signer.js';

/** A certificate chain file that cannot be used. */
export class ChainFileError extends EngineError {
  constructor(file: string, reason: string) {
    super(`${file}: ${reason}`, 'ENGINE_ERR_CHAIN');
    this.name = 'ChainFileError';
  }
}

/** The certificate does not certify the key (wrong pairing of files). */
export class CertificateKeyMismatchError extends EngineError {
  constructor(chainFile: string, keyFile: string) {
    super(`${chainFile} does not certify the key in ${keyFile} (the leaf certificate's public key differs); pair each certificate with its own key reference`, 'ENGINE_ERR_KEY_MISMATCH');
    this.name = 'CertificateKeyMismatchError';
  }
}

/** Reads a PEM chain (leaf first) into DER certificates; errors name the file. */
export async function readChain(file: string): Promise<X509Certificate[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ChainFileError(file, `cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const blocks = pemCertificates(text);
  if (blocks.length === 0) throw new ChainFileError(file, 'no PEM certificate in it');
  return blocks.map((der, i) => {
    try {
      return new X509Certificate(der);
    } catch (err) {
      throw new ChainFileError(file, `certificate ${i + 1} does not parse (${(err as Error).message})`);
    }
  });
}

/** The CertifiedKey tls/ needs, with the engine signer exposed for diagnostics. */
export interface LoadedCertifiedKey extends CertifiedKey {
  readonly signer: EngineSigner;
  /** The leaf certificate (for SNI names and expiry). */
  readonly leaf: X509Certificate;
}

/** Loads `key` (a reference file) and `chainFile`, and checks that they belong together. */
export async function loadCertifiedKey(
  engine: Engine, key: string, chainFile: string, opts: SignerOptions = {},
): Promise<LoadedCertifiedKey> {
  const chain = await readChain(chainFile);
  const signer = await engine.signer(key, opts);
  const leaf = chain[0]!;
  if (!leaf.publicKey.equals(signer.key.publicKey)) {
    throw new CertificateKeyMismatchError(chainFile, key);
  }
  return { chain: chain.map((c) => c.raw), signer, leaf };
}
