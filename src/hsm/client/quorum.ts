// Quorum (M of N) from the client side: the crypto officer's offline part (a quorum key pair,
// signatures over tokens and over the registration text, with node:crypto and no HSM) and the
// cluster-wide calls. Through a ClusterClient every change reaches every HSM in rotation before
// it is acknowledged: registrations and M values as the masked user table (they live on user
// records and in the replicated policy), tokens and approvals as masked tokens, which the owner
// of a token may copy even when it is a crypto user.
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import {
  quorumRegistrationText, type QuorumApproval, type QuorumApprover, type QuorumService, type QuorumStatus,
  type QuorumTokenInfo,
} from '../protocol/index.js';
import type { ClusterClient } from './cluster-client.js';
import { HsmConnection } from './connection.js';

/** A token after an approval; `duplicate`: the approver was on record already (counted once). */
export type QuorumApprovalResult = QuorumTokenInfo & { duplicate: boolean };

/** What quorum calls run against: one HSM, or the whole cluster. */
export type QuorumTarget = HsmConnection | ClusterClient;

/** Kinds of quorum key: RSA-2048 or EC P-256. */
export type QuorumKeyType = 'rsa' | 'p256';

/** A new quorum key pair, PEM (PKCS#8 private, SPKI public). */
export function generateQuorumKey(type: QuorumKeyType): { privateKeyPem: string; publicKeyPem: string } {
  const pair = type === 'rsa'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    privateKeyPem: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKeyPem: pair.publicKey.export({ format: 'pem', type: 'spki' }).toString(),
  };
}

function privateKey(pem: string | Buffer, what: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch {
    throw new QuorumKeyFileError(`${what} is not a PEM private key (make one with \`hsmproxy quorum keygen\` or \`openssl genpkey\`)`);
  }
}

/** A quorum key file that cannot be used. */
export class QuorumKeyFileError extends Error {
  readonly code = 'HSM_ERR_INVALID_ARGUMENT';
  constructor(message: string) {
    super(message);
    this.name = 'QuorumKeyFileError';
  }
}

/**
 * Signs a token's text with a quorum private key: SHA-256 with RSA PKCS#1 v1.5 or DER ECDSA,
 * exactly what `openssl dgst -sha256 -sign KEY -out SIG TOKENFILE` produces.
 */
export function signQuorumToken(text: string, privateKeyPem: string | Buffer, what = 'the quorum key'): Buffer {
  return sign('sha256', Buffer.from(text, 'utf8'), privateKey(privateKeyPem, what));
}

/** The public half of a quorum private key and the proof that `user` holds it (for registration). */
export function quorumRegistration(user: string, privateKeyPem: string | Buffer, what = 'the quorum key'): { publicKey: string; proof: Buffer } {
  const key = privateKey(privateKeyPem, what);
  const pub = createPublicKey(key);
  const spki = pub.export({ format: 'der', type: 'spki' });
  return {
    publicKey: pub.export({ format: 'pem', type: 'spki' }).toString(),
    proof: sign('sha256', Buffer.from(quorumRegistrationText(user, spki), 'utf8'), key),
  };
}

// Copies the origin's masked user table to a target (registrations and M values ride on it).
function copyUsers(): (origin: HsmConnection, _r: unknown, target: HsmConnection) => Promise<void> {
  let masked: Buffer | undefined;
  return async (origin, _r, target) => {
    masked ??= await origin.exportUsers();
    await target.importUsers(masked);
  };
}

// Copies one token (with its approvals) from the origin to a target.
async function copyToken(origin: HsmConnection, r: QuorumTokenInfo, target: HsmConnection): Promise<void> {
  await target.importQuorumToken(await origin.exportQuorumToken(r.id));
}

/** CO: registers the logged-in CO's quorum key (the private key never leaves this process). */
export function registerQuorumKey(c: QuorumTarget, privateKeyPem: string | Buffer): Promise<QuorumApprover> {
  const user = c.user?.user;
  if (!user) throw new QuorumKeyFileError('log in as the crypto officer whose key this is first');
  const { publicKey, proof } = quorumRegistration(user, privateKeyPem);
  if (c instanceof HsmConnection) return c.registerQuorumKey(publicKey, proof);
  return c.replicated('quorumRegisterKey', (l) => l.registerQuorumKey(publicKey, proof), copyUsers());
}

/** CO: sets M of a service on every HSM. */
export function setQuorumM(c: QuorumTarget, service: QuorumService, m: number): Promise<QuorumStatus> {
  if (c instanceof HsmConnection) return c.setQuorumM(service, m);
  return c.replicated('quorumSetM', (l) => l.setQuorumM(service, m), copyUsers());
}

/** A token for `service`, issued by one HSM and copied to the others. */
export function getQuorumToken(c: QuorumTarget, service: QuorumService, ttlSeconds?: number): Promise<QuorumTokenInfo> {
  if (c instanceof HsmConnection) return c.getQuorumToken(service, ttlSeconds);
  return c.replicated('quorumTokenGet', (l) => l.getQuorumToken(service, ttlSeconds), copyToken);
}

/** Submits an approval; verified by the HSM that takes it, and by each HSM it is copied to. */
export function approveQuorumToken(c: QuorumTarget, a: QuorumApproval): Promise<QuorumApprovalResult> {
  if (c instanceof HsmConnection) return c.approveQuorumToken(a);
  return c.replicated('quorumTokenApprove', (l) => l.approveQuorumToken(a), copyToken);
}

/** A token's approvals, M, expiry and state. */
export function quorumTokenStatus(c: QuorumTarget, tokenId: string): Promise<QuorumTokenInfo> {
  if (c instanceof HsmConnection) return c.quorumTokenStatus(tokenId);
  return c.execute('quorumTokenStatus', { safe: true }, (l) => l.quorumTokenStatus(tokenId));
}

/** M per service and the registered approvers. */
export function quorumStatus(c: QuorumTarget): Promise<QuorumStatus> {
  if (c instanceof HsmConnection) return c.quorumStatus();
  return c.execute('quorumStatus', { safe: true }, (l) => l.quorumStatus());
}
