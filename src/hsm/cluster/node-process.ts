// Entry point of one supervised HSM node process (spawned by supervisor.ts with an IPC channel):
// serves manifest entry --hsm through run-node.ts's startNode, reports the bound port to the
// parent over IPC, and exits when the parent goes away (the IPC channel closes even when the
// parent is SIGKILLed, which sends children no signal) or on SIGTERM/SIGINT, closing the store.
import { parseArgs } from 'node:util';
import { startNode } from './run-node.js';

/** Messages a node process sends its supervisor. */
export type NodeProcessMessage = { type: 'listening'; hsm: string; port: number } | { type: 'error'; hsm: string; message: string; code?: string };

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { dir: { type: 'string' }, hsm: { type: 'string' }, port: { type: 'string' }, 'scrypt-cost': { type: 'string' } },
  });
  if (!values.dir || !values.hsm) throw new Error('usage: node-process --dir DIR --hsm ID [--port N]');
  const node = await startNode({
    dir: values.dir,
    hsmId: values.hsm,
    ...(values.port !== undefined ? { port: Number(values.port) } : {}),
    ...(values['scrypt-cost'] ? { scryptCost: Number(values['scrypt-cost']) } : {}),
    // Only problems go to stderr (inherited by the supervisor); routine lines would flood it.
    log: (level, msg, fields) => {
      if (level !== 'info') process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level, hsm: values.hsm, msg, ...fields }) + '\n');
    },
  });
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    node.stop().finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('disconnect', stop);
  const msg: NodeProcessMessage = { type: 'listening', hsm: node.hsmId, port: node.port };
  // A supervisor that went away while we started closed the channel: stop, and never crash on the send.
  if (process.send) {
    if (process.connected) process.send(msg, () => undefined);
    else stop();
  } else process.stdout.write(`${node.hsmId} listening on port ${node.port}\n`);
}

main().catch((err: unknown) => {
  const e = err as { message?: string; code?: string };
  const msg: NodeProcessMessage = { type: 'error', hsm: '', message: e?.message ?? String(err), ...(e?.code ? { code: e.code } : {}) };
  if (process.send) {
    if (process.connected) process.send(msg, () => process.exit(1));
    else process.exit(1);
  }
  else {
    process.stderr.write(`hsm node: ${msg.message}\n`);
    process.exit(1);
  }
});
