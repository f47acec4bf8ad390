// The parts of one HSM that its operation modules share, injected (no singletons): the
// layers below hsm.ts each get this one object instead of reaching for globals.
import type { AuditEntry } from './audit.js';
import type { CapacityModel } from './capacity.js';
import type { ObjectStore } from './objects.js';
import type { SigningThreads } from './signing-threads.js';
import type { DeviceStore } from './persist.js';
import type { QuorumState } from './quorum.js';
import type { UserTable } from './users.js';
import type { Tombstones } from './versions.js';

/** Shared state of one open HSM. */
export interface DeviceContext {
  readonly hsmId: string;
  readonly users: UserTable;
  readonly objects: ObjectStore;
  readonly store: DeviceStore;
  readonly capacity: CapacityModel;
  /** Where asymmetric signatures are computed: the main thread and a few worker threads. */
  readonly signing: SigningThreads;
  readonly clusterKey: Buffer;
  /** Deleted users and token keys with their last versions: no replay brings them back. */
  readonly tombstones: Tombstones;
  /** Appends to the audit log (MAC-chained under a key derived from the master key). */
  audit(entry: AuditEntry): void;
  /** Persists the tombstones (before the deletion they record is made). */
  saveTombstones(): Promise<void>;
  /** M values and quorum tokens (quorum.ts). */
  readonly quorum: QuorumState;
  /** Persists the quorum state. */
  saveQuorum(): Promise<void>;
}
