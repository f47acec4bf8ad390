// hsm/device: one simulated HSM modelled on AWS CloudHSM, as a library with no network.
// Layers (each testable alone): hsm.ts (the Hsm facade: sessions, audit of refusals) →
// user-ops.ts / key-ops.ts / replication.ts + user-replication.ts / quorum-ops.ts (entry points) →
// policy.ts (every access rule), quorum.ts (M of N: tokens, approvals, the gate), versions.ts
// (object versions and tombstones: no replayed blob applies) →
// users.ts (login, roles, lockout), objects.ts (key attribute bags, limits) → keygen.ts,
// mechanisms.ts, pss.ts, ecdsa-digest.ts (node:crypto) under capacity.ts (units, queue, rates),
// signatures on signing-threads.ts's threads (the main one and a few worker_threads, sign-worker.ts);
// persist.ts + sealing.ts (AES-256-GCM at rest, atomic writes; masking under the cluster key),
// audit.ts (log MAC-chained under a key derived from the master key). May import node built-ins
// only; other modules import this file.
export * from './errors.js';
export * from './types.js';
export { Hsm, DEFAULT_LOCKOUT_THRESHOLD, DEFAULT_MAX_KEYS, DEFAULT_MAX_USERS, PRECO_USER } from './hsm.js';
export type { HsmOpenOptions } from './hsm.js';
export type { LoginAttempt } from './user-ops.js';
export type { UsersImport } from './user-replication.js';
export { CAPACITY_PROFILES, CapacityModel, resolveCapacityProfile } from './capacity.js';
export type { CapacityProfile, CapacityProfileName } from './capacity.js';
export { readAuditKey, verifyAuditLog } from './audit.js';
export type { AuditEntry, AuditVerification } from './audit.js';
