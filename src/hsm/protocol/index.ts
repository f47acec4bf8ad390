// hsm/protocol: the client↔HSM wire format, shared by hsm/node.ts and hsm/client/.
// Length-prefixed binary frames with request ids (pipelined, answered in any order), a frame
// size limit, compact binary bodies for hot crypto ops and JSON bodies for management ops;
// every response carries the HSM's queue wait and service time. Imports nothing.
export * from './frame.js';
export * from './errors.js';
export * from './ops.js';
export * from './binary.js';
export * from './json.js';
export type * from './types.js';
export * from './quorum.js';

/** Body of an error response (status STATUS_ERROR, JSON): a stable HSM_ERR_* code and a message for people. */
export interface WireError {
  code: string;
  message: string;
}
