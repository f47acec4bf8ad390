// hsm/device: one simulated HSM modelled on AWS CloudHSM, as a library with no network.
// Layers (each testable alone): hsm.ts (entry points) → users.ts (login, roles, lockout) →
// policy.ts (every access rule) → objects.ts (key attribute bags, limits) → mechanisms.ts
// (node:crypto) under capacity.ts (units, queue, rates); persist.ts (encrypted at rest,
// atomic writes), audit.ts (hash-chained log), masking.ts (cluster-key export for issue 3).
// May import node built-ins only. Other modules import from this file, not the layers.
export * from './errors.js';
export * from './types.js';
export { Hsm, DEFAULT_LOCKOUT_THRESHOLD, DEFAULT_MAX_KEYS, DEFAULT_MAX_USERS, PRECO_USER } from './hsm.js';
export type { HsmOpenOptions } from './hsm.js';
export { CAPACITY_PROFILES, CapacityModel, resolveCapacityProfile } from './capacity.js';
export type { CapacityProfile, CapacityProfileName } from './capacity.js';
export { verifyAuditLog } from './audit.js';
export type { AuditEntry, AuditVerification } from './audit.js';
