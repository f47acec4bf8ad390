// proxy/http2/: HTTP/2 to clients (ALPN h2) with node:http2 over the TLS socket; each stream is a
// ProxyExchange for the same Forwarder as HTTP/1.1. Imports proxy/ siblings and config/ types only.
import { DEFAULTS, HTTP2_DEFAULTS, type Config } from '../../config/index.js';
import type { Http2Policy } from './server.js';

export { Http2Front, type Http2CloseReason, type Http2Handler, type Http2Policy } from './server.js';
export { H2Exchange, requestHead } from './exchange.js';

// RFC 9113 §6.5.2 counts 32 octets of overhead per field on top of name and value; the
// HTTP/1.1 limit counts the bytes of the head, so the same headers fit both.
const FIELD_OVERHEAD = 32;
// :method, :scheme, :authority, :path (and :protocol) are fields too for node's pair count.
const PSEUDO_FIELDS = 5;

/** The HTTP/2 limits of a configuration: `http2:` plus the header limits and idle timeout of HTTP/1.1. */
export function http2Policy(config: Config): Http2Policy {
  const c = config.http2 ?? HTTP2_DEFAULTS;
  return {
    maxConcurrentStreams: c.maxConcurrentStreams,
    headerTableSize: c.headerTableSize,
    maxHeaderListSize: config.http.maxHeaderBytes + FIELD_OVERHEAD * config.http.maxHeaders,
    maxHeaderListPairs: config.http.maxHeaders + PSEUDO_FIELDS,
    streamWindowBytes: c.streamWindowBytes,
    connectionWindowBytes: c.connectionWindowBytes,
    resetBurst: c.resetBurst,
    resetsPerSecond: c.resetsPerSecond,
    settingsTimeoutMs: c.settingsTimeoutMs,
    idleMs: config.timeouts.idleMs,
    bodyIdleMs: config.timeouts.bodyIdleMs ?? DEFAULTS.timeouts.bodyIdleMs,
  };
}
