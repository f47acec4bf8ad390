// The compose stack's demo upstream (plain node, no dependencies): answers /healthz, and echoes
// method, path and headers as JSON on any other path. Listens on $PORT (default 8080) on $HOST.
import http from 'node:http';

const host = process.env.HOST ?? '0.0.0.0';
const port = Number(process.env.PORT ?? 8080);

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    return;
  }
  const body = JSON.stringify({ upstream: 'demo', method: req.method, path: req.url, headers: req.headers }) + '\n';
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
});
server.listen(port, host, () => process.stdout.write(`demo upstream listening on ${host}:${server.address().port}\n`));
// Compose stops containers with SIGTERM; exit at once (no state to save).
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
