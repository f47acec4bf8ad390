// The crypto-user credentials file (issue 19 §2): opened once, and refused unless what was opened
// is a regular file, not a symbolic link, owned by the user running hsmproxy, mode 0600 or
// stricter. The checks hold for the descriptor that is then read, so a swapped path cannot slip
// another file in between the check and the read.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCredentials } from '../src/engine/credentials.js';

const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-creds-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

async function credsFile(name: string, mode: number, text = 'cu1:secret1\n'): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, text);
  await chmod(file, mode);
  return file;
}

t.test('a 0600 file owned by the user is read', async (t) => {
  t.same(await loadCredentials({ file: await credsFile('ok', 0o600) }), { user: 'cu1', password: 'secret1' });
  t.same(await loadCredentials({ file: await credsFile('ro', 0o400) }), { user: 'cu1', password: 'secret1' }, '0400 is stricter, so accepted');
});

t.test('a 0644 file is refused, naming the fix', async (t) => {
  await t.rejects(loadCredentials({ file: await credsFile('open', 0o644) }), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /readable by others \(mode 644\).*chmod 600/ });
  await t.rejects(loadCredentials({ file: await credsFile('group', 0o620) }), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /mode 620/ });
});

t.test('a symbolic link to a 0600 credentials file is refused', async (t) => {
  const target = await credsFile('target', 0o600);
  const link = join(dir, 'link');
  await symlink(target, link);
  await t.rejects(loadCredentials({ file: link }), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /credentials file .*link is a symbolic link/ });
  await t.rejects(loadCredentials({ env: { HSMPROXY_CREDENTIALS: link } }), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /symbolic link/ }, 'named by HSMPROXY_CREDENTIALS too');
});

t.test('a named pipe in the file\'s place is refused at once, not waited on', { skip: process.platform === 'win32' && 'no mkfifo' }, async (t) => {
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', ['-m', '600', fifo]);
  const outcome = await Promise.race([
    loadCredentials({ file: fifo }).then(() => 'read', (e: Error) => e.message),
    new Promise<string>((resolve) => setTimeout(() => resolve('still waiting after 2 s'), 2_000).unref()),
  ]);
  t.match(outcome, /credentials file .*fifo is not a regular file/);
});

t.test('a directory is refused', async (t) => {
  await t.rejects(loadCredentials({ file: dir }), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /not a regular file/ });
});

// Giving a file to another user needs root; elsewhere this case cannot be set up.
const root = process.getuid?.() === 0;
t.test('a 0600 file owned by another user is refused', { skip: !root && 'needs root to chown a file to another user' }, async (t) => {
  const file = await credsFile('theirs', 0o600);
  await chown(file, 65534, 65534);
  await t.rejects(loadCredentials({ file }), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /belongs to uid 65534, not to the user running hsmproxy \(uid 0\)/ });
});

t.test('a missing file is named', async (t) => {
  await t.rejects(loadCredentials({ file: join(dir, 'nope') }), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /cannot read credentials file .*nope \(ENOENT\)/ });
});
