// The client gate: the one place each accepted TCP connection passes before any TLS byte is read,
// and where its client's address is settled. With `proxyProtocol` on the listener, the TCP peer
// must be a listed balancer and must send a well-formed PROXY header (v1 or v2), whose source
// becomes the client's address; otherwise the TCP peer is the client. Everything per client
// downstream (logs, X-Forwarded-For, per-client limits) reads `TlsSocket.remoteAddress`, which
// is this address. A refused connection is closed without a TLS byte sent (the peer is not
// speaking TLS to us yet) and counted.
import { channel } from 'node:diagnostics_channel';
import { BlockList, isIPv6, type Socket } from 'node:net';
import type { ListenerConfig } from '../config/index.js';
import { CHANNELS, type ClientGateEvent } from '../metrics/index.js';
import type { ConnectionGate, ConnectionPreface } from '../tls/index.js';
import { ProxyProtocolError, readProxyHeader, type PeerAddress } from './proxy-protocol.js';

/** A connection that passed the gate: who the client is, and who the TCP peer is. */
export interface AcceptedConnection {
  listener: string;
  /** The client: the PROXY header's source, or the TCP peer when the listener has no PROXY protocol. */
  client: PeerAddress;
  /** The TCP peer: the balancer under PROXY protocol, else the client itself. */
  transport: PeerAddress;
  /** How `client` was learnt: the PROXY header's version, 'local' (balancer's own check), or 'tcp'. */
  via: 'proxy-v1' | 'proxy-v2' | 'local' | 'tcp';
}

/** A refused connection's reason, as counted (hsmproxy_client_gate_connections_total's result). */
export type GateRefusal = 'source_not_allowed' | 'malformed' | 'timeout' | 'closed';

/** Builds a BlockList from CIDR blocks or addresses (validated by config/). */
export function cidrList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [addr, bits] = cidr.split('/') as [string, string | undefined];
    const family = isIPv6(addr) ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(addr, family);
    else list.addSubnet(addr, Number(bits), family);
  }
  return list;
}

/** The most bytes a PROXY header can take (v2: 16 + 65535); past it without one, the peer is refused. */
const MAX_HEADER = 16 + 0xffff;

const gateChannel = channel(CHANNELS.clientGate);

function peerOf(raw: Socket): PeerAddress {
  return {
    address: raw.remoteAddress ?? '', port: raw.remotePort ?? 0, family: raw.remoteFamily === 'IPv6' ? 'IPv6' : 'IPv4',
  };
}

/** Options of a listener's gate. */
export interface ClientGateOptions {
  /** How long a balancer has to send the whole PROXY header (the handshake timeout). */
  headerTimeoutMs: number;
  /** Told of every connection refused, with the TCP peer's address. */
  onRefused?: (reason: GateRefusal, transport: PeerAddress, detail: string) => void;
}

/** The gate of one listener (tls/ TlsServer runs it on every accepted connection). */
export function clientGate(listener: ListenerConfig, opts: ClientGateOptions): ConnectionGate {
  const pp = listener.proxyProtocol;
  const allowed = pp ? cidrList(pp.from) : undefined;
  const publish = (result: ClientGateEvent['result']): void => {
    if (gateChannel.hasSubscribers) gateChannel.publish({ listener: listener.name, result } satisfies ClientGateEvent);
  };
  const pass = (c: AcceptedConnection, start: (p?: ConnectionPreface) => void, head?: Buffer): void => {
    publish(c.via === 'tcp' ? 'direct' : c.via);
    start({ ...(c.via === 'proxy-v1' || c.via === 'proxy-v2' ? { client: c.client } : {}), ...(head ? { head } : {}) });
  };
  const refuse = (raw: Socket, reason: GateRefusal, transport: PeerAddress, detail: string): void => {
    raw.destroy();
    publish(reason);
    opts.onRefused?.(reason, transport, detail);
  };
  return (raw, start) => {
    const transport = peerOf(raw);
    if (!allowed) {
      pass({ listener: listener.name, client: transport, transport, via: 'tcp' }, start);
      return;
    }
    // A header from anyone but a listed balancer would let any client choose its own address.
    if (!transport.address || !allowed.check(transport.address, transport.family === 'IPv6' ? 'ipv6' : 'ipv4')) {
      refuse(raw, 'source_not_allowed', transport, `${transport.address} is not in proxyProtocol.from`);
      return;
    }
    let buf: Buffer = Buffer.alloc(0);
    const done = (): void => {
      clearTimeout(timer);
      raw.off('data', onData);
      raw.off('end', onEnd);
      raw.off('close', onEnd);
      raw.off('error', onEnd);
    };
    const timer = setTimeout(() => {
      done();
      refuse(raw, 'timeout', transport, `no complete PROXY header within ${opts.headerTimeoutMs} ms`);
    }, opts.headerTimeoutMs);
    timer.unref?.();
    const onEnd = (): void => {
      done();
      refuse(raw, 'closed', transport, 'closed before a complete PROXY header');
    };
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      let read;
      try {
        read = readProxyHeader(buf);
      } catch (err) {
        done();
        refuse(raw, 'malformed', transport, err instanceof ProxyProtocolError ? err.message : String(err));
        return;
      }
      if (!read.done) {
        if (buf.length > MAX_HEADER) { done(); refuse(raw, 'malformed', transport, 'PROXY header too long'); }
        return;
      }
      done();
      raw.pause(); // TLS takes the stream from here; the bytes after the header go with it
      const h = read.header;
      const client = h.command === 'proxy' ? h.source : transport;
      const via = h.command === 'local' ? 'local' : h.version === 1 ? 'proxy-v1' : 'proxy-v2';
      pass({ listener: listener.name, client, transport, via }, start, buf.subarray(read.length));
    };
    raw.on('data', onData);
    raw.once('end', onEnd);
    raw.once('close', onEnd);
    // Until TLS takes the socket, a reset must not become an uncaught 'error'.
    raw.once('error', onEnd);
  };
}
