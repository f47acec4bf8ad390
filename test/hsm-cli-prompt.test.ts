// Without HSMPROXY_PIN / HSMPROXY_NEW_PASSWORD, a person at a terminal is asked: the CLI runs
// under a pseudo-terminal (python3's pty module plays the person), reads the name and password
// without echoing them, and works; a new password is asked twice and a mismatch is refused.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { startNode } from '../src/hsm/cluster/run-node.js';
import { cliEntry, repoRoot } from './helpers/cli.js';
import { activate, tempCluster, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

t.setTimeout(90_000);
// .ci/run installs python3; elsewhere its absence is a skip, not a failure.
const noPython = spawnSync('python3', ['--version']).status !== 0;

// Runs the CLI on a pty; each [prompt, reply] is answered when the prompt shows. Output is stdout+stderr as the terminal shows them.
const DRIVER = `
import json, os, pty, select, signal, sys, time
spec = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execve(spec['argv'][0], spec['argv'], spec['env'])
out, seen, answers = b'', 0, list(spec['answers'])
end = time.time() + 30
while time.time() < end:
    r, _, _ = select.select([fd], [], [], 0.2)
    if fd in r:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
    if answers:
        i = out.find(answers[0][0].encode(), seen)
        if i >= 0:
            seen = i + len(answers[0][0])
            os.write(fd, (answers.pop(0)[1] + '\\r').encode())
if time.time() >= end:
    os.kill(pid, signal.SIGKILL)
_, status = os.waitpid(pid, 0)
print(json.dumps({'out': out.decode('utf8', 'replace'), 'code': os.waitstatus_to_exitcode(status)}))
`;

function onTerminal(args: string[], answers: Array<[string, string]>, env: Record<string, string>): Promise<{ out: string; code: number }> {
  const spec = { argv: [process.execPath, '--import=tsx', cliEntry, ...args], env: { ...process.env, ...env, HSMPROXY_PIN: '', HSMPROXY_NEW_PASSWORD: '' }, answers };
  return new Promise((resolve, reject) => {
    const py = spawn('python3', ['-c', DRIVER, JSON.stringify(spec)], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    py.stdout.setEncoding('utf8').on('data', (d: string) => { text += d; });
    py.on('error', reject);
    py.on('close', () => {
      try {
        resolve(JSON.parse(text) as { out: string; code: number });
      } catch {
        reject(new Error(`pty driver said: ${text}`));
      }
    });
  });
}

if (noPython) {
  t.test('terminal prompts', { skip: 'python3 (for its pty module) is not installed' }, async () => {});
} else {
  const cluster = await tempCluster();
  const node = await startNode({ dir: cluster.dir, port: cluster.manifest.hsms[0]!.port, scryptCost: TEST_SCRYPT_COST, log: () => undefined });
  await activate(cluster, node.port);
  t.teardown(async () => {
    await node.stop();
    await cluster.cleanup();
  });
  const env = { HSMPROXY_DIR: cluster.dir };

  t.test('the name and password are asked at the terminal, not echoed, and the command runs as that user', async (t) => {
    const r = await onTerminal(['key', 'generate', '--type', 'ec:p256', '--label', 'typed-in', '--json'], [['HSM user name: ', 'alice'], ['password: ', 'cu-password']], env);
    if (!t.equal(r.code, 0, 'exit code 0')) t.comment(r.out);
    t.match(r.out, /"label": "typed-in"/, 'the key was made');
    t.match(r.out, /"owner": "alice"/, 'by the user typed in');
    t.notMatch(r.out, /cu-password/, 'the password never appears on the terminal');
  });

  t.test('a new password is asked twice; two different answers are refused and change nothing', async (t) => {
    // The new password is asked first, so a mismatch costs no login.
    const r = await onTerminal(['user', 'passwd'], [['new password for yourself: ', 'first-try-1'], ['again: ', 'other-try-2']], env);
    t.not(r.code, 0);
    t.match(r.out, /the two passwords differ; try again/);
    t.notMatch(r.out, /HSM user name/, 'and stops before asking who you are');
    t.notMatch(r.out, /first-try-1|other-try-2/, 'neither answer was echoed');
    const ok = await onTerminal(['key', 'list', '--json'], [['HSM user name: ', 'alice'], ['password: ', 'cu-password']], env);
    t.equal(ok.code, 0, 'the old password still works');
  });
}
