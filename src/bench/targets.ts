// What `hsmproxy bench hsm` measures against: a temporary embedded cluster (made and removed by
// the run), a running cluster in a directory, or a PKCS#11 token. Each target prepares an
// operation and says whether its answers carry the HSM's queue wait and service time.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ClusterClient } from '../hsm/client/cluster-client.js';
import { startEmbeddedCluster, type EmbeddedCluster } from '../hsm/cluster/embedded.js';
import type { ManifestProfile } from '../hsm/cluster/manifest.js';
import { checkSignature, prepareOnCluster, SIGN_MESSAGE, type BenchOp, type PreparedOp } from './ops.js';

/** Where the operations go. */
export interface BenchTarget {
  /** For people: "embedded cluster, 2 HSMs, hsm2m.medium". */
  readonly description: string;
  /** HSMs behind the target (null when unknown, e.g. a PKCS#11 token). */
  readonly hsms: number | null;
  /** True when each answer carries the HSM's queue wait and service time. */
  readonly reportsTimings: boolean;
  prepare(op: BenchOp): Promise<PreparedOp>;
  close(): Promise<void>;
}

function label(op: BenchOp): string {
  return `hsmproxy-bench-${op.name}-${randomBytes(4).toString('hex')}`;
}

/** A target over a logged-in cluster client; `onClose` releases whatever opened it. */
export function clusterTarget(
  client: ClusterClient, description: string, hsms: number, onClose: () => Promise<void>,
): BenchTarget {
  return {
    description, hsms, reportsTimings: true,
    prepare: (op) => prepareOnCluster(client, op, label(op)),
    close: onClose,
  };
}

/** Starts a temporary embedded cluster of `hsms` HSMs under the OS temp dir; close() stops and removes it. */
export async function embeddedTarget(hsms: number, profile: ManifestProfile): Promise<BenchTarget> {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-bench-hsm-'));
  let cluster: EmbeddedCluster;
  try {
    // A throwaway cluster with generated passwords: a low scrypt cost only shortens its start.
    cluster = await startEmbeddedCluster({ dir, hsms, profile, scryptCost: 1024 });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return clusterTarget(cluster.client, `embedded cluster, ${hsms} HSM${hsms === 1 ? '' : 's'}, profile ${profile}`, hsms, async () => {
    try {
      await cluster.stop();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

/** Options of the PKCS#11 target. */
export interface Pkcs11TargetOptions {
  module: string;
  token: string;
  credentials?: string;
  /** Sessions to open: the highest concurrency of the sweep (capped). */
  sessions: number;
}

/** Opens a PKCS#11 token; only sign operations are offered (the engine's pkcs11 backend signs only). */
export async function pkcs11Target(opts: Pkcs11TargetOptions): Promise<BenchTarget> {
  const { openPkcs11Backend } = await import('../engine/pkcs11/backend.js');
  const backend = await openPkcs11Backend({
    module: opts.module, token: opts.token, credentials: opts.credentials, poolSize: opts.sessions,
  });
  return {
    description: `PKCS#11 token "${opts.token}" (${opts.module})`, hsms: null, reportsTimings: false,
    async prepare(op) {
      if (op.kind !== 'sign') throw new UnsupportedOpError(op.name);
      const { spec, mechanism } = op.flavour;
      const [type, size] = spec.split(':') as [string, string];
      const algorithm = type === 'rsa' ? { type: 'rsa' as const, bits: Number(size) } : { type: 'ec' as const, curve: size === 'p384' ? 'P-384' as const : 'P-256' as const };
      const handle = await backend.generateKeyPair({ algorithm, label: label(op) });
      const cleanup = (): Promise<void> => backend.delete(handle).catch(() => undefined);
      try {
        const raw = await backend.sign(handle, mechanism, SIGN_MESSAGE);
        checkSignature(op.flavour, handle.publicKey.export({ type: 'spki', format: 'der' }), raw, backend.ecdsaEncoding);
      } catch (err) {
        await cleanup();
        throw err;
      }
      return { run: () => backend.sign(handle, mechanism, SIGN_MESSAGE), cleanup };
    },
    close: () => backend.close(),
  };
}

/** An operation the target cannot perform (the CLI turns it into a one-line usage error). */
export class UnsupportedOpError extends Error {
  readonly code = 'CLI_ERR_BENCH_UNSUPPORTED_OP';
  constructor(readonly op: string) {
    super(`--backend pkcs11 measures sign operations only; ${op} is not one (use --embedded or --dir for verify, aes-gcm and random)`);
    this.name = 'UnsupportedOpError';
  }
}
