// AES-256-GCM sealing of device data: at rest under the device master key, and masked for
// replication under the cluster key. The AAD binds each blob to what it is (a file name or a
// masked-object kind), so a blob cannot be swapped for another one.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { DecryptError, InvalidArgumentError } from './errors.js';

const MAGIC = Buffer.from('HSMS1');
const IV = 12;
const TAG = 16;

/** Encrypts `plaintext` under a 32-byte key, bound to `context`. */
export function seal(key: Buffer, context: string, plaintext: Buffer): Buffer {
  const iv = randomBytes(IV);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(context));
  const ct = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([MAGIC, iv, c.getAuthTag(), ct]);
}

/** Decrypts a sealed blob; DecryptError if the key, context or bytes are wrong. */
export function unseal(key: Buffer, context: string, blob: Buffer, what: string): Buffer {
  const marked = Buffer.isBuffer(blob) && blob.length >= MAGIC.length + IV + TAG
    && blob.subarray(0, MAGIC.length).equals(MAGIC);
  if (!marked) {
    throw new InvalidArgumentError(`${what} is not a sealed hsmproxy blob`);
  }
  const iv = blob.subarray(MAGIC.length, MAGIC.length + IV);
  const tag = blob.subarray(MAGIC.length + IV, MAGIC.length + IV + TAG);
  const d = createDecipheriv('aes-256-gcm', key, iv);
  d.setAAD(Buffer.from(context));
  d.setAuthTag(tag);
  try {
    return Buffer.concat([d.update(blob.subarray(MAGIC.length + IV + TAG)), d.final()]);
  } catch {
    throw new DecryptError(`unsealing ${what} (wrong cluster or master key?)`);
  }
}

/** Seals a JSON value. */
export function sealJson(key: Buffer, context: string, value: unknown): Buffer {
  return seal(key, context, Buffer.from(JSON.stringify(value)));
}

/** Unseals a JSON value. */
export function unsealJson<T>(key: Buffer, context: string, blob: Buffer, what: string): T {
  return JSON.parse(unseal(key, context, blob, what).toString('utf8')) as T;
}
