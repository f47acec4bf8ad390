// The messages between the primary and its worker processes (workers: N), over node:cluster IPC.
import type { AddressInfo } from 'node:net';
import type { ReadinessReport } from '../../proxy/index.js';
import type { SharedTicketKey } from '../../tls/index.js';
import { CHANNELS } from '../../metrics/index.js';

/** Worker → primary. */
export type WorkerReport =
  | { hsmproxy: 'hello' }
  | { hsmproxy: 'ready'; listeners: Record<string, AddressInfo> }
  | { hsmproxy: 'failed'; message: string }
  | { hsmproxy: 'reloaded' }
  | { hsmproxy: 'reload-failed'; message: string }
  /** The answer to a readiness command: the worker's own Proxy readiness (its HSM side included). */
  | { hsmproxy: 'readiness'; id: number; report: ReadinessReport }
  /** diagnostics_channel events of the worker, batched, for observers in the primary. */
  | { hsmproxy: 'events'; events: Array<[string, unknown]> };

/**
 * Primary → worker. `settings` answers the worker's hello (sent once it listens for messages), and
 * is sent again to every worker when the owner refreshes them (refreshSettings).
 */
export type WorkerCommand<S> =
  | { hsmproxy: 'settings'; settings: S }
  | { hsmproxy: 'reload' }
  | { hsmproxy: 'readiness'; id: number }
  | { hsmproxy: 'stop'; deadlineMs: number };

/**
 * What the primary sends each worker (again when ticket keys change). `forwardEvents`: the primary
 * runs the scaling advisor, so the worker forwards the events it reads.
 */
export interface WorkerSettings {
  configFile: string; ticketKeys: SharedTicketKey[]; ticketRotateEveryMs: number; logLevel: string;
  forwardEvents: boolean;
}

/** The events the scaling advisor reads, forwarded from the workers, where the signatures happen. */
export const FORWARDED: readonly string[] = [CHANNELS.hsmRequest, CHANNELS.tlsHandshake];
