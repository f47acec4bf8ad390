// The operations `hsmproxy bench hsm` can measure (pkpspeed's menu, in our words) and how each
// is prepared on a cluster client: a key made for the run, a first result checked with
// node:crypto, then one call per operation. Keys made here are deleted when the run ends.
import { createPublicKey, randomBytes, verify as cryptoVerify, constants } from 'node:crypto';
import type { KeyPairSpec, SignMechanism } from '../hsm/protocol/types.js';
import type { ClusterClient } from '../hsm/client/cluster-client.js';

/** A key type and signature mechanism a sign/verify operation uses. */
export interface SignFlavour {
  spec: KeyPairSpec;
  /** Named alike by the HSM protocol and the engine's PKCS#11 backend. */
  mechanism: Extract<SignMechanism, 'rsa-pss-sha256' | 'rsa-pkcs1-sha256' | 'ecdsa-sha256' | 'ecdsa-sha384'>;
}

/** The signing flavours, by the name used in `--op sign-<name>` and `--op verify-<name>`. */
export const SIGN_FLAVOURS: Record<string, SignFlavour> = {
  'rsa2048-pss': { spec: 'rsa:2048', mechanism: 'rsa-pss-sha256' },
  'rsa2048-pkcs1': { spec: 'rsa:2048', mechanism: 'rsa-pkcs1-sha256' },
  'rsa3072-pss': { spec: 'rsa:3072', mechanism: 'rsa-pss-sha256' },
  'rsa3072-pkcs1': { spec: 'rsa:3072', mechanism: 'rsa-pkcs1-sha256' },
  'ec-p256': { spec: 'ec:p256', mechanism: 'ecdsa-sha256' },
  'ec-p384': { spec: 'ec:p384', mechanism: 'ecdsa-sha384' },
};

/** Every operation name `--op` accepts. */
export const BENCH_OPS: readonly string[] = [
  ...Object.keys(SIGN_FLAVOURS).map((f) => `sign-${f}`),
  ...Object.keys(SIGN_FLAVOURS).map((f) => `verify-${f}`),
  'aes-gcm',
  'random',
];

/** A parsed operation. */
export type BenchOp =
  | { name: string; kind: 'sign' | 'verify'; flavour: SignFlavour }
  | { name: string; kind: 'aes-gcm' }
  | { name: string; kind: 'random' };

/** Parses one `--op` name; undefined when unknown. */
export function parseOp(name: string): BenchOp | undefined {
  const m = /^(sign|verify)-(.+)$/.exec(name);
  if (m) {
    const flavour = SIGN_FLAVOURS[m[2]!];
    return flavour ? { name, kind: m[1] as 'sign' | 'verify', flavour } : undefined;
  }
  if (name === 'aes-gcm') return { name, kind: name };
  if (name === 'random') return { name, kind: name };
  return undefined;
}

/** One prepared operation: `run` performs it once; `cleanup` deletes what prepare made. */
export interface PreparedOp {
  run(): Promise<unknown>;
  /**
   * Performs it once and returns the HSM's own timings, where the client API offers them
   * (signTimed): cheaper than tying channel messages to calls (AsyncLocalStorage costs ~6% of
   * the client's CPU in a profile of this loop).
   */
  runTimed?(): Promise<{ queueWaitUs: number; serviceUs: number }>;
  cleanup(): Promise<void>;
}

// About the size of a TLS 1.3 CertificateVerify content (64 spaces + context + hash).
const MESSAGE = Buffer.alloc(130, 0x20);
// A typical envelope-encryption payload: a data key plus metadata.
const PLAINTEXT = randomBytes(1024);
const RANDOM_BYTES = 32;

/** Checks a signature with node:crypto: the benchmark must measure signatures that verify. */
export function checkSignature(flavour: SignFlavour, publicKeyDer: Buffer, signature: Buffer, ecdsa: 'der' | 'raw' = 'der'): void {
  const key = createPublicKey({ key: publicKeyDer, format: 'der', type: 'spki' });
  const hash = flavour.mechanism.endsWith('384') ? 'sha384' : 'sha256';
  const ok = flavour.mechanism.startsWith('rsa-pss')
    ? cryptoVerify(
      hash, MESSAGE, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO },
      signature,
    )
    : cryptoVerify(hash, MESSAGE, { key, dsaEncoding: ecdsa === 'raw' ? 'ieee-p1363' : 'der' }, signature);
  if (!ok) throw new Error(`the HSM returned a ${flavour.mechanism} signature that does not verify`);
}

/** Prepares `op` on a cluster client (or one HSM connection with the same methods). */
export async function prepareOnCluster(client: ClusterClient, op: BenchOp, label: string): Promise<PreparedOp> {
  if (op.kind === 'random') return { run: () => client.random(RANDOM_BYTES), cleanup: async () => undefined };
  if (op.kind === 'aes-gcm') {
    const key = await client.generateKey('aes:256', { label, encrypt: true, decrypt: true });
    const keyId = key.keyId;
    const sealed = await client.encrypt({ keyId, mechanism: 'aes-gcm', plaintext: PLAINTEXT });
    const opened = await client.decrypt({ keyId, mechanism: 'aes-gcm', ciphertext: sealed });
    if (!opened.equals(PLAINTEXT)) throw new Error('AES-GCM round trip through the HSM returned different bytes');
    return { run: () => client.encrypt({ keyId, mechanism: 'aes-gcm', plaintext: PLAINTEXT }), cleanup: () => client.deleteKey(keyId).catch(() => undefined) };
  }
  const flavour = op.flavour;
  const pair = await client.generateKeyPair(flavour.spec, { label, sign: true, verify: true });
  const keyId = pair.privateKey.keyId;
  const publicId = pair.publicKey.keyId;
  const cleanup = async (): Promise<void> => {
    await client.deleteKey(keyId).catch(() => undefined);
    await client.deleteKey(publicId).catch(() => undefined);
  };
  try {
    const signature = await client.sign({ keyId, mechanism: flavour.mechanism, data: MESSAGE });
    checkSignature(flavour, (await client.exportPublicKey(publicId)).der, signature);
    const req = { keyId, mechanism: flavour.mechanism, data: MESSAGE };
    if (op.kind === 'sign') return { run: () => client.sign(req), runTimed: () => client.signTimed(req), cleanup };
    const check = { keyId: publicId, mechanism: flavour.mechanism, data: MESSAGE, signature };
    if (!(await client.verify(check))) throw new Error(`the HSM rejected its own ${flavour.mechanism} signature`);
    return { run: () => client.verify(check), cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** The message every sign operation signs (also used by the pkcs11 target). */
export const SIGN_MESSAGE = MESSAGE;
