// Client halves of the key exchanges EphemeralKey does not cover (it is symmetric for (EC)DH):
// finite-field DHE (RFC 7919) and the hybrid ML-KEM groups (draft-ietf-tls-ecdhe-mlkem), built from
// node:crypto and @noble/post-quantum independently of src/tls/kex.ts, so the tests cross-check it.
import { execFileSync } from 'node:child_process';
import { createDiffieHellman, randomBytes } from 'node:crypto';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { EphemeralKey, NamedGroup } from '../../src/tls/suites.js';

/** What the scripted clients need of a key share. */
export interface ClientKey { readonly group: number; publicBytes(): Buffer; deriveShared(serverShare: Buffer): Buffer }

/** Primes straight from OpenSSL's built-in RFC 7919 parameters (`openssl genpkey -genparam`). */
const primes = new Map<number, Buffer>();
export function ffdhePrime(group: number): Buffer {
  const bits = { [NamedGroup.ffdhe2048]: 2048, [NamedGroup.ffdhe3072]: 3072, [NamedGroup.ffdhe4096]: 4096 }[group];
  if (!bits) throw new Error(`not an ffdhe group: ${group}`);
  let p = primes.get(group);
  if (!p) {
    // DHParameter ::= SEQUENCE { prime INTEGER, base INTEGER } (PKCS #3), read from the PEM's DER.
    const pem = execFileSync('openssl', ['genpkey', '-genparam', '-algorithm', 'DH', '-pkeyopt', `group:ffdhe${bits}`], { encoding: 'utf8' });
    const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    let at = 0;
    const len = (): number => {
      let l = der[at++]!;
      if (l & 0x80) { let n = l & 0x7f; l = 0; while (n--) l = l * 256 + der[at++]!; }
      return l;
    };
    at++; len(); // SEQUENCE
    if (der[at++] !== 0x02) throw new Error(`unexpected DH parameters from openssl:\n${pem}`);
    const l = len();
    p = der.subarray(at, at + l);
    if (p[0] === 0) p = p.subarray(1);
    primes.set(group, p);
  }
  return p;
}

const leftPad = (b: Buffer, len: number): Buffer => Buffer.concat([Buffer.alloc(len - b.length), b]);

export class FfdheClientKey implements ClientKey {
  private readonly dh;
  private readonly p: Buffer;
  constructor(readonly group: number) {
    this.p = ffdhePrime(group);
    this.dh = createDiffieHellman(this.p, Buffer.from([2]));
    this.dh.generateKeys();
  }
  publicBytes(): Buffer { return leftPad(this.dh.getPublicKey(), this.p.length); }
  deriveShared(serverShare: Buffer): Buffer {
    if (serverShare.length !== this.p.length) throw new Error(`server ffdhe share is ${serverShare.length} bytes`);
    return leftPad(this.dh.computeSecret(serverShare), this.p.length);
  }
}

/** X25519MLKEM768 / SecP256r1MLKEM768 client: checks the server's share length exactly, as the draft requires. */
export class HybridClientKey implements ClientKey {
  private readonly kem = ml_kem768.keygen(randomBytes(64));
  private readonly ecdh: EphemeralKey;
  constructor(readonly group: number) {
    this.ecdh = EphemeralKey.generate(group === NamedGroup.X25519MLKEM768 ? NamedGroup.x25519 : NamedGroup.secp256r1);
  }
  publicBytes(): Buffer {
    const ek = Buffer.from(this.kem.publicKey);
    return this.group === NamedGroup.X25519MLKEM768 ? Buffer.concat([ek, this.ecdh.publicBytes()]) : Buffer.concat([this.ecdh.publicBytes(), ek]);
  }
  deriveShared(serverShare: Buffer): Buffer {
    const x = this.group === NamedGroup.X25519MLKEM768;
    const want = x ? 1088 + 32 : 65 + 1088;
    if (serverShare.length !== want) throw new Error(`server hybrid share is ${serverShare.length} bytes, expected ${want}`);
    const ct = x ? serverShare.subarray(0, 1088) : serverShare.subarray(65);
    const point = x ? serverShare.subarray(1088) : serverShare.subarray(0, 65);
    const ss = Buffer.from(ml_kem768.decapsulate(ct, this.kem.secretKey));
    const ec = this.ecdh.deriveShared(point);
    return x ? Buffer.concat([ss, ec]) : Buffer.concat([ec, ss]);
  }
}

/** The right client key for any group we implement. */
export function clientKey(group: number): ClientKey {
  if (group === NamedGroup.X25519MLKEM768 || group === NamedGroup.SecP256r1MLKEM768) return new HybridClientKey(group);
  if (group === NamedGroup.ffdhe2048 || group === NamedGroup.ffdhe3072 || group === NamedGroup.ffdhe4096) return new FfdheClientKey(group);
  const k = EphemeralKey.generate(group);
  return { group, publicBytes: () => k.publicBytes(), deriveShared: (s) => k.deriveShared(s) };
}
