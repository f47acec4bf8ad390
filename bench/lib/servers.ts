// The TLS servers bench/tls.ts compares, each answering one tiny HTTP/1.1 request per
// connection: hsmproxy's TlsServer (any Signer: a soft key, or the engine over an embedded
// cluster) and node:tls with the same key file. Both set TCP_NODELAY, as hsmproxy does.
import tls from 'node:tls';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { AddressInfo, Socket } from 'node:net';
import { createPrivateKey } from 'node:crypto';
import { createServer as createTlsServer, type Signer } from '../../src/tls/index.js';
import { Engine, SimBackend, SoftBackend, simClientFrom, writeKeyReference, type AdmissionOptions, type KeyHandle } from '../../src/engine/index.js';
import { startEmbeddedCluster } from '../../src/hsm/cluster/embedded.js';
import { readManifest, type ManifestProfile } from '../../src/hsm/cluster/manifest.js';
import { cpuMsOf } from './procs.js';

/** A server under test. */
export interface RunningServer {
  port: number;
  /** Socket writes made so far (hsmproxy only: counted where net.Socket hands data to libuv). */
  writes?: () => number;
  close(): Promise<void>;
}

const RESPONSE = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');

/** Answers the first request with 200 "ok" and closes. */
function answerOnce(socket: Duplex): void {
  socket.on('error', () => { /* clients hang up abruptly */ });
  socket.once('data', () => socket.end(RESPONSE));
  socket.on('end', () => socket.end());
}

/** hsmproxy's TlsServer with the given certificate chain and signer. */
export async function startHsmproxyTls(chain: Buffer[], signer: Signer, serverFlight?: 'whole' | 'split'): Promise<RunningServer> {
  const server = createTlsServer({ certificates: [{ chain, signer }], serverFlight }, answerOnce);
  server.on('tlsClientError', () => { /* counted by the client */ });
  let writes = 0;
  server.netServer.on('connection', (raw: Socket) => {
    raw.setNoDelay(true);
    // Every batch net.Socket gives libuv passes _write or _writev: one write system call each.
    const w = raw as Socket & { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void };
    const write = w._write.bind(raw);
    const writev = w._writev.bind(raw);
    w._write = (...a) => { writes++; write(...a); };
    w._writev = (...a) => { writes++; writev(...a); };
  });
  server.listen({ port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, writes: () => writes, close: () => new Promise((r) => server.close(() => r())) };
}

/** node:tls with the key file, TLS 1.3 only. */
export async function startNodeTls(certFile: string, keyFile: string): Promise<RunningServer> {
  const server = tls.createServer({ key: readFileSync(keyFile), cert: readFileSync(certFile), minVersion: 'TLSv1.3' }, answerOnce);
  server.on('tlsClientError', () => { /* counted by the client */ });
  server.on('connection', (raw: Socket) => raw.setNoDelay(true));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
}

/** The engine's soft backend signing with the key file (hsmproxy with a soft key). */
export async function softEngineSigner(keyFile: string): Promise<{ signer: Signer; close(): Promise<void> }> {
  const soft = new SoftBackend();
  const engine = new Engine({ backends: { soft }, admission: { maxInFlight: 4096 } });
  // As the proxy's listeners do: the TLS server verifies RSA signatures itself before sending.
  const signer = await engine.signer(await engine.loadSoftKey(keyFile), { verify: 'none' });
  return { signer, close: () => engine.close() };
}

/** An embedded cluster holding the key file's key (imported once, replicated): the engine's signer for it. */
export interface ClusterSigner {
  signer: Signer;
  /** CPU ms used so far by the HSM node processes. */
  hsmCpuMs(): number;
  close(): Promise<void>;
}

/** An embedded cluster holding one imported key, an engine over it, and a key reference file for it. */
export interface ClusterKey {
  engine: Engine;
  handle: KeyHandle;
  /** The key reference (fake PEM) naming the key, in the cluster's temp dir. */
  refFile: string;
  /** CPU ms used so far by the HSM node processes. */
  hsmCpuMs(): number;
  /** The HSM node processes. */
  hsmPids: number[];
  close(): Promise<void>;
}

/** Starts a temporary embedded cluster and imports the key file's key into it (replicated to every HSM). */
export async function clusterKey(
  keyFile: string, hsms: number, profile: ManifestProfile, admission: AdmissionOptions = { maxInFlight: 4096 },
): Promise<ClusterKey> {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-bench-cluster-'));
  const cluster = await startEmbeddedCluster({ dir, hsms, profile, scryptCost: 1024 });
  try {
    const { clusterId } = await readManifest(dir);
    const backend = new SimBackend({ client: simClientFrom(cluster.client), clusterId, credentials: cluster.credentials.cu, ownsClient: false });
    const handle = await backend.importKey(createPrivateKey(readFileSync(keyFile)), `bench-${hsms}-${profile}`);
    const engine = new Engine({ backends: { sim: backend }, admission });
    engine.adopt(handle, backend);
    const refFile = join(dir, 'bench-key.ref.pem');
    await writeKeyReference(handle, refFile);
    const pids = [...cluster.supervisor.pids().values()];
    return {
      engine, handle, refFile,
      hsmCpuMs: () => pids.reduce((a, p) => a + cpuMsOf(p), 0), hsmPids: pids,
      close: async () => {
        await engine.close();
        await cluster.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** The engine's signer for a key imported into a temporary embedded cluster. */
export async function clusterSigner(keyFile: string, hsms: number, profile: ManifestProfile): Promise<ClusterSigner> {
  const ck = await clusterKey(keyFile, hsms, profile);
  try {
    return { signer: await ck.engine.signer(ck.handle, { verify: 'none' }), hsmCpuMs: ck.hsmCpuMs, close: ck.close };
  } catch (err) {
    await ck.close();
    throw err;
  }
}
