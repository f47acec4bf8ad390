import t from 'tap';
import { runCli } from './helpers/cli.js';

t.test('an unknown command is a one-line error and a non-zero exit', async (t) => {
  const r = await runCli(['no-such-command']);
  t.not(r.code, 0);
  t.match(r.stderr, /unknown command|too many arguments/);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

t.test('--version prints the version', async (t) => {
  const r = await runCli(['--version']);
  t.equal(r.code, 0);
  t.match(r.stdout, /^\d+\.\d+\.\d+/);
});
