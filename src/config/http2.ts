// The `http2:` section: limits of HTTP/2 client connections (ALPN h2). Header list size and
// header count come from `http:` and the idle timeout from `timeouts.idleMs`, as for HTTP/1.1.
import { at, type Reader } from './reader.js';

/** Limits of HTTP/2 client connections. */
export interface Http2Config {
  /** SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §6.5.2); streams beyond it are refused. */
  maxConcurrentStreams: number;
  /** SETTINGS_HEADER_TABLE_SIZE: the HPACK dynamic table (RFC 7541 §4.2) the client may use, bytes. */
  headerTableSize: number;
  /** SETTINGS_INITIAL_WINDOW_SIZE: bytes one stream may send ahead of the proxy reading them. */
  streamWindowBytes: number;
  /** The connection-level receive window, bytes. */
  connectionWindowBytes: number;
  /** Client stream resets (RST_STREAM) allowed in a burst; past the burst and rate: GOAWAY and close. */
  resetBurst: number;
  /** Resets per second the burst refills at. */
  resetsPerSecond: number;
  /** The client's preface SETTINGS and its acknowledgement of ours must arrive within this, ms. */
  settingsTimeoutMs: number;
}

export const HTTP2_DEFAULTS: Http2Config = {
  // 128: what the issue, nginx (http2_max_concurrent_streams) and Envoy-style fronts settle on.
  maxConcurrentStreams: 128,
  headerTableSize: 4096,
  streamWindowBytes: 256 * 1024,
  connectionWindowBytes: 1024 * 1024,
  // nghttp2's own limit (burst 1000, 33/s) is far above what a browser cancels; ten times tighter.
  resetBurst: 100,
  resetsPerSecond: 33,
  settingsTimeoutMs: 10_000,
};

const KEYS = Object.keys(HTTP2_DEFAULTS);

/** Reads `http2:` (every field optional). */
export function readHttp2(r: Reader, v: unknown, path: string): Http2Config | undefined {
  const d = HTTP2_DEFAULTS;
  const o = v === undefined ? {} : r.object(v, path, KEYS);
  if (!o) return undefined;
  const out = {
    maxConcurrentStreams: r.integer(o.maxConcurrentStreams, at(path, 'maxConcurrentStreams'), { def: d.maxConcurrentStreams, min: 1, max: 10_000, what: 'a number of streams' }),
    // RFC 9113 §6.5.2 bounds: windows up to 2^31-1, the HPACK table up to what nghttp2 accepts.
    headerTableSize: r.integer(o.headerTableSize, at(path, 'headerTableSize'), { def: d.headerTableSize, min: 0, max: 65_536, what: 'bytes' }),
    streamWindowBytes: r.integer(o.streamWindowBytes, at(path, 'streamWindowBytes'), { def: d.streamWindowBytes, min: 1024, max: 2 ** 31 - 1, what: 'bytes' }),
    connectionWindowBytes: r.integer(o.connectionWindowBytes, at(path, 'connectionWindowBytes'), { def: d.connectionWindowBytes, min: 65_535, max: 2 ** 31 - 1, what: 'bytes' }),
    resetBurst: r.integer(o.resetBurst, at(path, 'resetBurst'), { def: d.resetBurst, min: 1, max: 100_000, what: 'a number of resets' }),
    resetsPerSecond: r.integer(o.resetsPerSecond, at(path, 'resetsPerSecond'), { def: d.resetsPerSecond, min: 1, max: 100_000, what: 'resets per second' }),
    settingsTimeoutMs: r.integer(o.settingsTimeoutMs, at(path, 'settingsTimeoutMs'), { def: d.settingsTimeoutMs, min: 100, max: 600_000, what: 'milliseconds' }),
  };
  for (const x of Object.values(out)) if (x === undefined) return undefined;
  return out as Http2Config;
}
