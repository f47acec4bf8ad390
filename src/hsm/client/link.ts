// What HsmNode and ClusterClient need from one connection to one HSM, as a small interface so
// each layer is testable alone (tests use in-process doubles; production uses HsmConnection).
// Also the `hsmproxy:hsm:state` channel contract (duplicated in metrics/ on purpose).
import { channel } from 'node:diagnostics_channel';
import type { HsmInfo, KeyInfo, StateDigest } from '../protocol/types.js';

/** One live, logged-in connection to one HSM. */
export interface HsmLink {
  /** Health/info of the HSM (no login needed). */
  info(): Promise<HsmInfo>;
  stateDigest(): Promise<StateDigest>;
  /** Masked (cluster-key encrypted) export of one token key. */
  exportMasked(keyId: string): Promise<Buffer>;
  importMasked(masked: Buffer): Promise<KeyInfo>;
  exportUsers(): Promise<Buffer>;
  importUsers(masked: Buffer): Promise<void>;
  listTokenKeyIds(): Promise<string[]>;
  deleteKey(keyId: string): Promise<void>;
  /** Resolves once the connection is gone (closed by either side or failed). */
  readonly closed: Promise<void>;
  close(): Promise<void>;
}

/** Where one HSM of the cluster listens. */
export interface HsmAddress {
  id: string;
  host: string;
  port: number;
}

/** Opens and logs in one link to one HSM (rejects if it cannot). */
export type LinkFactory<C extends HsmLink> = (addr: HsmAddress, login: LoginCredentials) => Promise<C>;

/** A user name and password (CloudHSM's `user:password` PIN). */
export interface LoginCredentials {
  user: string;
  password: string;
}

/** Payload of `hsmproxy:hsm:state` (contract shared with metrics/). */
export interface HsmStateEvent {
  hsm: string;
  address: string;
  up: boolean;
  inFlight: number;
  keysToken?: number;
  keysSession?: number;
  keysMax?: number;
  utilisation?: number;
}

export const HSM_STATE_CHANNEL = 'hsmproxy:hsm:state';
const stateChannel = channel(HSM_STATE_CHANNEL);

/** Publishes one state event (cheap when nobody subscribes). */
export function publishState(ev: HsmStateEvent): void {
  if (stateChannel.hasSubscribers) stateChannel.publish(ev);
}

// Codes meaning "this HSM (or the path to it) failed", as opposed to the HSM's answer to the
// request (wrong key, permission...). Only these take an HSM out of rotation.
const TRANSPORT_CODES = new Set([
  'HSM_ERR_CONNECTION', 'HSM_ERR_CONNECTION_CLOSED', 'HSM_ERR_CLOSED', 'HSM_ERR_UNREACHABLE', 'HSM_ERR_TIMEOUT',
  'HSM_ERR_DEADLINE', 'HSM_ERR_PROTOCOL', 'HSM_ERR_FRAME_TOO_LARGE', 'HSM_ERR_TLS', 'HSM_ERR_STORE',
  'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT',
]);

/** Whether an error means the HSM or the connection failed (so: out of rotation, maybe retry). */
export function isTransportError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== 'string') return true; // an uncoded error is a bug or a broken socket: do not trust the HSM
  return TRANSPORT_CODES.has(code) || code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL');
}

/** Whether the HSM answered busy (queue full): retry elsewhere with backoff. */
export function isBusyError(err: unknown): boolean {
  return (err as { code?: unknown })?.code === 'HSM_ERR_BUSY';
}
