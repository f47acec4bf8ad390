// Validation of the `hsm:` section: which backend holds the keys and how to log in to it.
import { isAbsolute, resolve } from 'node:path';
import { readAutoscale } from './autoscale.js';
import { readHedge } from './hedge.js';
import { at, type Reader } from './reader.js';
import { CAPACITY_PROFILES, DEFAULTS, HSM_MODES, type HsmConfig } from './schema.js';

const HSM_KEYS = ['mode', 'dir', 'hsms', 'profile', 'manifest', 'module', 'allowedModules', 'token', 'sessions', 'credentials', 'signing', 'autoscale'] as const;
// Fields that only mean something for one mode; setting them elsewhere is a mistake worth naming.
const ONLY_FOR: Record<string, string> = { hsms: 'embedded', profile: 'embedded', manifest: 'cluster', module: 'pkcs11', allowedModules: 'pkcs11', token: 'pkcs11', sessions: 'pkcs11' };
// The autoscaler runs the simulated cluster's HSMs: no meaning for a PKCS#11 token.
const NOT_FOR_PKCS11 = ['autoscale'];

/** Reads `hsm:`; relative paths are resolved against `baseDir`. */
export function readHsm(r: Reader, v: unknown, path: string): HsmConfig | undefined {
  const d = DEFAULTS.hsm;
  const o = v === undefined ? {} : r.object(v, path, HSM_KEYS);
  if (!o) return undefined;
  const mode = (r.string(o.mode, at(path, 'mode'), { def: d.mode, oneOf: HSM_MODES }) ?? d.mode) as HsmConfig['mode'];
  for (const [key, only] of Object.entries(ONLY_FOR)) {
    if (o[key] !== undefined && only !== mode) r.fail(at(path, key), `only used with mode: ${only} (mode is ${mode})`);
  }
  const dir = r.string(o.dir, at(path, 'dir'), { def: d.dir }) ?? d.dir;
  const hsms = r.integer(o.hsms, at(path, 'hsms'), { def: d.hsms, min: 1, max: 32, what: 'a number of HSMs' });
  const profile = r.string(o.profile, at(path, 'profile'), { def: d.profile, oneOf: CAPACITY_PROFILES }) as HsmConfig['profile'] | undefined;
  const manifest = r.file(o.manifest, at(path, 'manifest'), { optional: mode !== 'cluster' });
  // pkcs11: key references record module and token. token overrides; module overrides the recorded
  // module, or else allowedModules lists those a reference may name (never the reference's own say).
  const module = r.file(o.module, at(path, 'module'), { optional: true });
  const allowedModules = readAllowedModules(r, o.allowedModules, at(path, 'allowedModules'));
  if (mode === 'pkcs11') checkModuleChoice(r, path, o.module, o.allowedModules);
  const token = r.string(o.token, at(path, 'token'), { optional: true });
  // One PKCS#11 session per signature in flight, per token; the CLI entry sizes libuv's pool to match.
  const sessions = r.integer(o.sessions, at(path, 'sessions'), { def: d.sessions, min: 1, max: 1000, what: 'a number of PKCS#11 sessions' });
  const credentials = readCredentials(r, o.credentials, at(path, 'credentials'));
  const signing = readSigning(r, o.signing, at(path, 'signing'));
  for (const key of NOT_FOR_PKCS11) if (o[key] !== undefined && mode === 'pkcs11') r.fail(at(path, key), 'only used with mode: embedded or cluster (mode is pkcs11)');
  const autoscale = o.autoscale === undefined || mode === 'pkcs11' ? undefined : readAutoscale(r, o.autoscale, at(path, 'autoscale'));
  if (hsms === undefined || sessions === undefined || !profile || !credentials || !signing) return undefined;
  return {
    mode, dir: resolve(r.baseDir, dir), hsms, profile, sessions, credentials, signing,
    ...(manifest !== undefined ? { manifest } : {}),
    ...(module !== undefined ? { module } : {}),
    ...(allowedModules !== undefined ? { allowedModules } : {}),
    ...(token !== undefined ? { token } : {}),
    ...(autoscale !== undefined ? { autoscale } : {}),
  };
}

/**
 * hsm.allowedModules: absolute paths only. Not checked to exist: one config may list the module
 * paths of several kinds of machine, and a missing module can never be loaded anyway.
 */
function readAllowedModules(r: Reader, v: unknown, path: string): string[] | undefined {
  if (v === undefined) return undefined;
  return r.list(v, path, (item, p) => {
    const s = r.string(item, p);
    if (s !== undefined && !isAbsolute(s)) return r.fail(p, `expected the absolute path of a PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so), got "${s}"`);
    return s;
  }, { minItems: 1 });
}

/**
 * A key reference is not trusted to choose the module loaded into this process (it holds no
 * secret and is copied between machines): pkcs11 mode needs exactly one of the operator's choices.
 */
function checkModuleChoice(r: Reader, path: string, module: unknown, allowed: unknown): void {
  if (module === undefined && allowed === undefined) {
    r.fail(path, 'mode pkcs11 needs module (the PKCS#11 module every key reference is opened through) or allowedModules (the modules key references may name), e.g. module: /usr/lib/softhsm/libsofthsm2.so');
  } else if (module !== undefined && allowed !== undefined) {
    r.fail(at(path, 'allowedModules'), 'not used with hsm.module (which opens every key reference through one module); set one of them');
  }
}

function readCredentials(r: Reader, v: unknown, path: string): HsmConfig['credentials'] | undefined {
  if (v === undefined) return { ...DEFAULTS.hsm.credentials };
  const o = r.object(v, path, ['env', 'file']);
  if (!o) return undefined;
  if ((o.env === undefined) === (o.file === undefined)) return r.fail(path, 'expected exactly one of env (a variable name) or file (a 0600 file)');
  if (o.env !== undefined) {
    const env = r.string(o.env, at(path, 'env'));
    if (env !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(env)) return r.fail(at(path, 'env'), `expected an environment variable name, got "${env}"`);
    return env === undefined ? undefined : { env };
  }
  const file = r.file(o.file, at(path, 'file'), { secret: true });
  return file === undefined ? undefined : { file };
}

function readSigning(r: Reader, v: unknown, path: string): HsmConfig['signing'] | undefined {
  const d = DEFAULTS.hsm.signing;
  const o = v === undefined ? {} : r.object(v, path, ['maxInFlight', 'timeoutMs', 'maxQueue', 'shedFullHandshakesAt', 'hedge']);
  if (!o) return undefined;
  const maxInFlight = r.integer(o.maxInFlight, at(path, 'maxInFlight'), { def: d.maxInFlight, min: 1, max: 1_000_000 });
  const timeoutMs = r.integer(o.timeoutMs, at(path, 'timeoutMs'), { def: d.timeoutMs, min: 1, max: 600_000, what: 'milliseconds' });
  const maxQueue = r.integer(o.maxQueue, at(path, 'maxQueue'), { def: d.maxQueue, min: 0, max: 1_000_000 });
  const shedFullHandshakesAt = r.integer(o.shedFullHandshakesAt, at(path, 'shedFullHandshakesAt'), { def: d.shedFullHandshakesAt, min: 0, max: 1_000_000 });
  const hedge = readHedge(r, o.hedge, at(path, 'hedge'));
  if (maxInFlight === undefined || timeoutMs === undefined || maxQueue === undefined
    || shedFullHandshakesAt === undefined || hedge === undefined) return undefined;
  // Shedding full handshakes only once the queue is full would shed resumptions' neighbours too late.
  if (shedFullHandshakesAt > maxQueue) r.fail(at(path, 'shedFullHandshakesAt'), `must not be above maxQueue (${maxQueue})`);
  return { maxInFlight, timeoutMs, maxQueue, shedFullHandshakesAt, hedge };
}
