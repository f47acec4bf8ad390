// JSON bodies of management operations and error responses. Buffers travel as
// { "$b64": "…" } so masked objects, public keys and wrapped keys keep their bytes.
import { ProtocolError } from './errors.js';
import type { BodyCodec } from './binary.js';
import { HEADER_BYTES } from './frame.js';

function replacer(this: unknown, _key: string, value: unknown): unknown {
  // JSON.stringify calls Buffer#toJSON before the replacer sees it: undo that shape.
  if (value && typeof value === 'object' && (value as { type?: unknown }).type === 'Buffer' && Array.isArray((value as { data?: unknown }).data)) {
    return { $b64: Buffer.from((value as { data: number[] }).data).toString('base64') };
  }
  return value;
}

function reviver(_key: string, value: unknown): unknown {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const b = (value as { $b64?: unknown }).$b64;
    if (typeof b === 'string' && Object.keys(value).length === 1) return Buffer.from(b, 'base64');
  }
  return value;
}

/** `value` as the JSON text of a body ('' for undefined), Buffers as { "$b64": … }. */
export function jsonText(value: unknown): string {
  return value === undefined ? '' : JSON.stringify(value, replacer);
}

/** A body of UTF-8 text (JSON bodies, as jsonText makes them). */
export const TEXT_BODY: BodyCodec<string> = {
  size: (text) => Buffer.byteLength(text),
  write(buf, at, text) {
    if (text.length > 0) buf.write(text, at, 'utf8');
  },
};

/** A frame (header reserved, left for the caller) whose body is `value` as JSON. */
export function writeJson(value: unknown): Buffer {
  const text = jsonText(value);
  const len = Buffer.byteLength(text);
  const buf = Buffer.allocUnsafe(HEADER_BYTES + len);
  buf.write(text, HEADER_BYTES, 'utf8');
  return buf;
}

/** Decodes a JSON body (empty body → undefined); malformed JSON is a ProtocolError. */
export function readJson(body: Buffer): unknown {
  if (body.length === 0) return undefined;
  try {
    return JSON.parse(body.toString('utf8'), reviver) as unknown;
  } catch {
    throw new ProtocolError('HSM_ERR_PROTOCOL', 'request body is not valid JSON');
  }
}
