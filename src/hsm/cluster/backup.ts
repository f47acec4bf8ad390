// Cluster backups, modelled on CloudHSM's scheme: the HSM's durable state (users, token keys —
// already masked under the cluster key by the device's snapshot) plus the cluster policy is
// encrypted under a fresh ephemeral backup key (EBK); the EBK is wrapped by a persistent backup
// key (PBK) derived with HKDF from the cluster's secret (the 32-byte cluster masking key, our
// stand-in for CloudHSM's MKBK/AKBK inputs) and the cluster id. Restoring therefore needs the
// source cluster's key, exactly as a CloudHSM backup only restores inside the service that holds
// the backup keys.
//
// File layout (all integers big-endian):
//   0      8   magic "HSMPBAK1"
//   8      4   header length H
//   12     H   header JSON (BackupHeader; not secret, readable without keys)
//   12+H   60  wrapped EBK: iv(12) || AES-256-GCM(PBK, EBK)(32) || tag(16), AAD = bytes [0, 12+H)
//   72+H   4   payload length P
//   76+H   P   payload: iv(12) || AES-256-GCM(EBK, payload JSON) || tag(16), AAD = every byte before it
//   end    32  HMAC-SHA256 over every byte before it, key = HKDF(PBK, "mac")
// Any flipped or missing byte fails a tag or the MAC, so a tampered or truncated file is refused
// before anything is written.
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupCorruptError, BackupWrongClusterError, NoBackupError } from './lifecycle-errors.js';

const MAGIC = Buffer.from('HSMPBAK1', 'ascii');
const WRAPPED_EBK_BYTES = 12 + 32 + 16;
const MAC_BYTES = 32;
/** Default retention of `cluster backup` (CloudHSM's default is also 90 days). */
export const DEFAULT_RETENTION_DAYS = 90;
/** File name suffix of backups under DIR/backups. */
export const BACKUP_SUFFIX = '.hsmbak';

/** The readable part of a backup: what it is and where it came from. */
export interface BackupHeader {
  format: 1;
  clusterId: string;
  createdAt: string;
  sourceHsm: string;
  users: number;
  tokenKeys: number;
  /** The source HSM's state digest: a restored HSM must report the same. */
  digest: string;
  /** Random HKDF salt of this backup's PBK derivation. */
  salt: string;
}

/** Cluster-wide settings carried with the backup (capacity profile and the like). */
export type BackupPolicy = Record<string, unknown>;

/** What a backup holds once decrypted. */
export interface BackupContents {
  header: BackupHeader;
  /** The device snapshot (users + token keys, masked under the cluster key). */
  snapshot: Buffer;
  policy: BackupPolicy;
}

/** Input of `sealBackup`. */
export interface SealInput {
  clusterKey: Buffer;
  clusterId: string;
  sourceHsm: string;
  snapshot: Buffer;
  policy: BackupPolicy;
  users: number;
  tokenKeys: number;
  digest: string;
  now?: Date;
}

function derivePbk(clusterKey: Buffer, clusterId: string, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', clusterKey, salt, `hsmproxy backup PBK v1|${clusterId}`, 32));
}

function macKey(pbk: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', pbk, Buffer.alloc(0), 'hsmproxy backup MAC v1', 32));
}

function gcmSeal(key: Buffer, plaintext: Buffer, aad: Buffer): Buffer {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(aad);
  const ct = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([iv, ct, c.getAuthTag()]);
}

function gcmOpen(key: Buffer, sealed: Buffer, aad: Buffer): Buffer | undefined {
  if (sealed.length < 28) return undefined;
  const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
  d.setAAD(aad);
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  try {
    return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]);
  } catch {
    return undefined;
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** Encrypts a snapshot and policy into backup file bytes. */
export function sealBackup(input: SealInput): Buffer {
  if (input.clusterKey.length !== 32) throw new RangeError('cluster key must be 32 bytes');
  const salt = randomBytes(32);
  const header: BackupHeader = {
    format: 1,
    clusterId: input.clusterId,
    createdAt: (input.now ?? new Date()).toISOString(),
    sourceHsm: input.sourceHsm,
    users: input.users,
    tokenKeys: input.tokenKeys,
    digest: input.digest,
    salt: salt.toString('hex'),
  };
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.concat([MAGIC, u32(headerBytes.length), headerBytes]);
  const pbk = derivePbk(input.clusterKey, input.clusterId, salt);
  const ebk = randomBytes(32);
  const wrapped = gcmSeal(pbk, ebk, prefix);
  const payloadPlain = Buffer.from(JSON.stringify({ snapshot: input.snapshot.toString('base64'), policy: input.policy }), 'utf8');
  const beforePayload = Buffer.concat([prefix, wrapped]);
  // The payload length is authenticated too: it is part of the AAD below.
  const sealedLength = payloadPlain.length + 28;
  const aad = Buffer.concat([beforePayload, u32(sealedLength)]);
  const payload = gcmSeal(ebk, payloadPlain, aad);
  ebk.fill(0);
  const body = Buffer.concat([aad, payload]);
  const mac = createHmac('sha256', macKey(pbk)).update(body).digest();
  return Buffer.concat([body, mac]);
}

/** Reads the header of backup bytes without any key (listing, pruning, status). */
export function readBackupHeader(bytes: Buffer, name = 'backup'): BackupHeader {
  if (bytes.length < MAGIC.length + 4 || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new BackupCorruptError(name, 'not an hsmproxy backup (bad magic)');
  }
  const h = bytes.readUInt32BE(8);
  if (12 + h + WRAPPED_EBK_BYTES + 4 + MAC_BYTES > bytes.length) throw new BackupCorruptError(name, 'the file is truncated');
  let header: BackupHeader;
  try {
    header = JSON.parse(bytes.subarray(12, 12 + h).toString('utf8')) as BackupHeader;
  } catch {
    throw new BackupCorruptError(name, 'the header does not parse');
  }
  if (header.format !== 1 || typeof header.clusterId !== 'string' || typeof header.salt !== 'string') {
    throw new BackupCorruptError(name, 'unknown header format');
  }
  return header;
}

/** Authenticates and decrypts backup bytes; throws before returning anything partial. */
export function openBackup(bytes: Buffer, clusterKey: Buffer, name = 'backup'): BackupContents {
  const header = readBackupHeader(bytes, name);
  const h = bytes.readUInt32BE(8);
  const prefixEnd = 12 + h;
  const lenAt = prefixEnd + WRAPPED_EBK_BYTES;
  const sealedLength = bytes.readUInt32BE(lenAt);
  const payloadAt = lenAt + 4;
  if (payloadAt + sealedLength + MAC_BYTES !== bytes.length) {
    throw new BackupCorruptError(name, bytes.length < payloadAt + sealedLength + MAC_BYTES ? 'the file is truncated' : 'trailing bytes after the backup');
  }
  const pbk = derivePbk(clusterKey, header.clusterId, Buffer.from(header.salt, 'hex'));
  const body = bytes.subarray(0, payloadAt + sealedLength);
  const mac = createHmac('sha256', macKey(pbk)).update(body).digest();
  const given = bytes.subarray(payloadAt + sealedLength);
  const ebk = gcmOpen(pbk, bytes.subarray(prefixEnd, lenAt), bytes.subarray(0, prefixEnd));
  if (!ebk) throw new BackupWrongClusterError(name);
  if (given.length !== mac.length || !timingSafeEqual(given, mac)) throw new BackupCorruptError(name, 'integrity check failed (the file was altered)');
  const plain = gcmOpen(ebk, bytes.subarray(payloadAt, payloadAt + sealedLength), bytes.subarray(0, payloadAt));
  ebk.fill(0);
  if (!plain) throw new BackupCorruptError(name, 'the payload does not authenticate (the file was altered)');
  let parsed: { snapshot?: unknown; policy?: unknown };
  try {
    parsed = JSON.parse(plain.toString('utf8')) as { snapshot?: unknown; policy?: unknown };
  } catch {
    throw new BackupCorruptError(name, 'the payload does not parse');
  }
  if (typeof parsed.snapshot !== 'string') throw new BackupCorruptError(name, 'the payload holds no snapshot');
  const policy = parsed.policy && typeof parsed.policy === 'object' ? (parsed.policy as BackupPolicy) : {};
  return { header, snapshot: Buffer.from(parsed.snapshot, 'base64'), policy };
}

/** Where a cluster keeps its backups. */
export function backupsDir(clusterDir: string): string {
  return join(clusterDir, 'backups');
}

/** Writes backup bytes atomically (temp file, fsync, rename) as DIR/backups/backup-<time>.hsmbak; returns its path. */
export async function writeBackupFile(clusterDir: string, bytes: Buffer, createdAt: string): Promise<string> {
  const dir = backupsDir(clusterDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const stamp = createdAt.replace(/[:.]/g, '-');
  const file = join(dir, `backup-${stamp}-${randomBytes(3).toString('hex')}${BACKUP_SUFFIX}`);
  const tmp = `${file}.tmp`;
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(bytes);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  return file;
}

/** One backup on disk. */
export interface BackupEntry {
  file: string;
  createdAt: Date;
  header?: BackupHeader;
}

/** Backups under DIR/backups, oldest first; files whose header is unreadable are listed without one. */
export async function listBackups(clusterDir: string): Promise<BackupEntry[]> {
  const dir = backupsDir(clusterDir);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const out: BackupEntry[] = [];
  for (const n of names.filter((x) => x.endsWith(BACKUP_SUFFIX))) {
    const file = join(dir, n);
    let header: BackupHeader | undefined;
    try {
      header = readBackupHeader(await readFile(file), n);
    } catch {
      header = undefined;
    }
    const createdAt = header ? new Date(header.createdAt) : (await stat(file)).mtime;
    out.push({ file, createdAt, ...(header ? { header } : {}) });
  }
  return out.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
}

/** The newest backup; NoBackupError if there is none. */
export async function latestBackup(clusterDir: string): Promise<BackupEntry> {
  const all = (await listBackups(clusterDir)).filter((b) => b.header);
  const last = all.at(-1);
  if (!last) throw new NoBackupError(backupsDir(clusterDir));
  return last;
}

/** Deletes backups older than `retentionDays`, always keeping the newest; returns the files removed. */
export async function pruneBackups(clusterDir: string, retentionDays: number, now = new Date()): Promise<string[]> {
  const all = await listBackups(clusterDir);
  const cutoff = now.getTime() - retentionDays * 86_400_000;
  const removed: string[] = [];
  for (const b of all.slice(0, -1)) {
    if (b.createdAt.getTime() < cutoff) {
      await rm(b.file, { force: true });
      removed.push(b.file);
    }
  }
  return removed;
}

/** Reads and opens a backup file (errors name the file). */
export async function readBackupFile(file: string, clusterKey: Buffer): Promise<BackupContents> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new BackupCorruptError(file, `cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return openBackup(bytes, clusterKey, file);
}
