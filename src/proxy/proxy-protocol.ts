// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): the header a layer-4
// balancer (HAProxy `send-proxy[-v2]`, AWS NLB) writes before the client's first byte, so the
// client's address survives the balancer. A strict, incremental reader: it says "need more" until
// the header is whole, refuses a malformed one as soon as a byte proves it so, and never reads past
// the header (the rest is the client's TLS).
import { isIPv4, isIPv6, SocketAddress } from 'node:net';

/** An IP endpoint, addresses in their canonical text form (RFC 5952 for IPv6). */
export interface PeerAddress { address: string; port: number; family: 'IPv4' | 'IPv6' }

/** A parsed header: PROXY names the client; LOCAL (v2) and UNKNOWN (v1) mean "use the connection's own endpoints". */
export type ProxyHeader =
  | { version: 1 | 2; command: 'proxy'; source: PeerAddress; destination: PeerAddress }
  | { version: 1 | 2; command: 'local' };

/** The outcome of reading what has arrived so far. */
export type ProxyHeaderRead = { done: false } | { done: true; header: ProxyHeader; length: number };

/** A header that is not one; the connection must be closed (nothing of it may be trusted). */
export class ProxyProtocolError extends Error {
  readonly code = 'PROXY_ERR_PROXY_PROTOCOL';
}

const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
// v1 §2.1: 107 bytes is the longest line, CRLF included.
const V1_MAX = 107;
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V2_FIXED = 16;

/** Reads a PROXY header from the start of `buf` (everything received so far). Throws ProxyProtocolError. */
export function readProxyHeader(buf: Buffer): ProxyHeaderRead {
  if (buf.length === 0) return { done: false };
  // The two versions differ in the first byte ('P' or CR), so a wrong one is refused at once.
  if (buf[0] === V1_PREFIX[0]) return readV1(buf);
  if (buf[0] === V2_SIGNATURE[0]) return readV2(buf);
  throw new ProxyProtocolError('the connection did not start with a PROXY protocol header');
}

function startsAs(buf: Buffer, prefix: Buffer): boolean {
  const n = Math.min(buf.length, prefix.length);
  return buf.subarray(0, n).equals(prefix.subarray(0, n));
}

function readV1(buf: Buffer): ProxyHeaderRead {
  if (!startsAs(buf, V1_PREFIX)) throw new ProxyProtocolError('not a PROXY protocol v1 header');
  const lf = buf.indexOf(0x0a, 0);
  if (lf === -1) {
    if (buf.length >= V1_MAX) throw new ProxyProtocolError(`PROXY v1 header longer than ${V1_MAX} bytes`);
    return { done: false };
  }
  const length = lf + 1;
  if (length > V1_MAX) throw new ProxyProtocolError(`PROXY v1 header longer than ${V1_MAX} bytes`);
  if (buf[lf - 1] !== 0x0d) throw new ProxyProtocolError('PROXY v1 header not ended by CRLF');
  const line = buf.toString('latin1', V1_PREFIX.length, lf - 1);
  // UNKNOWN: the balancer could not tell (v1 §2.1); whatever follows is to be ignored.
  if (line === 'UNKNOWN' || line.startsWith('UNKNOWN ')) return { done: true, header: { version: 1, command: 'local' }, length };
  const parts = line.split(' ');
  if (parts.length !== 5) throw new ProxyProtocolError('PROXY v1 header must be "PROXY TCP4|TCP6 <src> <dst> <sport> <dport>"');
  const [proto, src, dst, sport, dport] = parts as [string, string, string, string, string];
  if (proto !== 'TCP4' && proto !== 'TCP6') throw new ProxyProtocolError(`PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN, got "${proto.slice(0, 16)}"`);
  const family = proto === 'TCP4' ? 'IPv4' : 'IPv6';
  return {
    done: true, length,
    header: { version: 1, command: 'proxy', source: v1Endpoint(src, sport, family), destination: v1Endpoint(dst, dport, family) },
  };
}

function v1Endpoint(address: string, port: string, family: 'IPv4' | 'IPv6'): PeerAddress {
  const valid = family === 'IPv4' ? isIPv4(address) : isIPv6(address) && !address.includes('%');
  if (!valid) throw new ProxyProtocolError(`PROXY v1 header: "${address.slice(0, 48)}" is not an ${family} address`);
  // Decimal without leading zeros (v1 §2.1: "0 to 65535").
  if (!/^(0|[1-9]\d{0,4})$/.test(port) || Number(port) > 65535) throw new ProxyProtocolError(`PROXY v1 header: "${port.slice(0, 8)}" is not a port`);
  return { address: canonical(address, family), port: Number(port), family };
}

function readV2(buf: Buffer): ProxyHeaderRead {
  if (!startsAs(buf, V2_SIGNATURE)) throw new ProxyProtocolError('not a PROXY protocol v2 header');
  if (buf.length < V2_FIXED) return { done: false };
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) throw new ProxyProtocolError(`PROXY v2 header with version ${verCmd >> 4}`);
  const command = verCmd & 0x0f;
  if (command > 1) throw new ProxyProtocolError(`PROXY v2 header with unknown command ${command}`);
  const fam = buf[13]!;
  const length = V2_FIXED + buf.readUInt16BE(14);
  if (buf.length < length) return { done: false };
  const body = buf.subarray(V2_FIXED, length);
  // LOCAL (health checks of the balancer itself): address block and TLVs ignored (v2 §2.2).
  if (command === 0) return { done: true, header: { version: 2, command: 'local' }, length };
  const family = fam >> 4;
  const transport = fam & 0x0f;
  // Only TCP over IPv4/IPv6 names a client this listener can use; for the rest v2 §2.2 lets the
  // receiver refuse, which is safer than attributing the connection to the balancer.
  if (transport !== 1 || (family !== 1 && family !== 2)) throw new ProxyProtocolError(`PROXY v2 header for an unsupported address family/transport 0x${fam.toString(16).padStart(2, '0')}`);
  const size = family === 1 ? 4 : 16;
  const block = size * 2 + 4;
  if (body.length < block) throw new ProxyProtocolError(`PROXY v2 header: ${body.length} bytes of address, ${block} needed`);
  checkTlvs(body.subarray(block));
  const ipFamily = family === 1 ? 'IPv4' : 'IPv6';
  const endpoint = (i: 0 | 1): PeerAddress => ({
    address: binaryAddress(body.subarray(size * i, size * (i + 1)), ipFamily),
    port: body.readUInt16BE(size * 2 + 2 * i), family: ipFamily,
  });
  const source = endpoint(0);
  const destination = endpoint(1);
  return { done: true, header: { version: 2, command: 'proxy', source, destination }, length };
}

/** The TLVs after the addresses must tile the rest exactly (v2 §2.2.1); their content is not used. */
function checkTlvs(tlvs: Buffer): void {
  let at = 0;
  while (at < tlvs.length) {
    if (tlvs.length - at < 3) throw new ProxyProtocolError('PROXY v2 header: truncated TLV');
    const len = tlvs.readUInt16BE(at + 1);
    at += 3 + len;
    if (at > tlvs.length) throw new ProxyProtocolError('PROXY v2 header: a TLV runs past the header');
  }
}

function binaryAddress(bytes: Buffer, family: 'IPv4' | 'IPv6'): string {
  if (family === 'IPv4') return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return canonical(groups.join(':'), 'IPv6');
}

/** The canonical text of an address, so the same client is one string in logs, headers and limits. */
function canonical(address: string, family: 'IPv4' | 'IPv6'): string {
  return family === 'IPv4' ? address : new SocketAddress({ address, family: 'ipv6' }).address;
}
