// The upstream every proxy in bench/proxy.ts forwards to: a node:http server in its own process
// answering each request with a small fixed body. Prints its port on stdout.
import http from 'node:http';

const body = Buffer.from('hello from the upstream\n');
const server = http.createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.address() as { port: number }).port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('disconnect', () => process.exit(0));
