// What the appliance does with one decoded request: checks login, decodes the body, calls the
// device, encodes the answer. Device errors keep their HSM_ERR_* code on the wire.
import {
  AlreadyLoggedInError, InvalidArgumentError, NotLoggedInError, type Hsm, type KeyPairSpec, type KeyTemplate,
  type KeyType, type LoginAttempt, type Role, type SecretKeySpec, type Session, type UnwrapRequest, type WrapMechanism,
} from './device/index.js';
import {
  Op, isBinaryOp, jsonText, needsNoLogin, opName, readDecrypt, readEncrypt, readJson, readRandom, readSign, readVerify,
  ProtocolError, type CryptoResult,
} from './protocol/index.js';
import { handleQuorumOp, isQuorumOp } from './node-quorum.js';

/** Per-connection state the ops read and change: the logged-in session. */
export interface ConnectionState {
  session: Session | undefined;
  /** The connection closed: a login finishing now ends its session at once. */
  closed?: boolean;
  /** Admission of this connection's logins under the node's caps, and its peer for the audit log. */
  loginAttempt?: LoginAttempt;
}

/** An answer ready to frame: the body (JSON text, or bytes for the binary ops) and, for crypto ops, timings. */
export type OpAnswer =
  | { json: true; body: string; queueWaitUs: number; serviceUs: number }
  | { json: false; body: Buffer; queueWaitUs: number; serviceUs: number };

type Json = Record<string, unknown>;

function field(o: Json, name: string): unknown {
  return o[name];
}
function str(o: Json, name: string): string {
  const v = field(o, name);
  if (typeof v !== 'string' || v.length === 0) throw new InvalidArgumentError(`request field ${name} must be a non-empty string`);
  return v;
}
function num(o: Json, name: string): number {
  const v = field(o, name);
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new InvalidArgumentError(`request field ${name} must be a number`);
  return v;
}
function buf(o: Json, name: string): Buffer {
  const v = field(o, name);
  if (!Buffer.isBuffer(v)) throw new InvalidArgumentError(`request field ${name} must be bytes`);
  return v;
}
function obj(o: Json, name: string, optional = false): Json {
  const v = field(o, name);
  if (v === undefined && optional) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidArgumentError(`request field ${name} must be an object`);
  return v as Json;
}

// The device checks every attribute; here only the shape (an object with a string label).
function template(o: Json): KeyTemplate {
  const t = obj(o, 'template');
  if (typeof t.label !== 'string') throw new InvalidArgumentError('request field template.label must be a string');
  return t as unknown as KeyTemplate;
}

function answer(value: unknown, queueWaitUs = 0, serviceUs = 0): OpAnswer {
  return { body: jsonText(value), json: true, queueWaitUs, serviceUs };
}
// The device's result of a binary op, as it goes on the wire (a shared function: no closure per request).
function raw(r: CryptoResult<Buffer>): OpAnswer {
  return { body: r.result, json: false, queueWaitUs: r.queueWaitUs, serviceUs: r.serviceUs };
}
function verdict(r: CryptoResult<boolean>): OpAnswer {
  return { body: r.result ? VALID : INVALID, json: false, queueWaitUs: r.queueWaitUs, serviceUs: r.serviceUs };
}
const VALID = Buffer.from([1]);
const INVALID = Buffer.from([0]);

/** Runs one request against the device on behalf of a connection; every failure is a rejection. */
export function handleOp(device: Hsm, state: ConnectionState, opcode: number, body: Buffer): Promise<OpAnswer> {
  try {
    if (opName(opcode) === undefined) throw new ProtocolError('HSM_ERR_UNKNOWN_OP', `unknown operation 0x${opcode.toString(16)}; the client and HSM versions may differ`);
    if (!needsNoLogin(opcode) && !state.session) throw new NotLoggedInError();
    // The hot ops go straight to the device's promise, without an async frame of their own.
    if (isBinaryOp(opcode)) return handleBinary(device, state.session as Session, opcode, body);
  } catch (err) {
    return Promise.reject(err);
  }
  return handleJson(device, state, opcode, body);
}

async function handleJson(device: Hsm, state: ConnectionState, opcode: number, body: Buffer): Promise<OpAnswer> {
  const s = state.session as Session;
  const parsed = readJson(body);
  const o: Json = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Json) : {};
  if (isQuorumOp(opcode)) return answer(await handleQuorumOp(device, s, opcode, o));
  switch (opcode) {
    case Op.INFO: return answer(device.info());
    case Op.OCCUPANCY: return answer(device.occupancy());
    case Op.STATE_DIGEST: return answer(device.stateDigest());
    case Op.LOGIN: {
      // A connection logs in once and then works as that user: the device refuses a second
      // login while this connection's session is live (HSM_ERR_ALREADY_LOGGED_IN, audited), and
      // one while another is in progress is over the per-connection cap (HSM_ERR_BUSY, unhashed).
      const session = await device.login(str(o, 'user'), str(o, 'password'), state.session, state.loginAttempt);
      if (state.closed) {
        // Nobody can use it, and closing the connection already ended what it held.
        await device.logout(session).catch(() => undefined);
        throw new NotLoggedInError();
      }
      if (state.session) {
        // Another login pipelined on this connection (a cap above 1) won the race while this one was checked.
        await device.logout(session).catch(() => undefined);
        throw new AlreadyLoggedInError(state.session.user);
      }
      state.session = session;
      return answer({ user: session.user, role: session.role });
    }
    case Op.LOGOUT:
      await device.logout(s);
      state.session = undefined;
      return answer(undefined);
    case Op.CHANGE_PASSWORD: {
      const nonce = o.saltNonce;
      if (nonce !== undefined && !Buffer.isBuffer(nonce)) throw new InvalidArgumentError('request field saltNonce must be bytes');
      state.session = await device.changePassword(s, str(o, 'newPassword'), nonce);
      return answer({ user: state.session.user, role: state.session.role });
    }
    case Op.CREATE_USER: return answer(await device.createUser(s, str(o, 'name'), str(o, 'role') as Exclude<Role, 'PRECO'>, str(o, 'password')));
    case Op.DELETE_USER: await device.deleteUser(s, str(o, 'name')); return answer(undefined);
    case Op.LIST_USERS: return answer(device.listUsers(s));
    case Op.RESET_PASSWORD: await device.resetPassword(s, str(o, 'name'), str(o, 'newPassword')); return answer(undefined);
    case Op.UNLOCK_USER: await device.unlockUser(s, str(o, 'name')); return answer(undefined);
    case Op.GENERATE_KEY_PAIR: {
      const r = await device.generateKeyPair(s, str(o, 'spec') as KeyPairSpec, template(o));
      return answer(r.result, r.queueWaitUs, r.serviceUs);
    }
    case Op.GENERATE_KEY: {
      const r = await device.generateKey(s, str(o, 'spec') as SecretKeySpec, template(o));
      return answer(r.result, r.queueWaitUs, r.serviceUs);
    }
    case Op.IMPORT_KEY: {
      const key = field(o, 'key');
      if (typeof key !== 'string' && !Buffer.isBuffer(key)) throw new InvalidArgumentError('request field key must be PEM text or DER bytes');
      const r = await device.importPrivateKey(s, { key, template: template(o) });
      return answer(r.result, r.queueWaitUs, r.serviceUs);
    }
    case Op.IMPORT_PUBLIC_KEY: {
      const key = field(o, 'key');
      if (typeof key !== 'string' && !Buffer.isBuffer(key)) throw new InvalidArgumentError('request field key must be PEM text or DER bytes');
      const r = await device.importPublicKey(s, { key, template: template(o) });
      return answer(r.result, r.queueWaitUs, r.serviceUs);
    }
    case Op.FIND_KEYS: return answer(device.listKeys(s, obj(o, 'filter', true)));
    case Op.GET_KEY: return answer(device.getKey(s, str(o, 'keyId')));
    case Op.DELETE_KEY: await device.deleteKey(s, str(o, 'keyId')); return answer(undefined);
    case Op.SHARE_KEY: return answer(await device.shareKey(s, str(o, 'keyId'), str(o, 'user')));
    case Op.UNSHARE_KEY: return answer(await device.unshareKey(s, str(o, 'keyId'), str(o, 'user')));
    case Op.SET_ATTRIBUTES: return answer(await device.setAttributes(s, str(o, 'keyId'), obj(o, 'changes')));
    case Op.EXPORT_PUBLIC_KEY: return answer(device.exportPublicKey(s, str(o, 'keyId')));
    case Op.WRAP: {
      const r = await device.wrapKey(s, { wrappingKeyId: str(o, 'wrappingKeyId'), keyId: str(o, 'keyId'), mechanism: str(o, 'mechanism') as WrapMechanism });
      return answer({ wrapped: r.result }, r.queueWaitUs, r.serviceUs);
    }
    case Op.UNWRAP: {
      const r = await device.unwrapKey(s, {
        unwrappingKeyId: str(o, 'unwrappingKeyId'), mechanism: str(o, 'mechanism') as WrapMechanism, wrapped: buf(o, 'wrapped'),
        keyClass: str(o, 'keyClass') as UnwrapRequest['keyClass'], template: template(o),
        ...(typeof o.keyType === 'string' ? { keyType: o.keyType as KeyType } : {}),
      });
      return answer(r.result, r.queueWaitUs, r.serviceUs);
    }
    case Op.DIGEST: {
      const r = await device.digest(s, str(o, 'algorithm') as 'sha256' | 'sha384' | 'sha512', buf(o, 'data'));
      return answer({ digest: r.result }, r.queueWaitUs, r.serviceUs);
    }
    case Op.EXPORT_MASKED: return answer({ masked: device.exportMasked(s, str(o, 'keyId')) });
    case Op.IMPORT_MASKED: return answer(await device.importMasked(s, buf(o, 'masked')));
    case Op.EXPORT_USERS: return answer({ masked: device.exportUsers(s) });
    case Op.IMPORT_USERS: await device.importUsers(s, buf(o, 'masked')); return answer(undefined);
    case Op.SNAPSHOT: return answer({ snapshot: device.snapshot(s) });
    case Op.LIST_TOKEN_KEY_IDS: return answer(device.listTokenKeyIds(s));
    case Op.LEASE_ACQUIRE: return answer(await device.leaseAcquire(s, str(o, 'name'), str(o, 'holder'), num(o, 'ttlMs')));
    case Op.LEASE_RENEW: return answer(await device.leaseRenew(s, str(o, 'name'), str(o, 'holder'), num(o, 'token'), num(o, 'ttlMs'), field(o, 'challenges')));
    case Op.LEASE_RELEASE: return answer({ released: await device.leaseRelease(s, str(o, 'name'), str(o, 'holder'), num(o, 'token')) });
    case Op.LEASE_LIST: return answer(device.leaseList(s));
    case Op.STORE_CERTIFICATE: {
      const chain = field(o, 'chain');
      if (!Array.isArray(chain) || !chain.every((d) => Buffer.isBuffer(d))) throw new InvalidArgumentError('request field chain must be a list of DER certificates');
      const note = field(o, 'note');
      if (note !== undefined && typeof note !== 'string') throw new InvalidArgumentError('request field note must be a string');
      return answer(await device.storeCertificate(s, { label: str(o, 'label'), keyId: str(o, 'keyId'), chain: chain as Buffer[], token: num(o, 'token'), ...(note !== undefined ? { note } : {}) }));
    }
    case Op.GET_CERTIFICATE: return answer(device.getCertificate(s, str(o, 'label')));
    case Op.LIST_CERTIFICATES: return answer(device.listCertificates(s));
    case Op.DELETE_CERTIFICATE: return answer(await device.deleteCertificate(s, str(o, 'label'), num(o, 'token')));
    default:
      throw new ProtocolError('HSM_ERR_UNKNOWN_OP', `unknown operation 0x${opcode.toString(16)}; the client and HSM versions may differ`);
  }
}

// Throws synchronously for a malformed body (handleOp turns that into a rejection).
function handleBinary(device: Hsm, s: Session, opcode: number, body: Buffer): Promise<OpAnswer> {
  switch (opcode) {
    case Op.SIGN:
    case Op.HMAC:
      return device.sign(s, readSign(body)).then(raw);
    case Op.VERIFY:
      return device.verify(s, readVerify(body)).then(verdict);
    case Op.ENCRYPT:
      return device.encrypt(s, readEncrypt(body)).then(raw);
    case Op.DECRYPT:
      return device.decrypt(s, readDecrypt(body)).then(raw);
    case Op.RANDOM:
      return device.random(s, readRandom(body)).then(raw);
    default:
      throw new ProtocolError('HSM_ERR_UNKNOWN_OP', `unknown operation 0x${opcode.toString(16)}; the client and HSM versions may differ`);
  }
}
