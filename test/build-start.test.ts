// `npm start` (README's first command) builds, then runs the compiled CLI. The build must be one
// that a second start can skip: tsc's build mode compares the sources with the build info it
// wrote under dist/ and does nothing when they are older ("is up to date"), while a fresh clone
// (no dist/) or an edited source builds again. Speed itself is measured, not asserted here.
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packageRoot } from '../src/app/serve.js';

const root = packageRoot();
const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
const tsconfig = (name: string) => readFile(join(root, name), 'utf8').then((s) => JSON.parse(s) as { extends?: string; compilerOptions?: Record<string, unknown> });

t.test('npm start builds incrementally and runs the built JS', async (t) => {
  t.match(pkg.scripts.start, /^npm run build --silent && node dist\/src\/cli\/entry\.cjs serve$/, 'start runs the compiled CLI (its launcher) after the build');
  const m = /^tsc -b (\S+)$/.exec(pkg.scripts.build);
  t.ok(m, `build uses tsc's build mode (up-to-date check), got "${pkg.scripts.build}"`);
  const build = await tsconfig(m?.[1] ?? 'tsconfig.build.json');
  const base = build.extends ? await tsconfig(build.extends) : {};
  const opts = { ...base.compilerOptions, ...build.compilerOptions };
  t.equal(opts.incremental, true, 'incremental');
  t.match(String(opts.tsBuildInfoFile), /^dist\//, 'the build info lives under dist/: removing dist/ (or a fresh clone) builds everything');
  t.not(opts.tsBuildInfoFile, base.compilerOptions?.tsBuildInfoFile, 'not shared with the typecheck (tsc --noEmit) build info');
});
