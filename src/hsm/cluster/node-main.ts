// Process entry for one HSM node: `node node-main.(ts|js) --dir DIR --hsm ID [--port N]`.
// The cluster supervisor spawns it as `process.execPath [...process.execArgv, nodeMainPath()]`.
import { fileURLToPath } from 'node:url';
import { serveForeground } from './run-node.js';

/** Path of this entry file, with the extension of the running code (.ts under tsx, .js built). */
export function nodeMainPath(): string {
  return fileURLToPath(import.meta.url);
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = arg('--dir');
  const port = arg('--port');
  if (!dir) {
    process.stderr.write('usage: node-main --dir DIR [--hsm ID] [--port N]\n');
    process.exit(2);
  }
  serveForeground({ dir, hsmId: arg('--hsm'), ...(port !== undefined ? { port: Number(port) } : {}) }).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`hsm node: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
