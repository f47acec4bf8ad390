// Runs the real hsmproxy CLI with the sim backend pointed at a FakeHsm persisted in a directory,
// so CLI tests exercise commands, exit codes and messages without an HSM process.
// As an entry file: reads FAKE_HSM_DIR and FAKE_HSM_CLUSTER from the environment.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { CliResult } from './cli.js';

const self = fileURLToPath(import.meta.url);

/** Spawns `hsmproxy ...args` whose sim backend is the FakeHsm stored in `hsmDir`. */
export function runCliWithFakeHsm(args: string[], opts: { hsmDir: string; clusterId: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import=tsx', self, ...args], {
      env: { ...process.env, HSMPROXY_PIN: undefined, ...opts.env, FAKE_HSM_DIR: opts.hsmDir, FAKE_HSM_CLUSTER: opts.clusterId },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

if (process.argv[1] === self) {
  const { FakeHsm } = await import('./fake-hsm.js');
  const { SimBackend, loadCredentials, normaliseClusterId, OtherClusterError } = await import('../../src/engine/index.js');
  const { backendOpeners } = await import('../../src/cli/engine-options.js');
  const { buildProgram } = await import('../../src/cli/main.js');
  const { runMain } = await import('../../src/cli/run.js');
  const clusterId = process.env.FAKE_HSM_CLUSTER!;
  backendOpeners.sim = async (opts, ref) => {
    if (ref?.backend === 'sim' && normaliseClusterId(ref.clusterId) !== normaliseClusterId(clusterId)) throw new OtherClusterError(ref.source ?? 'the key reference', ref.clusterId, clusterId);
    const credentials = await loadCredentials({ file: opts.credentials });
    return new SimBackend({ client: new FakeHsm(process.env.FAKE_HSM_DIR!), clusterId, credentials });
  };
  runMain(buildProgram);
}
