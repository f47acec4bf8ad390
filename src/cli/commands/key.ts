// `hsmproxy key …`: crypto users make, list, share and delete keys inside the HSM.
// `--key K` takes a key id or a label. Talks to the cluster (one HSM with --hsm) through withHsm.
import type { Command } from 'commander';
import { writeFlagFile } from '../files.js';
import type { KeyInfo, KeyPairSpec, SecretKeySpec } from '../../hsm/protocol/index.js';
import { resolveKey, withHsm, type HsmClient, type HsmCommandOptions } from '../hsm-session.js';
import { UsageError, output } from '../run.js';
import { checkReferenceOut, duplicateLabelError, writeGeneratedReference, writeReferenceOrUndo } from './keyref.js';
import { deletePkcs11KeyNamed, generatePkcs11Key, listPkcs11Keys, withPkcs11Backend, type Pkcs11CliOptions } from './key-pkcs11.js';

const PAIR_TYPES: KeyPairSpec[] = ['rsa:2048', 'rsa:3072', 'rsa:4096', 'ec:p256', 'ec:p384'];
const SECRET_TYPES: SecretKeySpec[] = ['aes:128', 'aes:256'];

function common(c: Command): Command {
  return c.option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--hsm <id>', 'HSM id from cluster.json (default: the first)')
    .option('--json', 'print one JSON document');
}

/** One line per key, for people. */
function describeKey(k: KeyInfo): string {
  const algo = k.type === 'ec' ? `ec ${k.curve ?? ''}` : `${k.type} ${k.size}`;
  const shared = k.sharedWith.length > 0 ? ` shared with ${k.sharedWith.join(',')}` : '';
  return `${k.keyId}  ${k.class.padEnd(7)} ${algo.padEnd(12)} ${k.token ? 'token  ' : 'session'} owner ${k.owner}${shared}  "${k.label}"`;
}

/** Registers the `key` command group (shared with other modules' key subcommands). */
export function register(program: Command): void {
  const key = program.commands.find((c) => c.name() === 'key') ?? program.command('key').description('keys in the HSM');

  withPkcs11Backend(common(key.command('generate').description('generate a key pair or secret key inside the HSM')), { writesReference: true })
    .requiredOption('--type <type>', [...PAIR_TYPES, ...SECRET_TYPES].join('|'))
    .requiredOption('--label <label>', 'label (names the key in later commands)')
    .option('--session', 'a session key: not persisted, gone when this command ends (token keys persist)')
    .option('--allow-duplicate-label', 'generate even if a key already has this label (later commands then need the key id)')
    .option('--extractable', 'the key may leave the HSM wrapped (`hsmproxy key wrap`), e.g. to move it to another cluster (default: never)')
    .action(async (opts: HsmCommandOptions & Pkcs11CliOptions & {
      backend?: string; type: string; label: string; session?: boolean; out?: string; force?: boolean;
      allowDuplicateLabel?: boolean; extractable?: boolean;
    }) => {
      if (opts.backend === 'pkcs11') {
        // A session object would vanish with this command's session: the reference would name nothing.
        if (opts.session) throw new UsageError('--session is not available with --backend pkcs11: a session key is gone when this command ends; drop --session for a token key');
        if (opts.extractable) throw new UsageError('--extractable is not available with --backend pkcs11');
        return generatePkcs11Key(opts);
      }
      const template = { label: opts.label, token: !opts.session, ...(opts.extractable ? { extractable: true } : {}) };
      // Every later `--key LABEL` would name several keys.
      const refuseDuplicate = async (c: HsmClient): Promise<void> => {
        if (opts.allowDuplicateLabel) return;
        const same = await c.findKeys({ label: opts.label });
        if (same.length > 0) throw duplicateLabelError(opts.label, [...new Set(same.map((k) => k.pairKeyId && k.class === 'public' ? k.pairKeyId : k.keyId))]);
      };
      if ((PAIR_TYPES as string[]).includes(opts.type)) {
        if (opts.out && opts.session) throw new UsageError('a session key is gone when this command ends, so a reference to it would be useless: drop --session or --out');
        if (opts.out) await checkReferenceOut(opts.out, opts.force);
        const kp = await withHsm(opts, async (c) => {
          await refuseDuplicate(c);
          return c.generateKeyPair(opts.type as KeyPairSpec, template);
        });
        const out = opts.out;
        if (out) {
          const keyId = kp.privateKey.keyId;
          const write = (): Promise<unknown> => writeGeneratedReference({ ...opts, out }, keyId);
          const undo = (): Promise<unknown> => withHsm(opts, (c) => c.deleteKey(keyId));
          await writeReferenceOrUndo({ keyId, label: opts.label }, out, write, undo);
        }
        output(opts, {
          keyId: kp.privateKey.keyId, publicKeyId: kp.publicKey.keyId, privateKey: kp.privateKey,
          publicKey: kp.publicKey, ...(opts.out ? { out: opts.out } : {})
        }, () => {
          process.stdout.write(`generated ${opts.type} key pair "${opts.label}"\n  private ${kp.privateKey.keyId}\n  public  ${kp.publicKey.keyId}\n`);
          if (opts.out) process.stdout.write(`  key reference written to ${opts.out}\n`);
        });
      } else if ((SECRET_TYPES as string[]).includes(opts.type)) {
        const k = await withHsm(opts, async (c) => {
          await refuseDuplicate(c);
          return c.generateKey(opts.type as SecretKeySpec, template);
        });
        output(opts, { keyId: k.keyId, key: k }, () => process.stdout.write(`generated ${opts.type} key "${opts.label}" ${k.keyId}\n`));
      } else {
        throw new UsageError(`--type must be one of ${[...PAIR_TYPES, ...SECRET_TYPES].join(', ')}`);
      }
    });

  withPkcs11Backend(common(key.command('list').description('keys you own or that are shared with you')))
    .option('--label <label>', 'only keys with this label')
    .action(async (opts: HsmCommandOptions & Pkcs11CliOptions & { backend?: string; label?: string }) => {
      if (opts.backend === 'pkcs11') return listPkcs11Keys(opts);
      const keys = await withHsm(opts, (c) => c.findKeys(opts.label !== undefined ? { label: opts.label } : {}));
      output(opts, keys, () => {
        if (keys.length === 0) process.stdout.write('no keys\n');
        for (const k of keys) process.stdout.write(describeKey(k) + '\n');
      });
    });

  common(key.command('show').description("a key's attributes"))
    .requiredOption('--key <key>', 'key id or label')
    .action(async (opts: HsmCommandOptions & { key: string }) => {
      const k = await withHsm(opts, (c) => resolveKey(c, opts.key, 'private'));
      output(opts, k, () => {
        for (const [name, v] of Object.entries(k)) process.stdout.write(`${name.padEnd(12)} ${Array.isArray(v) ? v.join(', ') : String(v)}\n`);
      });
    });

  withPkcs11Backend(common(key.command('delete').description('delete a key you own (both halves of a key pair)')))
    .requiredOption('--key <key>', 'key id or label (with --backend pkcs11 also a key reference file)')
    .action(async (opts: HsmCommandOptions & Pkcs11CliOptions & { backend?: string; key: string }) => {
      if (opts.backend === 'pkcs11') return deletePkcs11KeyNamed(opts);
      const k = await withHsm(opts, async (c) => {
        const found = await resolveKey(c, opts.key, 'private');
        await c.deleteKey(found.keyId);
        return found;
      });
      output(opts, { deleted: k.keyId, pairKeyId: k.pairKeyId ?? null }, () => process.stdout.write(`deleted key ${k.keyId} "${k.label}"\n`));
    });

  for (const verb of ['share', 'unshare'] as const) {
    common(key.command(verb).description(verb === 'share' ? 'let another crypto user use a key you own' : 'stop sharing a key with a crypto user'))
      .requiredOption('--key <key>', 'key id or label')
      .requiredOption('--user <user>', 'the crypto user')
      .action(async (opts: HsmCommandOptions & { key: string; user: string }) => {
        const k = await withHsm(opts, async (c) => {
          const found = await resolveKey(c, opts.key, 'private');
          return verb === 'share' ? c.shareKey(found.keyId, opts.user) : c.unshareKey(found.keyId, opts.user);
        });
        output(opts, k, () => process.stdout.write(`${verb === 'share' ? 'shared' : 'unshared'} key ${k.keyId} ${verb === 'share' ? 'with' : 'from'} ${opts.user}; shared with: ${k.sharedWith.join(', ') || 'nobody'}\n`));
      });
  }

  common(key.command('export-pub').description('write the public key (SPKI PEM) of a key pair'))
    .requiredOption('--key <key>', 'key id or label')
    .option('--out <file>', 'output file (default: standard output)')
    .action(async (opts: HsmCommandOptions & { key: string; out?: string }) => {
      const { k, pem } = await withHsm(opts, async (c) => {
        const found = await resolveKey(c, opts.key, 'public');
        return { k: found, pem: (await c.exportPublicKey(found.keyId)).pem };
      });
      if (opts.out) await writeFlagFile('--out', opts.out, pem);
      output(opts, { keyId: k.keyId, out: opts.out ?? null, pem }, () => {
        if (opts.out) process.stdout.write(`wrote the public key of ${k.keyId} "${k.label}" to ${opts.out}\n`);
        else process.stdout.write(pem);
      });
    });
}
