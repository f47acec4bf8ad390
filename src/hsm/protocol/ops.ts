// Opcodes: hot crypto operations (binary bodies, see binary.ts) from 0x100, management
// operations (JSON bodies, see json.ts) below. Numbers are part of the wire format: never reuse.

export const Op = {
  INFO: 0x0001,
  LOGIN: 0x0002,
  LOGOUT: 0x0003,
  CHANGE_PASSWORD: 0x0004,
  OCCUPANCY: 0x0005,
  STATE_DIGEST: 0x0006,
  CREATE_USER: 0x0010,
  DELETE_USER: 0x0011,
  LIST_USERS: 0x0012,
  RESET_PASSWORD: 0x0013,
  UNLOCK_USER: 0x0014,
  // Quorum (M of N) authentication: see protocol/quorum.ts and device/quorum.ts.
  QUORUM_REGISTER_KEY: 0x0050,
  QUORUM_SET_M: 0x0051,
  QUORUM_TOKEN_GET: 0x0052,
  QUORUM_TOKEN_APPROVE: 0x0053,
  QUORUM_TOKEN_STATUS: 0x0054,
  QUORUM_STATUS: 0x0055,
  QUORUM_TOKEN_EXPORT: 0x0056,
  QUORUM_TOKEN_IMPORT: 0x0057,
  GENERATE_KEY_PAIR: 0x0020,
  GENERATE_KEY: 0x0021,
  IMPORT_KEY: 0x0022,
  FIND_KEYS: 0x0023,
  GET_KEY: 0x0024,
  DELETE_KEY: 0x0025,
  SHARE_KEY: 0x0026,
  UNSHARE_KEY: 0x0027,
  SET_ATTRIBUTES: 0x0028,
  EXPORT_PUBLIC_KEY: 0x0029,
  IMPORT_PUBLIC_KEY: 0x002a,
  WRAP: 0x0030,
  UNWRAP: 0x0031,
  DIGEST: 0x0032,
  EXPORT_MASKED: 0x0040,
  IMPORT_MASKED: 0x0041,
  EXPORT_USERS: 0x0042,
  IMPORT_USERS: 0x0043,
  SNAPSHOT: 0x0044,
  LIST_TOKEN_KEY_IDS: 0x0045,
  // Leases and certificate objects (ACME across proxies): each HSM decides for itself.
  LEASE_ACQUIRE: 0x0060,
  LEASE_RENEW: 0x0061,
  LEASE_RELEASE: 0x0062,
  LEASE_LIST: 0x0063,
  STORE_CERTIFICATE: 0x0064,
  GET_CERTIFICATE: 0x0065,
  LIST_CERTIFICATES: 0x0066,
  DELETE_CERTIFICATE: 0x0067,
  SIGN: 0x0100,
  VERIFY: 0x0101,
  ENCRYPT: 0x0102,
  DECRYPT: 0x0103,
  RANDOM: 0x0104,
  HMAC: 0x0105,
} as const;

export type OpName = keyof typeof Op;
export type OpCode = (typeof Op)[OpName];

const NAMES = new Map<number, string>(Object.entries(Op).map(([k, v]) => [v, k.toLowerCase().replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase())]));

/** The operation's name as observability reports it ('sign', 'generateKeyPair'), or undefined. */
export function opName(code: number): string | undefined {
  return NAMES.get(code);
}

/** Whether an opcode carries a binary body (hot path) rather than JSON. */
export function isBinaryOp(code: number): boolean {
  return code >= 0x0100;
}

/** Operations that need no login (health checks). */
export function needsNoLogin(code: number): boolean {
  return code === Op.INFO || code === Op.LOGIN || code === Op.OCCUPANCY || code === Op.STATE_DIGEST;
}

/** Whether an opcode is one of the quorum operations (0x0050 to 0x005f). */
export function isQuorumOp(code: number): boolean {
  return code >= 0x0050 && code <= 0x005f;
}
