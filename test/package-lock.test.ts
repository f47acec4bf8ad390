// package-lock.json is committed in sync with package.json, so `npm install` on a fresh clone
// leaves it as it is (npm rewrites the lock's root entry when the manifest says otherwise, as it
// did while the lock still named the old bin).
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from './helpers/cli.js';

type Manifest = Record<string, unknown>;
const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as Manifest;
const lock = JSON.parse(await readFile(join(repoRoot, 'package-lock.json'), 'utf8')) as Manifest & { packages: Record<string, Manifest> };

t.test("the lock's root entry says what package.json says", async (t) => {
  t.equal(lock.name, pkg.name);
  t.equal(lock.version, pkg.version);
  const root = lock.packages[''] ?? {};
  for (const field of ['name', 'version', 'license', 'bin', 'engines', 'dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies']) {
    t.same(root[field], pkg[field], field);
  }
});

t.test('every dependency is locked', async (t) => {
  const deps = { ...(pkg.dependencies as Record<string, string>), ...(pkg.devDependencies as Record<string, string>) };
  for (const name of Object.keys(deps)) t.ok(lock.packages[`node_modules/${name}`], name);
});
