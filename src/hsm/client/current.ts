// Which HSMs hold the cluster's current state: the one rule the cluster client (admission) and
// `cluster status` (the IN SYNC column) share. HSMs are compared by state digest. A group is
// trusted only when that is provable from what answered: a strict majority of the manifest
// agrees, or every HSM of the manifest answered (nobody missing can hold newer state; groups of
// one size are then told apart by the persisted change sequence, e.g. two HSMs after a client
// died between its change on one and the copy to the other). A lone
// HSM whose peers are down proves nothing — it may be the one that missed changes, and letting
// it serve (and take new keys) is how two HSMs diverge for good.

/** One reachable HSM's state digest. */
export interface StateReport {
  id: string;
  digest: string;
  /**
   * The HSM's change sequence (persisted, so it survives restarts): higher on an HSM that took a
   * change its peer missed. Used only when every HSM answered.
   */
  version: number;
}

/** The verdict over the reports. */
export interface CurrentState {
  /** The digest of the chosen group (the largest; with every HSM answering, ties → higher sequence). */
  digest: string;
  ids: string[];
  /** Whether the group is provably current (else nobody should be admitted on its word). */
  proven: boolean;
  /** Why not, for people. */
  reason?: string;
}

/**
 * Picks the current group among `reports` (HSMs that answered) for a cluster of `members`.
 * HSMs in `stale` (seen out of sync with a peer and not resynced since) are never chosen.
 */
export function currentState(
  reports: StateReport[], members: readonly string[], stale: ReadonlySet<string> = new Set(),
): CurrentState | undefined {
  const groups = new Map<string, { ids: string[]; version: number }>();
  for (const r of reports) {
    if (stale.has(r.id)) continue;
    const g = groups.get(r.digest) ?? { ids: [], version: -1 };
    g.ids.push(r.id);
    g.version = Math.max(g.version, r.version);
    groups.set(r.digest, g);
  }
  const ranked = [...groups].map(([digest, g]) => ({ digest, ...g }))
    .sort((a, b) => b.ids.length - a.ids.length || b.version - a.version || (a.digest < b.digest ? -1 : 1));
  const [best, next] = ranked;
  if (!best) return undefined;
  const answered = new Set(reports.map((r) => r.id));
  const missing = members.filter((m) => !answered.has(m));
  const majority = best.ids.length * 2 > members.length;
  const clearWinner = !next || next.ids.length < best.ids.length || next.version < best.version;
  const proven = majority || (missing.length === 0 && clearWinner);
  if (proven) return { digest: best.digest, ids: best.ids, proven };
  const reason = missing.length > 0
    ? `${best.ids.join(', ')} cannot prove ${best.ids.length === 1 ? 'it holds' : 'they hold'} the cluster's latest state while ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} unreachable: start ${missing.length === 1 ? 'it' : 'them'}, or take ${missing.length === 1 ? 'it' : 'them'} out with \`hsmproxy cluster remove-hsm\``
    : `${ranked.map((g) => g.ids.join('+')).join(' and ')} disagree and nothing shows which is current; resync with a CO or appliance login`;
  return { digest: best.digest, ids: best.ids, proven, reason };
}
