// `hsmproxy key wrap|unwrap|import-pub`: move a key from one cluster to another without it ever
// being in the clear. The HSM wraps an extractable key under a wrapping key (RSA-OAEP with SHA-256
// for secret keys, AES key wrap with padding, RFC 5649, for private keys too); the wrapped bytes
// are written to a file as they are, and the other cluster's HSM unwraps them into a new key.
// To get a wrapping key onto both clusters: make an RSA pair on the target, import its public key
// on the source (`key import-pub`), wrap an AES key under it there and unwrap it on the target.
import type { Command } from 'commander';
import type { KeyClass, KeyInfo, WrapMechanism } from '../../hsm/protocol/index.js';
import { readFlagFile, writeFlagFile, checkFlagFileWritable } from '../files.js';
import { resolveKey, withHsm, type HsmCommandOptions } from '../hsm-session.js';
import { UsageError, output } from '../run.js';
import { checkReferenceOut, writeGeneratedReference, writeReferenceOrUndo } from './keyref.js';

const MECHS: Record<string, WrapMechanism> = { 'rsa-oaep': 'rsa-oaep-wrap', 'aes-kwp': 'aes-key-wrap-pad' };

function common(c: Command): Command {
  return c.option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--hsm <id>', 'HSM id from cluster.json (default: the first)')
    .option('--json', 'print one JSON document');
}

function mechanism(name: string): WrapMechanism {
  const m = MECHS[name];
  if (!m) throw new UsageError(`--mech must be rsa-oaep or aes-kwp, got "${name}"`);
  return m;
}

/** The class of key a wrapping mechanism works with: an RSA public key wraps, its private half unwraps. */
function wrappingClass(m: WrapMechanism, side: 'wrap' | 'unwrap'): KeyClass {
  if (m === 'aes-key-wrap-pad') return 'secret';
  return side === 'wrap' ? 'public' : 'private';
}

/** Registers `key wrap`, `key unwrap` and `key import-pub` under the `key` group. */
export function register(program: Command): void {
  const key = program.commands.find((c) => c.name() === 'key') ?? program.command('key').description('keys in the HSM');

  common(key.command('wrap').description('write a key, encrypted under a wrapping key, to a file (the key must be extractable)'))
    .requiredOption('--key <key>', 'the key to wrap: id or label (a private or secret key)')
    .requiredOption('--wrapping-key <key>', 'id or label: an RSA public key (rsa-oaep) or an AES key (aes-kwp)')
    .requiredOption('--mech <mech>', 'rsa-oaep (secret keys; up to modulus bytes - 66) or aes-kwp (RFC 5649; any key)')
    .requiredOption('--out <file>', 'where to write the wrapped key')
    .option('--force', 'overwrite --out if it exists')
    .action(async (opts: HsmCommandOptions & {
      key: string; wrappingKey: string; mech: string; out: string; force?: boolean;
    }) => {
      const mech = mechanism(opts.mech);
      await checkFlagFileWritable('--out', opts.out, opts.force);
      const { target, wrapping, wrapped } = await withHsm(opts, async (c) => {
        const t = await resolveKey(c, opts.key, 'private');
        if (t.class === 'public') {
          throw new UsageError(`${t.keyId} "${t.label}" is a public key: export it with \`hsmproxy key export-pub\`; wrap its private half`);
        }
        if (!t.extractable) {
          throw new UsageError(`${t.keyId} "${t.label}" is not extractable, so no HSM will wrap it: only keys made with --extractable can leave the cluster`);
        }
        const w = await resolveKey(c, opts.wrappingKey, wrappingClass(mech, 'wrap'));
        const bytes = await c.wrap({ keyId: t.keyId, wrappingKeyId: w.keyId, mechanism: mech });
        return { target: t, wrapping: w, wrapped: bytes };
      });
      await writeFlagFile('--out', opts.out, wrapped, 0o600);
      const result = {
        keyId: target.keyId, wrappingKeyId: wrapping.keyId, mechanism: mech, out: opts.out, bytes: wrapped.length,
      };
      output(opts, result, () => {
        process.stdout.write(`wrapped ${target.class} key ${target.keyId} "${target.label}" under ${wrapping.keyId} (${opts.mech}): ${wrapped.length} bytes to ${opts.out}\n`);
      });
    });

  common(key.command('unwrap').description('make a key in the HSM from a wrapped key file'))
    .requiredOption('--in <file>', 'the wrapped key (from `hsmproxy key wrap`)')
    .requiredOption('--unwrapping-key <key>', 'id or label: the RSA private key (rsa-oaep) or the AES key (aes-kwp)')
    .requiredOption('--mech <mech>', 'rsa-oaep or aes-kwp, as it was wrapped')
    .requiredOption('--label <label>', 'label of the new key')
    .option('--class <class>', 'what the wrapped bytes are: private (a key pair) or secret (default: private for aes-kwp, secret for rsa-oaep)')
    .option('--type <type>', 'a secret key\'s type: aes or generic-secret (default: aes for 16 or 32 bytes)')
    .option('--extractable', 'the new key may be wrapped again (default: not)')
    .option('--out <file>', 'with a private key: where to write its key reference (fake PEM)')
    .option('--force', 'overwrite --out if it exists')
    .action(async (opts: HsmCommandOptions & {
      in: string; unwrappingKey: string; mech: string; label: string; class?: string; type?: string;
      extractable?: boolean; out?: string; force?: boolean;
    }) => {
      const mech = mechanism(opts.mech);
      const keyClass = opts.class ?? (mech === 'rsa-oaep-wrap' ? 'secret' : 'private');
      if (keyClass !== 'private' && keyClass !== 'secret') throw new UsageError(`--class must be private or secret, got "${keyClass}"`);
      if (opts.type !== undefined && (keyClass !== 'secret' || (opts.type !== 'aes' && opts.type !== 'generic-secret'))) {
        throw new UsageError('--type is aes or generic-secret, and only with --class secret');
      }
      if (opts.out && keyClass !== 'private') throw new UsageError('--out writes a key reference, which names a private key: drop --out for a secret key');
      if (opts.out) await checkReferenceOut(opts.out, opts.force);
      const wrapped = await readFlagFile('--in', opts.in);
      const made = await withHsm(opts, async (c) => {
        const u = await resolveKey(c, opts.unwrappingKey, wrappingClass(mech, 'unwrap'));
        return c.unwrap({
          unwrappingKeyId: u.keyId, mechanism: mech, wrapped, keyClass,
          ...(opts.type ? { keyType: opts.type as 'aes' | 'generic-secret' } : {}),
          template: { label: opts.label, extractable: opts.extractable === true },
        });
      }).catch((err: unknown) => {
        if ((err as { code?: unknown }).code === 'HSM_ERR_DECRYPT') {
          throw new UsageError(`${opts.in} does not unwrap with ${opts.unwrappingKey} (${opts.mech}): wrong key, wrong mechanism, or the file was altered`, 1);
        }
        throw err;
      });
      const out = opts.out;
      if (out) {
        const write = (): Promise<unknown> => writeGeneratedReference({ ...opts, out }, made.keyId);
        const undo = (): Promise<unknown> => withHsm(opts, (c) => c.deleteKey(made.keyId));
        await writeReferenceOrUndo({ keyId: made.keyId, label: opts.label }, out, write, undo);
      }
      output(opts, { keyId: made.keyId, key: made, ...(out ? { out } : {}) }, () => {
        process.stdout.write(`unwrapped ${describe(made)} "${made.label}" ${made.keyId}\n`);
        if (out) process.stdout.write(`  key reference written to ${out}\n`);
      });
    });

  common(key.command('import-pub').description('import a public key (SPKI PEM), e.g. another cluster\'s RSA key to wrap keys for it'))
    .requiredOption('--in <file>', 'the public key, PEM (as `hsmproxy key export-pub` or openssl writes it)')
    .requiredOption('--label <label>', 'label of the new key')
    .action(async (opts: HsmCommandOptions & { in: string; label: string }) => {
      const pem = (await readFlagFile('--in', opts.in)).toString('utf8');
      const k = await withHsm(opts, async (c) => {
        return c.importPublicKey({ key: pem, template: { label: opts.label } });
      });
      output(opts, { keyId: k.keyId, key: k }, () => process.stdout.write(`imported ${describe(k)} "${k.label}" ${k.keyId}\n`));
    });
}

function describe(k: KeyInfo): string {
  return `${k.class} ${k.type === 'ec' ? `ec ${k.curve ?? ''}` : `${k.type} ${k.size}`} key`;
}
