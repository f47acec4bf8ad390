// `hsmproxy quorum …`: M of N approval by crypto officers, as CloudHSM's quorum authentication.
// A CO makes a quorum key pair (`keygen`, or openssl) and registers its public half; a CO sets M
// per service (`set-m`); whoever needs a protected operation gets a token (`token get`), each
// approver signs it offline (`token sign`, no login), the signatures are submitted (`token
// approve`), and the next protected operation of the token's owner uses it up.
import type { Command } from 'commander';
import {
  approveQuorumToken, generateQuorumKey, getQuorumToken, quorumStatus, quorumTokenStatus, registerQuorumKey, setQuorumM,
  signQuorumToken, type QuorumKeyType,
} from '../../hsm/client/quorum.js';
import { QUORUM_SERVICES, QUORUM_TOKEN_TTL_S, quorumTokenId, type QuorumService, type QuorumTokenInfo } from '../../hsm/protocol/index.js';
import { checkFlagFileWritable, readFlagFile, writeFlagFile } from '../files.js';
import { withHsm, type HsmCommandOptions } from '../hsm-session.js';
import { UsageError, output } from '../run.js';

type SignOptions = { token: string; key: string; user: string; out: string; force?: boolean; json?: boolean };

/** The `format` of a signature file written by `quorum token sign`. */
const APPROVAL_FORMAT = 'hsmproxy quorum approval v1';

function common(c: Command): Command {
  return c.option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--hsm <id>', 'HSM id from cluster.json (default: the whole cluster)')
    .option('--json', 'print one JSON document');
}

function service(v: string): QuorumService {
  if (!(QUORUM_SERVICES as readonly string[]).includes(v)) throw new UsageError(`--service must be one of ${QUORUM_SERVICES.join(', ')}, got "${v}"`);
  return v as QuorumService;
}

function positiveInt(flag: string, v: string, max: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > max) throw new UsageError(`${flag} must be a whole number from 1 to ${max}, got "${v}"`);
  return n;
}

// The token text and its id, from the file `quorum token get` wrote.
async function readToken(path: string): Promise<{ text: string; id: string }> {
  const text = (await readFlagFile('--token', path)).toString('utf8');
  const id = quorumTokenId(text);
  if (!id) throw new UsageError(`--token ${path} is not a quorum token file (written by \`hsmproxy quorum token get --out\`)`);
  return { text, id };
}

// A signature file: the JSON `token sign` writes, or raw signature bytes (openssl dgst -sign) with --approver.
async function readApproval(
  path: string, tokenId: string, approver?: string,
): Promise<{ approver: string; signature: Buffer }> {
  const raw = await readFlagFile('--signature', path);
  let doc: { format?: unknown; tokenId?: unknown; approver?: unknown; signature?: unknown } | undefined;
  try {
    doc = JSON.parse(raw.toString('utf8')) as typeof doc;
  } catch {
    doc = undefined;
  }
  if (doc && typeof doc === 'object' && doc.format === APPROVAL_FORMAT) {
    if (typeof doc.approver !== 'string' || typeof doc.signature !== 'string' || typeof doc.tokenId !== 'string') throw new UsageError(`--signature ${path} is a malformed approval file; sign the token again`);
    if (doc.tokenId !== tokenId) throw new UsageError(`--signature ${path} approves token ${doc.tokenId}, not ${tokenId}`);
    return { approver: doc.approver, signature: Buffer.from(doc.signature, 'base64') };
  }
  if (!approver) throw new UsageError(`--signature ${path} is a raw signature (not written by \`quorum token sign\`): name its signer with --approver`);
  return { approver, signature: raw };
}

function describeToken(t: QuorumTokenInfo): string {
  const who = t.approvals.length > 0 ? ` (${t.approvals.join(', ')})` : '';
  return `quorum token ${t.id} for the ${t.service} service, issued to ${t.user}: ${t.approvals.length} of ${t.m} approval(s)${who}; ${t.state}; expires ${t.expiresAt}\n`;
}

/** Registers the `quorum` command group. */
export function register(program: Command): void {
  const quorum = program.commands.find((c) => c.name() === 'quorum')
    ?? program.command('quorum').description('M of N approval by crypto officers for user management and key policy changes');

  quorum.command('keygen').description('make a quorum key pair (no HSM involved): the private key is written 0600 and never leaves this machine')
    .requiredOption('--out <file>', 'where to write the private key (PEM, PKCS#8)')
    .option('--type <type>', 'rsa (RSA-2048) or p256 (EC P-256)', 'p256')
    .option('--public-out <file>', 'also write the public key (PEM, SPKI)')
    .option('--force', 'overwrite existing files')
    .option('--json', 'print one JSON document')
    .action(async (opts: { out: string; type: string; publicOut?: string; force?: boolean; json?: boolean }) => {
      if (opts.type !== 'rsa' && opts.type !== 'p256') throw new UsageError(`--type must be rsa or p256, got "${opts.type}"`);
      await checkFlagFileWritable('--out', opts.out, opts.force);
      if (opts.publicOut) await checkFlagFileWritable('--public-out', opts.publicOut, opts.force);
      const pair = generateQuorumKey(opts.type as QuorumKeyType);
      await writeFlagFile('--out', opts.out, pair.privateKeyPem, 0o600);
      if (opts.publicOut) await writeFlagFile('--public-out', opts.publicOut, pair.publicKeyPem);
      output(opts, { privateKey: opts.out, publicKey: opts.publicOut ?? null, type: opts.type }, () => {
        process.stdout.write(`wrote the quorum private key to ${opts.out} (0600)${opts.publicOut ? ` and its public key to ${opts.publicOut}` : ''}; register it with \`hsmproxy quorum register --key ${opts.out}\`\n`);
      });
    });

  common(quorum.command('register').description('register your quorum public key (you: a crypto officer, logged in from HSMPROXY_PIN); the private key proves you hold it and stays here'))
    .requiredOption('--key <file>', 'your quorum private key (PEM: `quorum keygen` or `openssl genpkey`)')
    .action(async (opts: HsmCommandOptions & { key: string }) => {
      const pem = await readFlagFile('--key', opts.key);
      const r = await withHsm(opts, (c) => registerQuorumKey(c, pem));
      output(opts, r, () => process.stdout.write(`registered the ${r.keyType} quorum key ${r.fingerprint.slice(0, 16)}… of ${r.name}\n`));
    });

  common(quorum.command('set-m').description('set M, the approvals a service needs (1: no quorum); needs an approved `quorum` token once a quorum is in force'))
    .requiredOption('--service <service>', `${QUORUM_SERVICES.join('|')}: user management, key sharing and attributes, the M values`)
    .requiredOption('--m <n>', 'approvals needed, 1 to 8 (at most the crypto officers with a registered key)')
    .action(async (opts: HsmCommandOptions & { service: string; m: string }) => {
      const s = service(opts.service);
      const m = positiveInt('--m', opts.m, 8);
      const r = await withHsm(opts, (c) => setQuorumM(c, s, m));
      output(opts, r, () => process.stdout.write(`M of ${s} is ${m}${m === 1 ? ' (no quorum)' : ''}\n`));
    });

  common(quorum.command('show').description('M per service and the crypto officers registered as approvers'))
    .action(async (opts: HsmCommandOptions) => {
      const r = await withHsm(opts, (c) => quorumStatus(c));
      output(opts, r, () => {
        for (const s of QUORUM_SERVICES) process.stdout.write(`${s.padEnd(8)} M=${r.m[s]}${r.m[s] === 1 ? ' (no quorum)' : ''}\n`);
        process.stdout.write(r.approvers.length === 0 ? 'no crypto officer has registered a quorum key\n' : `approvers: ${r.approvers.map((a) => `${a.name} (${a.keyType} ${a.fingerprint.slice(0, 16)}…)`).join(', ')}\n`);
      });
    });

  const token = quorum.command('token').description('quorum tokens: get one, have it signed, approve the signatures, check it');

  common(token.command('get').description('get a token for a service, bound to you, valid on every HSM of the cluster; write it to a file for the approvers'))
    .requiredOption('--service <service>', `${QUORUM_SERVICES.join('|')}`)
    .requiredOption('--out <file>', 'where to write the token (the exact text approvers sign)')
    .option('--ttl <seconds>', `lifetime, 1 to ${QUORUM_TOKEN_TTL_S} seconds`, String(QUORUM_TOKEN_TTL_S))
    .option('--force', 'overwrite --out if it exists')
    .action(async (opts: HsmCommandOptions & { service: string; out: string; ttl: string; force?: boolean }) => {
      const s = service(opts.service);
      const ttl = positiveInt('--ttl', opts.ttl, QUORUM_TOKEN_TTL_S);
      await checkFlagFileWritable('--out', opts.out, opts.force);
      const t = await withHsm(opts, (c) => getQuorumToken(c, s, ttl));
      await writeFlagFile('--out', opts.out, t.text);
      output(opts, t, () => process.stdout.write(`${describeToken(t)}wrote it to ${opts.out}; approvers sign it with \`hsmproxy quorum token sign --token ${opts.out} --key KEY --user NAME --out SIG\`\n`));
    });

  token.command('sign').description('sign a token with your quorum private key (offline: no HSM, no login); the signature file goes back to the token\'s owner')
    .requiredOption('--token <file>', 'the token file')
    .requiredOption('--key <file>', 'your quorum private key')
    .requiredOption('--user <name>', 'your crypto officer name (whose registered key verifies the signature)')
    .requiredOption('--out <file>', 'where to write the signature file')
    .option('--force', 'overwrite --out if it exists')
    .option('--json', 'print one JSON document')
    .action(async (opts: SignOptions) => {
      const { text, id } = await readToken(opts.token);
      await checkFlagFileWritable('--out', opts.out, opts.force);
      const signature = signQuorumToken(text, await readFlagFile('--key', opts.key), `--key ${opts.key}`);
      const doc = { format: APPROVAL_FORMAT, tokenId: id, approver: opts.user, signature: signature.toString('base64') };
      await writeFlagFile('--out', opts.out, JSON.stringify(doc, null, 2) + '\n');
      output(opts, { tokenId: id, approver: opts.user, signature: opts.out }, () => process.stdout.write(`${opts.user} signed quorum token ${id}; the signature is in ${opts.out}\n`));
    });

  common(token.command('approve').description('submit approvers\' signatures over a token; the HSM verifies each against the signer\'s registered key'))
    .requiredOption('--token <file>', 'the token file')
    .requiredOption('--signature <file...>', 'signature file(s) from `quorum token sign` (or raw openssl signatures with --approver)')
    .option('--approver <name>', 'the signer of a raw signature file')
    .action(async (opts: HsmCommandOptions & { token: string; signature: string[]; approver?: string }) => {
      const { id } = await readToken(opts.token);
      const approvals = await Promise.all(opts.signature.map((p) => readApproval(p, id, opts.approver)));
      const t = await withHsm(opts, async (c) => {
        let last: QuorumTokenInfo & { duplicate: boolean } | undefined;
        for (const a of approvals) last = await approveQuorumToken(c, { tokenId: id, ...a });
        return last!;
      });
      output(opts, t, () => process.stdout.write(describeToken(t)));
    });

  common(token.command('status').description('a token\'s approvals against M, its expiry and state (pending, approved, used, replaced, expired)'))
    .option('--token <file>', 'the token file')
    .option('--id <id>', 'the token id, instead of --token')
    .action(async (opts: HsmCommandOptions & { token?: string; id?: string }) => {
      const id = opts.token ? (await readToken(opts.token)).id : opts.id;
      if (!id) throw new UsageError('name the token with --token FILE or --id ID');
      const t = await withHsm(opts, (c) => quorumTokenStatus(c, id));
      output(opts, t, () => process.stdout.write(describeToken(t)));
    });
}
