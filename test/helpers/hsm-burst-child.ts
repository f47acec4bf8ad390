// Child process for the crash test: opens an existing HSM, logs in as a CU, and creates token
// keys one after another, printing each key id only once its creation was acknowledged.
// The parent kill -9s this process mid-burst. Bounded: stops after `max` keys. With `hold`
// instead of a count it just keeps the HSM open until killed.
import { Hsm } from '../../src/hsm/device/index.js';

const [dir, user, password, maxArg] = process.argv.slice(2);
if (!dir || !user || !password) {
  process.stderr.write('usage: hsm-burst-child DIR USER PASSWORD [MAX]\n');
  process.exit(2);
}
const hsm = await Hsm.open({ dir, hsmId: 'crash-test', scryptCost: 1024 });
const s = await hsm.login(user, password);
process.stdout.write('ready\n');
if (maxArg === 'hold') {
  // Keep the HSM open until the parent kills this process (lock test).
  setInterval(() => undefined, 60_000);
  await new Promise(() => undefined);
}
const max = Number(maxArg ?? 500);
for (let i = 0; i < max; i++) {
  const k = await hsm.generateKey(s, 'aes:256', { label: `burst-${i}` });
  process.stdout.write(`${k.result.keyId}\n`);
}
await hsm.close();
