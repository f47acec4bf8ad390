// ECDSA over a precomputed digest (P-256, P-384), SEC 1 §4.1.3. node:crypto cannot sign a digest
// as-is: it reaches OpenSSL's EVP_DigestSign only, and `crypto.sign(null, digest, ecKey)` hashes
// with the key type's default digest (on Node 20.20 / OpenSSL 3.0.19 its result verifies with
// `crypto.verify('sha256', digest, …)`, i.e. it signed SHA-256(digest)); `privateEncrypt` (the one
// path to EVP_PKEY_sign) sets RSA padding first and fails on EC keys; WebCrypto's ECDSA requires a
// hash. So the signature is assembled here, with the secret-dependent parts guarded:
// - the nonce k and the point kG come from OpenSSL (ECDH generateKeys: k uniform in [1, n-1], kG
//   by its constant-time scalar multiplication), never from a JS double-and-add whose branches
//   follow k's bits;
// - s = k⁻¹(z + r·d) mod n is computed on blinded values (BigInt is not constant time): k is
//   inverted as (k·b)⁻¹·b with a fresh random b, and d enters only as d + c·n (c random, top bit
//   set, so its length never varies) times the random b·r. What the timing of these operations
//   depends on is masked by fresh randomness for every signature.
// Verification handles public values only and keeps the plain arithmetic.
import { createECDH, randomBytes, type KeyObject } from 'node:crypto';

interface Curve { p: bigint; n: bigint; b: bigint; gx: bigint; gy: bigint; bytes: number; openssl: string }

const CURVES: Record<'P-256' | 'P-384', Curve> = {
  'P-256': {
    p: 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn,
    n: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
    b: 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn,
    gx: 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n,
    gy: 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n,
    bytes: 32,
    openssl: 'prime256v1',
  },
  'P-384': {
    p: 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffffn,
    n: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
    b: 0xb3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aefn,
    gx: 0xaa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7n,
    gy: 0x3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5fn,
    bytes: 48,
    openssl: 'secp384r1',
  },
};

type Jacobian = [bigint, bigint, bigint];

const mod = (a: bigint, m: bigint): bigint => ((a % m) + m) % m;

function inv(a: bigint, m: bigint): bigint {
  let [r0, r1] = [mod(a, m), m];
  let [s0, s1] = [1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  return mod(s0, m);
}

// Point doubling and addition in Jacobian coordinates for a = -3 curves (verification only: public values).
function dbl(c: Curve, [x, y, z]: Jacobian): Jacobian {
  if (y === 0n || z === 0n) return [0n, 1n, 0n];
  const p = c.p;
  const ysq = (y * y) % p;
  const s = (4n * x * ysq) % p;
  const zsq = (z * z) % p;
  const m = mod(3n * (x - zsq) * (x + zsq), p);
  const nx = mod(m * m - 2n * s, p);
  const ny = mod(m * (s - nx) - 8n * ysq * ysq, p);
  const nz = (2n * y * z) % p;
  return [nx, ny, nz];
}

function add(c: Curve, a: Jacobian, b: Jacobian): Jacobian {
  if (a[2] === 0n) return b;
  if (b[2] === 0n) return a;
  const p = c.p;
  const z1z1 = (a[2] * a[2]) % p;
  const z2z2 = (b[2] * b[2]) % p;
  const u1 = (a[0] * z2z2) % p;
  const u2 = (b[0] * z1z1) % p;
  const s1 = (a[1] * b[2] * z2z2) % p;
  const s2 = (b[1] * a[2] * z1z1) % p;
  if (u1 === u2) return s1 === s2 ? dbl(c, a) : [0n, 1n, 0n];
  const h = mod(u2 - u1, p);
  const r = mod(s2 - s1, p);
  const hh = (h * h) % p;
  const hhh = (h * hh) % p;
  const v = (u1 * hh) % p;
  const nx = mod(r * r - hhh - 2n * v, p);
  const ny = mod(r * (v - nx) - s1 * hhh, p);
  const nz = (a[2] * b[2] * h) % p;
  return [nx, ny, nz];
}

// Double-and-add: its branches follow the bits of k, so it only ever sees public scalars (verify).
function mul(c: Curve, k: bigint, pt: Jacobian): Jacobian {
  let acc: Jacobian = [0n, 1n, 0n];
  for (let i = BigInt(k.toString(2).length - 1); i >= 0n; i--) {
    acc = dbl(c, acc);
    if ((k >> i) & 1n) acc = add(c, acc, pt);
  }
  return acc;
}

function affineX(c: Curve, [x, , z]: Jacobian): bigint {
  const zi = inv(z, c.p);
  return (x * zi * zi) % c.p;
}

const toInt = (b: Buffer): bigint => (b.length === 0 ? 0n : BigInt('0x' + b.toString('hex')));
const toBytes = (v: bigint, len: number): Buffer => Buffer.from(v.toString(16).padStart(len * 2, '0'), 'hex');

// The digest as an integer, truncated to the bit length of n (SEC 1 §4.1.3 step 5).
function digestInt(c: Curve, digest: Buffer): bigint {
  const nBits = c.n.toString(2).length;
  const z = toInt(digest);
  const excess = digest.length * 8 - nBits;
  return excess > 0 ? z >> BigInt(excess) : z;
}

function derInt(v: Buffer): Buffer {
  let i = 0;
  while (i < v.length - 1 && v[i] === 0) i++;
  const t = v.subarray(i);
  const body = (t[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), t]) : t;
  return Buffer.concat([Buffer.from([0x02, body.length]), body]);
}

function toDer(r: Buffer, s: Buffer): Buffer {
  const body = Buffer.concat([derInt(r), derInt(s)]);
  const len = body.length < 0x80 ? Buffer.from([body.length]) : Buffer.from([0x81, body.length]);
  return Buffer.concat([Buffer.from([0x30]), len, body]);
}

function fromDer(sig: Buffer): [bigint, bigint] | undefined {
  let o = 0;
  if (sig[o++] !== 0x30) return undefined;
  let len = sig[o++] ?? 0;
  if (len === 0x81) len = sig[o++] ?? 0;
  if (o + len !== sig.length) return undefined;
  const out: bigint[] = [];
  for (let i = 0; i < 2; i++) {
    if (sig[o++] !== 0x02) return undefined;
    const l = sig[o++] ?? 0;
    if (o + l > sig.length) return undefined;
    out.push(toInt(sig.subarray(o, o + l)));
    o += l;
  }
  return o === sig.length ? [out[0] ?? 0n, out[1] ?? 0n] : undefined;
}

function curveOf(key: KeyObject): Curve {
  const name = key.asymmetricKeyDetails?.namedCurve;
  return name === 'secp384r1' ? CURVES['P-384'] : CURVES['P-256'];
}

// A uniform integer in [1, n-1]: 64 bits more than n, reduced, so the bias is below 2^-64.
function randomScalar(c: Curve): bigint {
  return (toInt(randomBytes(c.bytes + 8)) % (c.n - 1n)) + 1n;
}

/** A fresh nonce k and r = x(kG) mod n, both from OpenSSL. */
function opensslNonce(c: Curve): { k: bigint; r: bigint } {
  const ecdh = createECDH(c.openssl);
  const point = ecdh.generateKeys(); // 0x04 ‖ X ‖ Y
  return { k: toInt(ecdh.getPrivateKey()), r: toInt(point.subarray(1, 1 + c.bytes)) % c.n };
}

/** ECDSA signature of a digest with an EC private key: DER, or raw r||s. */
export function ecdsaSignDigest(key: KeyObject, digest: Buffer, format: 'der' | 'raw'): Buffer {
  const c = curveOf(key);
  const d = toInt(Buffer.from(key.export({ format: 'jwk' }).d ?? '', 'base64url'));
  const z = digestInt(c, digest) % c.n;
  for (;;) {
    const { k, r } = opensslNonce(c);
    if (r === 0n) continue;
    const b = randomScalar(c);
    const kbInv = inv((k * b) % c.n, c.n); // = k⁻¹·b⁻¹; Euclid runs on k·b, uniform whatever k is
    const dBlind = d + ((1n << 63n) | toInt(randomBytes(8))) * c.n; // ≡ d (mod n), fixed length
    const u = (b * z + ((b * r) % c.n) * dBlind) % c.n; // = b·(z + r·d)
    const s = (kbInv * u) % c.n; // = k⁻¹(z + r·d)
    if (s === 0n) continue;
    const rb = toBytes(r, c.bytes);
    const sb = toBytes(s, c.bytes);
    return format === 'raw' ? Buffer.concat([rb, sb]) : toDer(rb, sb);
  }
}

/** Verifies an ECDSA signature (DER or raw r||s) over a digest with an EC public key. */
export function ecdsaVerifyDigest(key: KeyObject, digest: Buffer, sig: Buffer, format: 'der' | 'raw'): boolean {
  const c = curveOf(key);
  const jwk = key.export({ format: 'jwk' });
  const q: Jacobian = [toInt(Buffer.from(jwk.x ?? '', 'base64url')), toInt(Buffer.from(jwk.y ?? '', 'base64url')), 1n];
  const rs = format === 'raw' ? (sig.length === 2 * c.bytes ? [toInt(sig.subarray(0, c.bytes)), toInt(sig.subarray(c.bytes))] : undefined) : fromDer(sig);
  if (!rs) return false;
  const [r, s] = rs as [bigint, bigint];
  if (r <= 0n || r >= c.n || s <= 0n || s >= c.n) return false;
  const w = inv(s, c.n);
  const x = add(c, mul(c, (digestInt(c, digest) * w) % c.n, [c.gx, c.gy, 1n]), mul(c, (r * w) % c.n, q));
  if (x[2] === 0n) return false;
  return affineX(c, x) % c.n === r;
}
