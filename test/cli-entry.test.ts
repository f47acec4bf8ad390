// The `hsmproxy` executable run from the source tree (README's `npm run hsmproxy -- …`): the
// CommonJS launcher registers tsx in-process, and the processes it forks (HSM nodes of
// `cluster start`) must get the loader too, or they die on their .ts entry files.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startClusterCommand } from './helpers/cli.js';
import { cliInProcess } from './helpers/hsm-cluster.js';

const entry = fileURLToPath(new URL('../src/cli/entry.cjs', import.meta.url));

t.test('cluster start through the source-tree launcher runs its HSM node processes, from any directory', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-entry-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const init = await cliInProcess(['cluster', 'init', '--dir', dir, '--hsms', '1', '--json']);
  t.error(init.error);
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  // Plain node (spawn passes no execArgv), as npm runs the script: none of this test runner's loaders.
  // Started outside the clone, where a bare `--import=tsx` for the nodes finds no tsx package.
  const { child, output } = await startClusterCommand(t, process.execPath, [entry, 'cluster', 'start', '--dir', '.'], { cwd: dir, env });
  const out = output();
  t.match(out, /hsm-1 running \(pid \d+\)/, 'the HSM node process started');
  t.notMatch(out, /ERR_UNKNOWN_FILE_EXTENSION|Cannot find package|exited/, 'no node died on its .ts entry or its loader');
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', (c) => r(c))));
  t.equal(code, 0, 'SIGTERM stops the cluster cleanly');
});
