// Quorum (M of N) authentication, the parts both ends must agree on: the services a quorum can
// protect, the text of a quorum token (what approvers sign, byte for byte), the message a crypto
// officer signs to prove it holds the private half of the quorum key it registers, and the
// shapes the HSM answers with. Pure strings: the signing and verifying live in client/ and device/.

/** What a quorum protects: user management, key policy changes, and the M values themselves. */
export type QuorumService = 'user' | 'key' | 'quorum';

/** Every service, in the order status lists them. */
export const QUORUM_SERVICES: readonly QuorumService[] = ['user', 'key', 'quorum'];

/** M per service (1: no quorum, the default). */
export type QuorumMValues = Record<QuorumService, number>;

/** Largest M (CloudHSM's limit). */
export const MAX_QUORUM_M = 8;
/** Token lifetime when the requester asks for none (CloudHSM: ten minutes), and the longest allowed. */
export const QUORUM_TOKEN_TTL_S = 600;

/** Where a token stands: `approved` has M valid approvals and can be used once. */
export type QuorumTokenState = 'pending' | 'approved' | 'used' | 'replaced' | 'expired';

/** A quorum token as the HSM reports it. */
export interface QuorumTokenInfo {
  id: string;
  service: QuorumService;
  /** The user the token was issued to: only they can use it. */
  user: string;
  /** The HSM that issued it (the token is valid on every HSM of the cluster). */
  issuedBy: string;
  issuedAt: string;
  expiresAt: string;
  /** Crypto officers whose approval is on record and still counts (one each). */
  approvals: string[];
  /** The M in force for the token's service now. */
  m: number;
  state: QuorumTokenState;
  /** The exact text approvers sign (`hsmproxy quorum token sign`, or openssl dgst -sha256 -sign). */
  text: string;
}

/** A crypto officer registered as a quorum approver. */
export interface QuorumApprover {
  name: string;
  /** 'rsa' (2048 to 4096 bits) or 'ec' (P-256). */
  keyType: string;
  /** SHA-256 of the SPKI DER, hex. */
  fingerprint: string;
}

/** The cluster's quorum settings. */
export interface QuorumStatus {
  m: QuorumMValues;
  approvers: QuorumApprover[];
}

/** An approval as it is submitted: who signed and the signature over the token text. */
export interface QuorumApproval {
  tokenId: string;
  approver: string;
  signature: Buffer;
}

const TOKEN_HEADER = 'hsmproxy quorum token v1';

/** The text of a token: what the HSM stores and what every approver signs. */
export function quorumTokenText(t: {
  id: string; service: QuorumService; user: string; issuedBy: string; issuedAt: string; expiresAt: string;
}): string {
  return `${TOKEN_HEADER}\nid: ${t.id}\nservice: ${t.service}\nuser: ${t.user}\nissued-by: ${t.issuedBy}\nissued: ${t.issuedAt}\nexpires: ${t.expiresAt}\n`;
}

/** The id in a token's text, or undefined when the text is not a quorum token. */
export function quorumTokenId(text: string): string | undefined {
  const lines = text.split('\n');
  if (lines[0] !== TOKEN_HEADER) return undefined;
  const m = /^id: ([0-9a-f]{32})$/.exec(lines[1] ?? '');
  return m?.[1];
}

/**
 * What a crypto officer signs with the quorum private key to register its public half: bound to
 * the user name and the key, so the proof can be replayed only to register the same key again.
 */
export function quorumRegistrationText(user: string, spkiDer: Buffer): string {
  return `hsmproxy quorum key registration v1\nuser: ${user}\nkey: ${spkiDer.toString('base64')}\n`;
}
