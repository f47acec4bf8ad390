// `hsmproxy key reference` and `hsmproxy key import`: write key references ("fake PEM") for keys
// in the HSM. Attached to the `key` command group (src/cli/commands/key.ts) when it exists, else
// it creates the group. `key generate --out` calls writeGeneratedReference below.
import type { Command } from 'commander';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { KeyNotFoundError, UnsupportedError, describeAlgorithm, looksLikeKeyRef, writeKeyReference, type SimBackend } from '../../engine/index.js';
import { backendOpeners, type KeyCommandOptions } from '../engine-options.js';
import { checkFlagFileWritable } from '../files.js';
import { describeError, output, UsageError } from '../run.js';

interface ReferenceOptions extends KeyCommandOptions {
  key: string;
  out: string;
  force?: boolean;
}

interface ImportOptions extends KeyCommandOptions {
  in: string;
  label: string;
  out: string;
  force?: boolean;
  allowDuplicateLabel?: boolean;
}

function hsmOptions(cmd: Command): Command {
  return cmd
    .option('--dir <dir>', 'cluster directory (default: $HSMPROXY_DIR or ./data)')
    .option('--hsm <id>', 'HSM of the cluster to talk to (default: the first in the manifest)')
    .option('--credentials <file>', '0600 file holding user:password (default: $HSMPROXY_PIN)')
    .option('--force', 'overwrite --out if it exists')
    .option('--json', 'print the result as JSON');
}

async function readPrivateKey(file: string): Promise<KeyObject> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, 1);
  }
  if (looksLikeKeyRef(text)) throw new UsageError(`${file} is already a key reference, not a private key to import`, 1);
  try {
    return createPrivateKey(text);
  } catch {
    throw new UsageError(`${file} is not a PEM private key (PKCS#1, SEC1 or PKCS#8; encrypted keys must be decrypted first)`, 1);
  }
}

/** Refuses an `out` that exists (unless `force`) or could not be written, before anything is made in the HSM. */
export async function checkReferenceOut(out: string, force?: boolean): Promise<void> {
  await checkFlagFileWritable('--out', out, force);
}

/** `key generate --out`: writes the reference of a key just generated in the cluster, found by its id. */
export async function writeGeneratedReference(
  opts: KeyCommandOptions & { out: string; force?: boolean }, keyId: string,
): Promise<void> {
  const backend = await backendOpeners.sim(opts);
  try {
    await writeKeyReference(await backend.find(keyId), opts.out, { overwrite: opts.force });
  } finally {
    await backend.close();
  }
}

/** The refusal of a label some key already has: every later `--key LABEL` would name several keys. */
export function duplicateLabelError(label: string, keyIds: readonly string[]): UsageError {
  return new UsageError(`a key labelled "${label}" exists already (${keyIds.join(', ')}), and \`--key ${label}\` would then name more than one key: ` +
    'choose another --label, or add --allow-duplicate-label and name the keys by id', 1);
}

/**
 * Writes the reference of a key just made; if that fails, deletes the key again (a key without
 * its reference is an orphan, and its label would block a rerun) and says what became of it.
 */
export async function writeReferenceOrUndo(
  key: { keyId: string; label: string }, out: string, write: () => Promise<unknown>, undo: () => Promise<unknown>,
): Promise<void> {
  try {
    await write();
  } catch (err) {
    const why = describeError(err);
    try {
      await undo();
    } catch (undoErr) {
      throw new UsageError(`${why}; key ${key.keyId} ("${key.label}") is in the HSM but could not be deleted again (${describeError(undoErr)}): ` +
        `write its reference with \`hsmproxy key reference --key ${key.keyId} --out FILE\` or delete it with \`hsmproxy key delete --key ${key.keyId}\``, 1);
    }
    throw new UsageError(`${why}; the key just made (${key.keyId}, "${key.label}") was deleted from the HSM again, so nothing changed: fix --out ${out} and run the command again`, 1);
  }
}

/** Refuses `label` if a private key visible to the user has it already. */
async function refuseDuplicateLabel(backend: SimBackend, label: string): Promise<void> {
  try {
    const k = await backend.find(label);
    if (k.label === label) throw duplicateLabelError(label, [k.keyId]);
  } catch (err) {
    if (err instanceof KeyNotFoundError) return;
    // find() refuses a label that several keys have: a duplicate already.
    if (err instanceof UnsupportedError) throw duplicateLabelError(label, ['several keys']);
    throw err;
  }
}

/** Adds `reference` and `import` to the `key` group (creating the group if absent). */
export function register(program: Command): void {
  const key = program.commands.find((c) => c.name() === 'key') ?? program.command('key').description('keys in the HSM');

  hsmOptions(
    key.command('reference')
      .description('write a key reference (fake PEM) for an existing HSM key (like CloudHSM getCaviumPrivKey)')
      .requiredOption('--key <id-or-label>', 'the key: its cluster-wide id, or its label if unique')
      .requiredOption('--out <file>', 'where to write the reference'),
  ).action(async (opts: ReferenceOptions) => {
    const backend = await backendOpeners.sim(opts);
    try {
      const handle = await backend.find(opts.key);
      await writeKeyReference(handle, opts.out, { overwrite: opts.force });
      output(opts, {
        out: opts.out, keyId: handle.keyId, label: handle.label, type: describeAlgorithm(handle.algorithm),
        clusterId: backend.clusterId,
      }, () =>
        process.stdout.write(`wrote ${opts.out} for key ${handle.keyId} ("${handle.label}", ${describeAlgorithm(handle.algorithm)})\n`));
    } finally {
      await backend.close();
    }
  });

  hsmOptions(
    key.command('import')
      .description('import a software private key into the HSM and write its key reference (then destroy the original)')
      .requiredOption('--in <file>', 'the PEM private key to import')
      .requiredOption('--label <label>', 'label of the key in the HSM')
      .requiredOption('--out <file>', 'where to write the reference')
      .option('--allow-duplicate-label', 'import even if a key already has this label (later commands then need the key id)'),
  ).action(async (opts: ImportOptions) => {
    const privateKey = await readPrivateKey(opts.in);
    // Before the key is made: a reference that cannot be written would leave it an orphan.
    await checkReferenceOut(opts.out, opts.force);
    const backend = await backendOpeners.sim(opts);
    try {
      if (!opts.allowDuplicateLabel) await refuseDuplicateLabel(backend, opts.label);
      const handle = await backend.importKey(privateKey, opts.label);
      await writeReferenceOrUndo(
        handle, opts.out, () => writeKeyReference(handle, opts.out, { overwrite: opts.force }),
        () => backend.delete(handle),
      );
      output(opts, {
        out: opts.out, keyId: handle.keyId, label: handle.label, type: describeAlgorithm(handle.algorithm),
        clusterId: backend.clusterId,
      }, () => {
        process.stdout.write(`imported ${opts.in} as key ${handle.keyId} ("${handle.label}"); wrote ${opts.out}\n`);
        process.stdout.write(`now destroy the original: shred -u ${opts.in} (the key is in the HSM; the reference holds no secret)\n`);
      });
    } finally {
      await backend.close();
    }
  });
}
