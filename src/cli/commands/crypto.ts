// `hsmproxy crypto …`: sign and verify files with keys held in the HSM.
import type { Command } from 'commander';
import type { SignMechanism } from '../../hsm/protocol/index.js';
import { readFlagFile, writeFlagFile } from '../files.js';
import { resolveKey, withHsm, type HsmCommandOptions } from '../hsm-session.js';
import { UsageError, output } from '../run.js';

const MECHS: SignMechanism[] = [
  'rsa-pss-sha256', 'rsa-pss-sha384', 'rsa-pss-sha512', 'rsa-pkcs1-sha256', 'rsa-pkcs1-sha384', 'rsa-pkcs1-sha512',
  'ecdsa-sha256', 'ecdsa-sha384', 'hmac-sha256', 'hmac-sha384', 'hmac-sha512',
];

function common(c: Command): Command {
  return c.option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--hsm <id>', 'HSM id from cluster.json (default: the first)')
    .requiredOption('--key <key>', 'key id or label')
    .requiredOption('--in <file>', 'the data (signed as is; the HSM hashes it)')
    .requiredOption('--mech <mechanism>', MECHS.join('|'))
    .option('--json', 'print one JSON document');
}

function mechanism(m: string): SignMechanism {
  if (!(MECHS as string[]).includes(m)) throw new UsageError(`--mech must be one of ${MECHS.join(', ')}`);
  return m as SignMechanism;
}

/** Registers the `crypto` command group. */
export function register(program: Command): void {
  const crypto = program.commands.find((c) => c.name() === 'crypto') ?? program.command('crypto').description('sign and verify with keys in the HSM');

  common(crypto.command('sign').description('sign a file; ECDSA signatures are DER, as openssl dgst expects'))
    .requiredOption('--out <file>', 'where to write the signature')
    .action(async (opts: HsmCommandOptions & { key: string; in: string; mech: string; out: string }) => {
      const mech = mechanism(opts.mech);
      const data = await readFlagFile('--in', opts.in);
      const { keyId, sig } = await withHsm(opts, async (c) => {
        const k = await resolveKey(c, opts.key, mech.startsWith('hmac') ? 'secret' : 'private');
        return { keyId: k.keyId, sig: await c.sign({ keyId: k.keyId, mechanism: mech, data }) };
      });
      await writeFlagFile('--out', opts.out, sig);
      output(opts, { keyId, mechanism: mech, out: opts.out, signature: sig.toString('base64') }, () => {
        process.stdout.write(`wrote a ${sig.length}-byte ${mech} signature by ${keyId} to ${opts.out}\n`);
      });
    });

  common(crypto.command('verify').description('verify a signature; exit 1 if it does not verify'))
    .requiredOption('--sig <file>', 'the signature')
    .action(async (opts: HsmCommandOptions & { key: string; in: string; mech: string; sig: string }) => {
      const mech = mechanism(opts.mech);
      const data = await readFlagFile('--in', opts.in);
      const signature = await readFlagFile('--sig', opts.sig);
      const { keyId, ok } = await withHsm(opts, async (c) => {
        let k = await resolveKey(c, opts.key, mech.startsWith('hmac') ? 'secret' : 'public');
        // Given a private key's id, verify with its public half (the private object may not verify).
        if (k.class === 'private' && k.pairKeyId) k = await c.getKey(k.pairKeyId);
        return { keyId: k.keyId, ok: await c.verify({ keyId: k.keyId, mechanism: mech, data, signature }) };
      });
      output(opts, { keyId, mechanism: mech, valid: ok }, () => {
        if (ok) process.stdout.write(`signature OK (${mech}, key ${keyId})\n`);
      });
      if (!ok) throw new UsageError(`signature does NOT verify with key ${keyId} and ${mech}`, 1);
    });
}
