// The HSM's data directory: a device master key (32 bytes, 0600, made at first open), the user
// table, the deletions (tombstones) and one file per token key, each sealed with AES-256-GCM
// under the master key. Every write is temp file + fsync + rename + fsync of the directory,
// finished before the caller's promise resolves, so a kill -9 at any moment leaves every
// acknowledged object readable. Leftover temp files of an interrupted write are removed on
// open. Other device secrets (the audit log's MAC key) are derived from the master key here,
// so it never leaves this file.
import { hkdfSync, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { StoreError } from './errors.js';
import type { KeyRecord } from './objects.js';
import { sealJson, unsealJson } from './sealing.js';
import type { UserRecord } from './users.js';
import type { TombstoneRecord } from './versions.js';

const MASTER = 'master.key';
const USERS = 'users.sealed';
const CLUSTER = 'cluster-key.sealed';
const TOMBSTONES = 'tombstones.sealed';
const QUORUM = 'quorum.sealed';
const LOCK = 'lock';
const KEYS = 'keys';
const TMP = '.tmp-';
const KEY_ID = /^[0-9a-f]{32}$/;
const READ_BATCH = 64;

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes a file atomically and durably (temp + fsync + rename + fsync dir). */
export async function writeAtomic(dir: string, name: string, data: Buffer, mode = 0o600): Promise<void> {
  const tmp = join(dir, `${name}${TMP}${randomBytes(6).toString('hex')}`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, join(dir, name));
  await fsyncDir(dir);
}

async function readIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

async function removeTemps(dir: string): Promise<void> {
  for (const f of await readdir(dir)) if (f.includes(TMP)) await unlink(join(dir, f)).catch(() => undefined);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// One process per data directory: two would each keep their own view and overwrite the
// other's user table. A lock left by a killed process (its pid gone) is taken over; the
// same process may reopen its own directory (tests, restarts in place).
async function takeLock(dir: string): Promise<void> {
  const held = await readIfExists(join(dir, LOCK));
  const pid = held ? Number(held.toString('utf8').trim()) : NaN;
  if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
    throw new StoreError(`the HSM data directory ${dir} is in use by process ${pid}; stop that HSM first (or remove ${join(dir, LOCK)} if it is not an hsmproxy process)`);
  }
  await writeAtomic(dir, LOCK, Buffer.from(`${process.pid}\n`), 0o600);
}

// HKDF-SHA256 with a purpose label: one derived key per purpose, none revealing the master key.
function deriveFromMaster(master: Buffer, label: string): Buffer {
  return Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), Buffer.from(label), 32));
}

/**
 * A key derived from the master key of the HSM in `dir`, read without opening the store (no lock,
 * nothing created): for tools such as `hsm audit --verify` that run beside a live HSM.
 */
export async function deriveDeviceKey(dir: string, label: string): Promise<Buffer> {
  const path = join(dir, MASTER);
  let master: Buffer | undefined;
  try {
    master = await readIfExists(path);
  } catch (e) {
    throw new StoreError(`cannot read the HSM master key ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); run this as the user that runs the HSM`);
  }
  if (!master) throw new StoreError(`${path} does not exist: ${dir} holds no HSM`);
  if (master.length !== 32) throw new StoreError(`${path} is not a 32-byte master key; restore it from a backup`);
  return deriveFromMaster(master, label);
}

/** One HSM's sealed files. */
export class DeviceStore {
  private usersWrite: Promise<void> = Promise.resolve();
  private usersQueued?: Promise<void>;
  private usersCurrent?: () => UserRecord[];
  private tombstonesWrite: Promise<void> = Promise.resolve();
  private tombstonesQueued?: Promise<void>;
  private tombstonesCurrent?: () => TombstoneRecord;
  private readonly tableWrites = new Map<string, Promise<void>>();
  private quorumWrite: Promise<void> = Promise.resolve();

  private constructor(readonly dir: string, private readonly master: Buffer) {}

  /** Opens `dir` (creating it and the master key if needed) and clears interrupted writes. */
  static async open(dir: string): Promise<DeviceStore> {
    try {
      await mkdir(join(dir, KEYS), { recursive: true, mode: 0o700 });
      await removeTemps(dir);
      await removeTemps(join(dir, KEYS));
      let master = await readIfExists(join(dir, MASTER));
      if (!master) {
        master = randomBytes(32);
        await writeAtomic(dir, MASTER, master, 0o600);
      }
      if (master.length !== 32) throw new StoreError(`${join(dir, MASTER)} is not a 32-byte master key; restore it from a backup`);
      await takeLock(dir);
      return new DeviceStore(dir, master);
    } catch (e) {
      if (e instanceof StoreError) throw e;
      throw new StoreError(`cannot open the HSM data directory ${dir}: ${(e as Error).message}`);
    }
  }

  /** A key for one purpose (`label`), derived from the master key. */
  deriveKey(label: string): Buffer {
    return deriveFromMaster(this.master, label);
  }

  /** Releases the directory lock if this process holds it. */
  async release(): Promise<void> {
    const held = await readIfExists(join(this.dir, LOCK));
    if (held && Number(held.toString('utf8').trim()) === process.pid) await unlink(join(this.dir, LOCK)).catch(() => undefined);
  }

  /** The user table, or undefined for a fresh directory. */
  async readUsers(): Promise<UserRecord[] | undefined> {
    const blob = await readIfExists(join(this.dir, USERS));
    return blob ? this.unsealFile<UserRecord[]>(USERS, blob) : undefined;
  }

  /**
   * Persists the user table; writes are serialised and each writes the table as it is when the
   * write starts. Callers arriving while a write is queued (not yet started) join it: it will
   * hold their change too, so a burst of user changes costs two writes, not one per change.
   */
  writeUsers(current: () => UserRecord[]): Promise<void> {
    this.usersCurrent = current;
    if (this.usersQueued) return this.usersQueued;
    const next = this.usersWrite.then(() => {
      this.usersQueued = undefined;
      return writeAtomic(this.dir, USERS, sealJson(this.master, USERS, this.usersCurrent!()));
    });
    this.usersQueued = next;
    this.usersWrite = next.catch(() => undefined);
    return next;
  }

  /** The deletions this HSM remembers (versions.ts), or undefined if none was ever written. */
  async readTombstones(): Promise<TombstoneRecord | undefined> {
    const blob = await readIfExists(join(this.dir, TOMBSTONES));
    return blob ? this.unsealFile<TombstoneRecord>(TOMBSTONES, blob) : undefined;
  }

  /** Persists the deletions, serialised and coalesced like `writeUsers`. */
  writeTombstones(current: () => TombstoneRecord): Promise<void> {
    this.tombstonesCurrent = current;
    if (this.tombstonesQueued) return this.tombstonesQueued;
    const next = this.tombstonesWrite.then(() => {
      this.tombstonesQueued = undefined;
      return writeAtomic(this.dir, TOMBSTONES, sealJson(this.master, TOMBSTONES, this.tombstonesCurrent!()));
    });
    this.tombstonesQueued = next;
    this.tombstonesWrite = next.catch(() => undefined);
    return next;
  }

  /** A small sealed table kept in one file of the directory (leases, certificate objects), or undefined. */
  async readTable<T>(name: string): Promise<T | undefined> {
    const blob = await readIfExists(join(this.dir, name));
    return blob ? this.unsealFile<T>(name, blob) : undefined;
  }

  /** Replaces a sealed table durably; writes of one table are serialised (each writes the table as it is then). */
  writeTable(name: string, current: () => unknown): Promise<void> {
    const prev = this.tableWrites.get(name) ?? Promise.resolve();
    const next = prev.then(() => writeAtomic(this.dir, name, sealJson(this.master, name, current())));
    this.tableWrites.set(name, next.catch(() => undefined));
    return next;
  }

  /** The cluster key kept in the directory, if any. */
  async readClusterKey(): Promise<Buffer | undefined> {
    const blob = await readIfExists(join(this.dir, CLUSTER));
    return blob ? Buffer.from(this.unsealFile<string>(CLUSTER, blob), 'hex') : undefined;
  }

  /** Keeps the cluster key, sealed under the master key. */
  writeClusterKey(key: Buffer): Promise<void> {
    return writeAtomic(this.dir, CLUSTER, sealJson(this.master, CLUSTER, key.toString('hex')));
  }

  /** Persists one token key object. */
  writeKey(rec: KeyRecord): Promise<void> {
    const name = `${rec.attrs.keyId}.key`;
    return writeAtomic(join(this.dir, KEYS), name, sealJson(this.master, name, rec));
  }

  /** Removes one token key object durably. */
  async deleteKey(keyId: string): Promise<void> {
    await unlink(join(this.dir, KEYS, `${keyId}.key`)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
    await fsyncDir(join(this.dir, KEYS));
  }

  /** Every persisted token key. */
  async readKeys(): Promise<KeyRecord[]> {
    const dir = join(this.dir, KEYS);
    const names = (await readdir(dir)).filter((f) => f.endsWith('.key') && KEY_ID.test(f.slice(0, -4))).sort();
    const out: KeyRecord[] = [];
    // Read in parallel batches: thousands of small files open in a fraction of the sequential time.
    for (let i = 0; i < names.length; i += READ_BATCH) {
      const batch = names.slice(i, i + READ_BATCH);
      const blobs = await Promise.all(batch.map((f) => readFile(join(dir, f))));
      batch.forEach((f, j) => out.push(this.unsealFile<KeyRecord>(f, blobs[j] ?? Buffer.alloc(0))));
    }
    return out;
  }

  /** The quorum section (M values, tokens; quorum.ts), or undefined if none was ever written. */
  async readQuorum(): Promise<unknown> {
    const blob = await readIfExists(join(this.dir, QUORUM));
    return blob ? this.unsealFile<unknown>(QUORUM, blob) : undefined;
  }

  /** Persists the quorum section; serialised, each write taking the state as it is when it starts. */
  writeQuorum(current: () => unknown): Promise<void> {
    const next = this.quorumWrite.then(() => writeAtomic(this.dir, QUORUM, sealJson(this.master, QUORUM, current())));
    this.quorumWrite = next.catch(() => undefined);
    return next;
  }

  private unsealFile<T>(name: string, blob: Buffer): T {
    try {
      return unsealJson<T>(this.master, name, blob, name);
    } catch (e) {
      throw new StoreError(`${join(this.dir, name)} cannot be read with this HSM's master key (${(e as Error).message}); restore the directory from a backup`);
    }
  }
}
