// The client↔HSM wire format: frames, hot-op binary bodies, JSON bodies, and bad input.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import {
  FLAG_JSON, FLAG_RESPONSE, FrameDecoder, FrameOutbox, HEADER_BYTES, Op, ProtocolError, SIGN_BODY, encodeFrame, readDecrypt, readEncrypt,
  readJson, readRandom, readSign, readVerify, writeDecrypt, writeEncrypt, writeHeader, writeJson, writeRandom, writeSign, writeVerify,
} from '../src/hsm/protocol/index.js';

// A request frame as the client sends it: header filled in, body from a write* helper.
function framed(frame: Buffer, id: number, op: number, flags = 0): Buffer {
  writeHeader(frame, 0, frame.length - HEADER_BYTES, id, op, flags);
  return frame;
}

t.test('a frame round-trips with its request id, code, flags and timings', async (t) => {
  const body = Buffer.from('payload');
  const f = new FrameDecoder().push(encodeFrame(0xfffffffe, 7, FLAG_RESPONSE | FLAG_JSON, body, 1234, 5678));
  t.equal(f.length, 1);
  t.match(f[0], { requestId: 0xfffffffe, code: 7, flags: FLAG_RESPONSE | FLAG_JSON, queueWaitUs: 1234, serviceUs: 5678 });
  t.same(f[0]?.body, body);
});

t.test('frames split across chunks at every byte boundary decode the same', async (t) => {
  const stream = Buffer.concat([encodeFrame(1, 1, 0, Buffer.from('a')), encodeFrame(2, 2, 0, Buffer.alloc(0)), encodeFrame(3, 3, 0, randomBytes(300))]);
  for (let cut = 1; cut < stream.length; cut += 7) {
    const d = new FrameDecoder();
    const frames = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))];
    t.same(frames.map((f) => f.requestId), [1, 2, 3], `cut at ${cut}`);
    t.equal(d.pending, 0);
  }
});

t.test('many frames in one chunk all decode, in order', async (t) => {
  const frames = Array.from({ length: 100 }, (_, i) => encodeFrame(i + 1, Op.SIGN, 0, Buffer.from(String(i))));
  const out = new FrameDecoder().push(Buffer.concat(frames));
  t.equal(out.length, 100);
  t.same(out.map((f) => f.body.toString()), Array.from({ length: 100 }, (_, i) => String(i)));
});

t.test('a body handed out stays intact while later chunks arrive (no buffer reuse)', async (t) => {
  const d = new FrameDecoder();
  const a = encodeFrame(1, 1, 0, Buffer.alloc(100, 0xaa));
  const b = encodeFrame(2, 1, 0, Buffer.alloc(100_000, 0xbb));
  // Leave part of frame 2 pending so frame 1's body lives in the decoder's own buffer.
  const first = d.push(Buffer.concat([a.subarray(0, 10)]));
  t.equal(first.length, 0);
  const got = d.push(Buffer.concat([a.subarray(10), b.subarray(0, 50)]));
  t.equal(got.length, 1);
  const bodyA = got[0]?.body as Buffer;
  for (let i = 50; i < b.length; i += 4096) d.push(b.subarray(i, Math.min(b.length, i + 4096)));
  t.ok(bodyA.every((x) => x === 0xaa), 'frame 1 body unchanged after frame 2 filled the buffer');
});

t.test('frames queued in an outbox leave as one buffer that decodes to each of them', async (t) => {
  const out = new FrameOutbox();
  const req = { keyId: 'k1', mechanism: 'ecdsa-sha256' as const, data: Buffer.from('to be signed') };
  const at = out.reserve(HEADER_BYTES + SIGN_BODY.size(req));
  writeHeader(out.buf, at, SIGN_BODY.size(req), 1, Op.SIGN, 0);
  SIGN_BODY.write(out.buf, at + HEADER_BYTES, req);
  out.push(2, 0, FLAG_RESPONSE, Buffer.from('signature'), 10, 20);
  out.pushText(3, 1, FLAG_RESPONSE | FLAG_JSON, '{"code":"HSM_ERR_X","message":"é"}');
  t.equal(out.frames, 3);
  const batch = out.take() as Buffer;
  t.equal(out.bytes, 0, 'the outbox is empty once taken');
  t.equal(out.take(), undefined, 'nothing to take twice');
  const frames = new FrameDecoder().push(batch);
  t.same(frames.map((f) => f.requestId), [1, 2, 3]);
  t.same(readSign(frames[0]!.body), { ...req, prehashed: false, format: 'der' });
  t.match(frames[1], { code: 0, queueWaitUs: 10, serviceUs: 20 });
  t.same(readJson(frames[2]!.body), { code: 'HSM_ERR_X', message: 'é' });
  t.same(writeSign(req).subarray(HEADER_BYTES), frames[0]!.body, 'the same bytes as a frame of its own');
});

t.test('a batch handed out is never overwritten by later frames, however many', async (t) => {
  const out = new FrameOutbox(1024);
  out.push(1, 0, 0, Buffer.alloc(300, 0xaa));
  const first = out.take() as Buffer;
  // Past the slab's end: a new slab is taken, the first batch's bytes stay as they were.
  for (let i = 0; i < 20; i++) out.push(i + 2, 0, 0, Buffer.alloc(500, 0xbb));
  out.push(99, 0, 0, Buffer.alloc(5000, 0xcc));
  const second = out.take() as Buffer;
  t.same(new FrameDecoder().push(first).map((f) => f.body.every((x) => x === 0xaa)), [true]);
  const frames = new FrameDecoder(1 << 20).push(second);
  t.equal(frames.length, 21, 'the frames after the slab filled all arrive');
  t.equal(frames.at(-1)?.body.length, 5000, 'a frame larger than the slab fits');
});

t.test('a request the wire cannot carry is refused before anything is queued', async (t) => {
  t.throws(() => SIGN_BODY.size({ keyId: 'x'.repeat(256), mechanism: 'ecdsa-sha256', data: Buffer.alloc(1) }), { code: 'HSM_ERR_PROTOCOL' });
  t.throws(() => SIGN_BODY.size({ keyId: 'k', mechanism: 'md5' as 'ecdsa-sha256', data: Buffer.alloc(1) }), { code: 'HSM_ERR_PROTOCOL' });
});

t.test('an oversized frame is refused from its header alone, naming the limit', async (t) => {
  const d = new FrameDecoder(1024);
  const header = Buffer.alloc(HEADER_BYTES);
  writeHeader(header, 0, 1025, 42, Op.SIGN, 0);
  const good = encodeFrame(41, Op.SIGN, 0, Buffer.from('ok'));
  const frames = d.push(Buffer.concat([good, header]));
  t.same(frames.map((f) => f.requestId), [41], 'the frame before the oversized one is still served');
  t.ok(d.error instanceof ProtocolError);
  t.match(d.error, { code: 'HSM_ERR_FRAME_TOO_LARGE', requestId: 42, message: /1024/ });
  t.throws(() => d.push(Buffer.alloc(1)), ProtocolError, 'a failed stream stays failed');
});

t.test('a frame exactly at the limit is accepted', async (t) => {
  const out = new FrameDecoder(1024).push(encodeFrame(1, 1, 0, Buffer.alloc(1024)));
  t.equal(out[0]?.body.length, 1024);
});

t.test('sign and hmac bodies round-trip, with prehashed and raw flags', async (t) => {
  const data = randomBytes(32);
  const keyId = randomBytes(16).toString('hex');
  const f = new FrameDecoder().push(framed(writeSign({ keyId, mechanism: 'ecdsa-sha256', data, prehashed: true, format: 'raw' }), 9, Op.SIGN))[0];
  t.same(readSign(f?.body as Buffer), { keyId, mechanism: 'ecdsa-sha256', data, prehashed: true, format: 'raw' });
  const h = new FrameDecoder().push(framed(writeSign({ keyId, mechanism: 'hmac-sha512', data }), 9, Op.HMAC))[0];
  t.same(readSign(h?.body as Buffer), { keyId, mechanism: 'hmac-sha512', data, prehashed: false, format: 'der' });
});

t.test('verify, encrypt, decrypt and random bodies round-trip', async (t) => {
  const keyId = 'k'.repeat(32);
  const signature = randomBytes(512);
  const data = randomBytes(70);
  t.same(readVerify(framed(writeVerify({ keyId, mechanism: 'rsa-pss-sha384', data, signature }), 1, Op.VERIFY).subarray(HEADER_BYTES)),
    { keyId, mechanism: 'rsa-pss-sha384', data, signature, prehashed: false, format: 'der' });
  const aad = Buffer.from('aad');
  t.same(readEncrypt(writeEncrypt({ keyId, mechanism: 'aes-gcm', plaintext: data, aad }).subarray(HEADER_BYTES)), { keyId, mechanism: 'aes-gcm', plaintext: data, aad });
  t.same(readEncrypt(writeEncrypt({ keyId, mechanism: 'aes-gcm', plaintext: data, iv: Buffer.alloc(12) }).subarray(HEADER_BYTES)),
    { keyId, mechanism: 'aes-gcm', plaintext: data, iv: Buffer.alloc(12) }, 'a caller-supplied IV reaches the HSM (which refuses it)');
  t.same(readDecrypt(writeDecrypt({ keyId, mechanism: 'rsa-oaep-sha256', ciphertext: data }).subarray(HEADER_BYTES)), { keyId, mechanism: 'rsa-oaep-sha256', ciphertext: data });
  t.equal(readRandom(writeRandom(48).subarray(HEADER_BYTES)), 48);
});

t.test('JSON bodies carry buffers as bytes', async (t) => {
  const v = { masked: randomBytes(40), nested: [{ der: Buffer.from([1, 2, 3]) }], label: 'x' };
  t.same(readJson(writeJson(v).subarray(HEADER_BYTES)), v);
  t.equal(readJson(Buffer.alloc(0)), undefined);
});

t.test('truncated or malformed bodies are protocol errors, not crashes', async (t) => {
  const good = writeVerify({ keyId: 'abc', mechanism: 'ecdsa-sha256', data: Buffer.from('d'), signature: Buffer.alloc(64) }).subarray(HEADER_BYTES);
  t.throws(() => readVerify(good.subarray(0, 10)), { code: 'HSM_ERR_PROTOCOL' });
  t.throws(() => readSign(Buffer.from([200, 0, 0])), { code: 'HSM_ERR_PROTOCOL' }, 'unknown mechanism number');
  t.throws(() => readSign(Buffer.alloc(0)), { code: 'HSM_ERR_PROTOCOL' });
  t.throws(() => readRandom(Buffer.from([0xff, 0xff, 0xff, 0xff])), { code: 'HSM_ERR_PROTOCOL' }, 'random request over the limit');
  t.throws(() => readRandom(Buffer.from([0, 0, 0, 1, 9])), { code: 'HSM_ERR_PROTOCOL' }, 'trailing bytes');
  t.throws(() => readJson(Buffer.from('{not json')), { code: 'HSM_ERR_PROTOCOL' });
  t.throws(() => writeSign({ keyId: 'k', mechanism: 'md5-rsa' as never, data: Buffer.alloc(1) }), { code: 'HSM_ERR_PROTOCOL' });
});

t.test('random bytes never crash the decoder or the body readers', async (t) => {
  let frames = 0;
  for (let i = 0; i < 300; i++) {
    const d = new FrameDecoder(4096);
    {
      // Well-formed frames with random opcodes and bodies, then random garbage.
      const stream = Buffer.concat([encodeFrame(i, i % 0x110, 0, randomBytes(i % 120)), randomBytes(1 + (i % 200))]);
      for (const f of d.push(stream)) {
        frames++;
        for (const read of [readSign, readVerify, readEncrypt, readDecrypt, readRandom, readJson]) {
          try { read(f.body); } catch (e) { if (!(e instanceof ProtocolError)) throw e; }
        }
      }
    }
  }
  t.pass(`300 random streams, ${frames} frames decoded, only ProtocolErrors thrown`);
});
