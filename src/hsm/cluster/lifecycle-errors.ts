// Errors of cluster lifecycle operations (supervisor, backups, add/remove HSM, embedded mode).
// One base class with a stable HSM_ERR_* code and a subclass per failure, messages for people.

/** Base class of cluster lifecycle errors. */
export class ClusterLifecycleError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
    this.name = 'ClusterLifecycleError';
  }
}

/** A backup file that does not decode or authenticate: tampered, truncated, or not a backup. */
export class BackupCorruptError extends ClusterLifecycleError {
  constructor(readonly file: string, reason: string) {
    super(`backup ${file} is unusable: ${reason}; nothing was restored — use another backup`, 'HSM_ERR_BACKUP_CORRUPT');
    this.name = 'BackupCorruptError';
  }
}

/** The backup was made by a cluster whose secrets we do not hold (its key does not unwrap). */
export class BackupWrongClusterError extends ClusterLifecycleError {
  constructor(readonly file: string) {
    super(`backup ${file} was not made with this cluster key (or was altered); pass the source cluster's key with --cluster-key`, 'HSM_ERR_BACKUP_WRONG_CLUSTER');
    this.name = 'BackupWrongClusterError';
  }
}

/** No backup exists where one is needed (add-hsm --from backup). */
export class NoBackupError extends ClusterLifecycleError {
  constructor(dir: string) {
    super(`no backup in ${dir}; make one with \`hsmproxy cluster backup --dir ...\` or clone a live HSM instead`, 'HSM_ERR_NO_BACKUP');
    this.name = 'NoBackupError';
  }
}

/** remove-hsm on the only HSM of a cluster. */
export class LastHsmError extends ClusterLifecycleError {
  constructor(id: string) {
    super(`refusing to remove ${id}: it is the last HSM of the cluster (a cluster needs at least one)`, 'HSM_ERR_LAST_HSM');
    this.name = 'LastHsmError';
  }
}

/** An HSM id that the manifest does not list. */
export class UnknownHsmError extends ClusterLifecycleError {
  constructor(id: string, known: string[]) {
    super(`no HSM ${id} in this cluster; known: ${known.join(', ') || 'none'}`, 'HSM_ERR_UNKNOWN_HSM');
    this.name = 'UnknownHsmError';
  }
}


/** An HSM node process that did not start (exited, or did not report its port in time). */
export class NodeStartError extends ClusterLifecycleError {
  constructor(id: string, reason: string) {
    super(`HSM ${id} did not start: ${reason}`, 'HSM_ERR_NODE_START');
    this.name = 'NodeStartError';
  }
}
