// `hsmproxy pkcs11 …`: keys on a PKCS#11 token (SoftHSMv2, CloudHSM, Luna…).
//   pkcs11 tokens                      list the tokens a module offers (no login)
//   pkcs11 key generate|list|delete    manage key pairs; generate writes a key reference
//   pkcs11 key reference               a key reference for a key made elsewhere (pkcs11-tool…)
// The actions are exported so `hsmproxy key … --backend pkcs11` can call the same code.
// The PIN comes from HSMPROXY_PIN (or HSMPROXY_CREDENTIALS), never from a flag.
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { Option } from 'commander';
import { readKeyRef, writeKeyReference } from '../../engine/keyref.js';
import { describeAlgorithm } from '../../engine/algorithm.js';
import { openPkcs11Backend, publicKeyFingerprint } from '../../engine/pkcs11/backend.js';
import type { Pkcs11Backend, Pkcs11Key } from '../../engine/pkcs11/backend.js';
import { parseKeySpec } from '../../engine/pkcs11/keys.js';
import { listTokens, loadModule } from '../../engine/pkcs11/module.js';
import { allowedModulePath } from '../../engine/pkcs11/module-allowlist.js';
import type { TokenSelector } from '../../engine/pkcs11/module.js';
import type { PinFormat } from '../../engine/pkcs11/token.js';
import { parsePkcs11Uri } from '../../engine/pkcs11/uri.js';
import { allowedModulesFromEnv, CLI_ALLOW_HINT } from '../engine-options.js';
import { output, UsageError } from '../run.js';

/** Options shared by every pkcs11 key command. */
export interface Pkcs11CliOptions {
  module?: string;
  token?: string;
  slot?: string;
  pinFormat?: PinFormat;
  json?: boolean;
}

const MODULE_HINT = 'pass --module with the path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so)';

function requireModule(opts: Pkcs11CliOptions): string {
  if (!opts.module) throw new UsageError(`no PKCS#11 module: ${MODULE_HINT}`);
  return opts.module;
}

function tokenSelector(opts: Pkcs11CliOptions): TokenSelector {
  if (opts.slot !== undefined) {
    if (!/^\d+$/.test(opts.slot)) throw new UsageError(`--slot must be a slot id number, got "${opts.slot}"`);
    return { label: opts.token, slot: Number(opts.slot) };
  }
  if (!opts.token) throw new UsageError('no token: pass --token LABEL (or --slot N); `hsmproxy pkcs11 tokens --module M` lists them');
  return { label: opts.token };
}

async function withBackend<T>(
  module: string, token: TokenSelector, opts: Pkcs11CliOptions, fn: (b: Pkcs11Backend) => Promise<T>,
): Promise<T> {
  const backend = await openPkcs11Backend({ module, token, pinFormat: opts.pinFormat, poolSize: 1 });
  try {
    return await fn(backend);
  } finally {
    await backend.close();
  }
}

/** A key as the CLI prints it (and as --json emits it). */
interface KeyJson { keyId: string; label: string; type: string; uri: string; publicKeySha256: string }

function keyJson(k: Pkcs11Key): KeyJson {
  return {
    keyId: k.id.toString('hex'), label: k.label,
    type: describeAlgorithm(k.keyType === 'rsa' ? { type: 'rsa', bits: k.bits ?? 0 } : { type: 'ec', curve: k.curve ?? 'P-256' }),
    uri: k.uri, publicKeySha256: publicKeyFingerprint(k.publicKey),
  };
}

/** `key generate --backend pkcs11`: a key pair on the token, and its reference written to `out`. */
export async function generatePkcs11Key(
  opts: Pkcs11CliOptions & { type?: string; label?: string; out?: string; force?: boolean },
): Promise<void> {
  const module = requireModule(opts);
  const token = tokenSelector(opts);
  if (!opts.type) throw new UsageError('no key type: pass --type rsa:2048, rsa:3072, rsa:4096, ec:p256 or ec:p384');
  if (!opts.label) throw new UsageError('no label: pass --label NAME (how the key is found and listed on the token)');
  if (!opts.out) throw new UsageError('no output file: pass --out ref.pem (where the key reference is written)');
  let spec;
  try {
    spec = parseKeySpec(opts.type);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { out, label } = opts;
  // Refuse before generating: a key without its reference is an orphan on the token.
  if (!opts.force && existsSync(out)) throw new UsageError(`${out} already exists; remove it, choose another --out, or pass --force`);
  const result = await withBackend(module, token, opts, async (b) => {
    const key = await b.generateKey(spec, label);
    try {
      await writeKeyReference(b.keyRef(key), out, { overwrite: opts.force });
    } catch (err) {
      // No reference, no way to use the key: do not leave an orphan on the token.
      await b.deleteKey({ id: key.id }).catch(() => undefined);
      throw err;
    }
    return { ...keyJson(key), module: b.modulePath, token: b.token.info.label, out };
  });
  output(opts, result, () => {
    process.stdout.write(`generated ${result.type} key "${result.label}" (id ${result.keyId}) on token "${result.token}"\nkey reference written to ${out}\n`);
  });
}

/** `key list --backend pkcs11`: the private keys on the token. */
export async function listPkcs11Keys(opts: Pkcs11CliOptions): Promise<void> {
  const module = requireModule(opts);
  const token = tokenSelector(opts);
  const keys = await withBackend(module, token, opts, async (b) => (await b.listKeys()).map(keyJson));
  output(opts, keys, () => {
    if (keys.length === 0) { process.stdout.write('no keys on this token\n'); return; }
    for (const k of keys) process.stdout.write(`${k.keyId}  ${k.type.padEnd(9)}  ${k.label}\n`);
  });
}

/** `key delete --backend pkcs11`: one key pair, named by --key ref.pem, --id, --label or --uri. */
export async function deletePkcs11Key(
  opts: Pkcs11CliOptions & { key?: string; id?: string; label?: string; uri?: string },
): Promise<void> {
  const given = [opts.key, opts.id, opts.label, opts.uri].filter((v) => v !== undefined).length;
  if (given !== 1) throw new UsageError('name exactly one key: --key ref.pem, --id HEX, --label NAME or --uri pkcs11:…');
  let module = opts.module;
  let token: TokenSelector;
  let which: string | { id?: Buffer; label?: string };
  if (opts.key) {
    const ref = await readKeyRef(opts.key);
    if (ref.backend !== 'pkcs11') throw new UsageError(`${opts.key} names a ${ref.backend} key, not a PKCS#11 key`);
    const uri = parsePkcs11Uri(ref.uri);
    // The reference's module only if allowed: the file is not trusted to choose code to load.
    module ??= allowedModulePath(ref.module, opts.key, allowedModulesFromEnv(), CLI_ALLOW_HINT);
    token = { label: uri.token, serial: uri.serial };
    which = ref.uri;
  } else {
    token = opts.uri && !opts.token && !opts.slot ? { label: parsePkcs11Uri(opts.uri).token } : tokenSelector(opts);
    if (opts.id !== undefined && !/^([0-9a-fA-F]{2})+$/.test(opts.id)) throw new UsageError(`--id must be the key's CKA_ID in hex, got "${opts.id}"`);
    which = opts.uri ?? (opts.id !== undefined ? { id: Buffer.from(opts.id, 'hex') } : { label: opts.label });
  }
  if (!module) throw new UsageError(`no PKCS#11 module: ${MODULE_HINT}`);
  const deleted = await withBackend(module, token, opts, async (b) => keyJson(await b.deleteKey(which)));
  output(opts, { deleted }, () => process.stdout.write(`deleted key "${deleted.label}" (id ${deleted.keyId})\n`));
}

/** `pkcs11 key reference`: writes a key reference for a key already on the token (e.g. made by pkcs11-tool). */
export async function referencePkcs11Key(
  opts: Pkcs11CliOptions & { id?: string; label?: string; out?: string; force?: boolean },
): Promise<void> {
  const module = requireModule(opts);
  const token = tokenSelector(opts);
  if ((opts.id === undefined) === (opts.label === undefined)) throw new UsageError('name the key with exactly one of --id HEX or --label NAME');
  if (opts.id !== undefined && !/^([0-9a-fA-F]{2})+$/.test(opts.id)) throw new UsageError(`--id must be the key's CKA_ID in hex, got "${opts.id}"`);
  if (!opts.out) throw new UsageError('no output file: pass --out ref.pem (where the key reference is written)');
  const out = opts.out;
  if (!opts.force && existsSync(out)) throw new UsageError(`${out} already exists; remove it, choose another --out, or pass --force`);
  const result = await withBackend(module, token, opts, async (b) => {
    const key = await b.findKey(opts.id !== undefined ? { id: Buffer.from(opts.id, 'hex') } : { label: opts.label });
    await writeKeyReference(b.keyRef(key), out, { overwrite: opts.force });
    return { ...keyJson(key), module: b.modulePath, out };
  });
  output(opts, result, () => process.stdout.write(`key reference for "${result.label}" (id ${result.keyId}) written to ${out}\n`));
}

/** `pkcs11 tokens`: initialised tokens the module can see (no PIN needed). */
export async function listPkcs11Tokens(opts: Pkcs11CliOptions): Promise<void> {
  const mod = loadModule(requireModule(opts));
  let tokens;
  try {
    tokens = listTokens(mod.api).map(({ slotId, label, serial, manufacturer, model }) => ({
      slot: slotId, label, serial, manufacturer, model,
    }));
  } finally {
    mod.release();
  }
  output(opts, tokens, () => {
    if (tokens.length === 0) { process.stdout.write('no initialised tokens\n'); return; }
    for (const t of tokens) process.stdout.write(`slot ${t.slot}  "${t.label}"  serial ${t.serial}  ${t.manufacturer} ${t.model}\n`);
  });
}

/**
 * Adds `--backend hsm|pkcs11` and the PKCS#11 flags a command lacks, so another group's
 * `key generate|list|delete` can hand `--backend pkcs11` to the actions above.
 */
export function withPkcs11Backend(cmd: Command, opts: { writesReference?: boolean } = {}): Command {
  const has = (flag: string): boolean => cmd.options.some((o) => o.long === flag);
  cmd.addOption(new Option('--backend <kind>', 'where the key lives: hsm (default) or pkcs11 (a PKCS#11 token)').choices(['hsm', 'pkcs11']));
  if (!has('--module')) cmd.option('--module <path>', 'with --backend pkcs11: PKCS#11 module (.so) to load');
  if (!has('--token')) cmd.option('--token <label>', 'with --backend pkcs11: token label');
  if (!has('--slot')) cmd.option('--slot <id>', 'with --backend pkcs11: slot id');
  if (!has('--pin-format')) cmd.addOption(new Option('--pin-format <format>', 'with --backend pkcs11: HSMPROXY_PIN passed whole, or only its password part').choices(['as-is', 'password']));
  if (opts.writesReference && !has('--out')) cmd.option('--out <file>', 'where to write the key reference (fake PEM) of the new key pair');
  if (opts.writesReference && !has('--force')) cmd.option('--force', 'overwrite --out if it exists');
  return cmd;
}

/** `key delete --backend pkcs11 --key K`: K is a reference file, a hex CKA_ID, or a label. */
export function deletePkcs11KeyNamed(opts: Pkcs11CliOptions & { key: string }): Promise<void> {
  const { key, ...rest } = opts;
  if (existsSync(key)) return deletePkcs11Key({ ...rest, key });
  if (/^([0-9a-fA-F]{2}){8,}$/.test(key)) return deletePkcs11Key({ ...rest, id: key });
  return deletePkcs11Key({ ...rest, label: key });
}

function common(cmd: Command): Command {
  return cmd
    .option('--module <path>', 'PKCS#11 module (.so) to load')
    .option('--token <label>', 'token label')
    .option('--slot <id>', 'slot id, instead of or with --token')
    .addOption(new Option('--pin-format <format>', 'how HSMPROXY_PIN is passed to C_Login: whole, or only the password of user:password').choices(['as-is', 'password']).default('as-is'))
    .option('--json', 'print JSON');
}

/** Registers `hsmproxy pkcs11 tokens` and `hsmproxy pkcs11 key generate|list|reference|delete`. */
export function register(program: Command): void {
  const pkcs11 = program.command('pkcs11').description('keys on a PKCS#11 token (SoftHSMv2, CloudHSM, Luna…); PIN from HSMPROXY_PIN');
  pkcs11.command('tokens').description('list the initialised tokens a module offers')
    .option('--module <path>', 'PKCS#11 module (.so) to load').option('--json', 'print JSON')
    .action((opts: Pkcs11CliOptions) => listPkcs11Tokens(opts));
  const key = pkcs11.command('key').description('generate, list and delete key pairs on a token');
  common(key.command('generate').description('generate a key pair on the token and write its key reference'))
    .option('--type <type>', 'rsa:2048, rsa:3072, rsa:4096, ec:p256 or ec:p384')
    .option('--label <label>', 'CKA_LABEL of the new key')
    .option('--out <file>', 'where to write the key reference (PEM)')
    .option('--force', 'overwrite --out if it exists')
    .action((opts: Parameters<typeof generatePkcs11Key>[0]) => generatePkcs11Key(opts));
  common(key.command('list').description('list the private keys on the token'))
    .action((opts: Pkcs11CliOptions) => listPkcs11Keys(opts));
  common(key.command('reference').description('write a key reference for a key already on the token'))
    .option('--id <hex>', 'CKA_ID of the key')
    .option('--label <label>', 'CKA_LABEL of the key')
    .option('--out <file>', 'where to write the key reference (PEM)')
    .option('--force', 'overwrite --out if it exists')
    .action((opts: Parameters<typeof referencePkcs11Key>[0]) => referencePkcs11Key(opts));
  common(key.command('delete').description('delete a key pair from the token'))
    .option('--key <file>', 'key reference of the key (gives the token, and the module if $HSMPROXY_PKCS11_MODULES lists it)')
    .option('--id <hex>', 'CKA_ID of the key')
    .option('--label <label>', 'CKA_LABEL of the key')
    .option('--uri <uri>', 'pkcs11: URI of the key')
    .action((opts: Parameters<typeof deletePkcs11Key>[0]) => deletePkcs11Key(opts));
}
