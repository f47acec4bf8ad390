// Which modules a process (and the processes it starts) loads: a module hook, passed with
// --import (or in NODE_OPTIONS, which children inherit), appends every URL node resolves to the
// file named by $HSMPROXY_TEST_IMPORTS.
import { readFile } from 'node:fs/promises';

const hooks = `data:text/javascript,${encodeURIComponent(`
import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(process.env.HSMPROXY_TEST_IMPORTS, r.url + '\\n');
  return r;
}`)}`;

/** The module to preload: `--import=${importRecorder}`. */
export const importRecorder = `data:text/javascript,${encodeURIComponent(`import { register } from 'node:module'; register(${JSON.stringify(hooks)});`)}`;

/** The URLs recorded in `file`, in order (none if nothing was recorded). */
export async function recordedImports(file: string): Promise<string[]> {
  return (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);
}

/** Packages the CLI must not load to list its commands: each costs tenths of a second. */
export const HEAVY_PACKAGES = ['@peculiar/x509', 'pino', 'undici', 'prom-client', 'pkcs11js'];

/** Which of HEAVY_PACKAGES `urls` include. */
export function heavyIn(urls: string[]): string[] {
  return HEAVY_PACKAGES.filter((p) => urls.some((u) => u.includes(`/node_modules/${p}/`)));
}
