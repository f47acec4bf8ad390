// The node's log line for a refused handshake names the peer (address and port) and why: the
// certificate verdict for a certificate that is not a valid client certificate (a node
// certificate, one from another CA), the TLS error otherwise. Before, a refused certificate was
// logged as reason "socket hang up" with no peer.
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { connect as tlsConnect } from 'node:tls';
import { startNode } from '../src/hsm/cluster/run-node.js';
import { clusterPath } from '../src/hsm/cluster/manifest.js';
import { clientTls, tempCluster, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

const cluster = await tempCluster();
const other = await tempCluster();
const logs: Array<{ level: string; msg: string; fields?: Record<string, unknown> }> = [];
const node = await startNode({ dir: cluster.dir, port: 0, scryptCost: TEST_SCRYPT_COST, log: (level, msg, fields) => logs.push({ level, msg, ...(fields ? { fields } : {}) }) });
t.teardown(async () => {
  await node.stop();
  await cluster.cleanup();
  await other.cleanup();
});
const { ca } = await clientTls(cluster);

// Connects with `cert`/`key` (or none) and returns the refusal the node logged, with our local port.
async function refusedWith(creds: { cert?: Buffer; key?: Buffer }): Promise<{ line?: Record<string, unknown>; localPort?: number }> {
  const before = node.appliance.stats.refused;
  const from = logs.length;
  const socket = tlsConnect({ host: '127.0.0.1', port: node.port, ca, ...creds, minVersion: 'TLSv1.3', checkServerIdentity: () => undefined });
  let localPort: number | undefined;
  socket.on('connect', () => { localPort = socket.localPort; });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  for (let i = 0; i < 200 && node.appliance.stats.refused === before; i++) await new Promise((r) => setTimeout(r, 10));
  const line = logs.slice(from).find((l) => l.msg === 'refused a connection');
  return { ...(line?.fields ? { line: line.fields } : {}), ...(localPort !== undefined ? { localPort } : {}) };
}

t.test("a node's own certificate presented as a client certificate", async (t) => {
  const h = cluster.manifest.hsms[0]!;
  const { line, localPort } = await refusedWith({ cert: await readFile(clusterPath(cluster.dir, h.cert)), key: await readFile(clusterPath(cluster.dir, h.key)) });
  t.match(line, { peer: '127.0.0.1', peerPort: localPort, code: 'INVALID_PURPOSE', reason: /not a client certificate/ });
  t.notMatch(String(line?.reason), /hang up/);
});

t.test("a client certificate from another cluster's CA", async (t) => {
  const foreign = await clientTls(other);
  const { line, localPort } = await refusedWith({ cert: foreign.cert, key: foreign.key });
  t.match(line, { peer: '127.0.0.1', peerPort: localPort, code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', reason: /not issued by this cluster's customer CA/ });
});

t.test('no client certificate: the TLS error code and its short reason', async (t) => {
  const { line, localPort } = await refusedWith({});
  t.match(line, { peer: '127.0.0.1', peerPort: localPort, code: 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE', reason: 'peer did not return a certificate' });
});
