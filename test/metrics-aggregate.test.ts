// With workers, the primary's /metrics source sums every worker's registry over IPC.
import t from 'tap';
import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import { clusterSource } from '../src/metrics/index.js';

const workerFile = fileURLToPath(new URL('./fixtures/metrics-worker.ts', import.meta.url));

t.test('the cluster source aggregates histograms across workers', async (t) => {
  cluster.setupPrimary({ exec: workerFile, execArgv: ['--import=tsx'], silent: true });
  const workers: Worker[] = [];
  t.teardown(() => { for (const w of workers) w.process.kill(); });
  await Promise.all([0, 1].map(() => new Promise<void>((resolve, reject) => {
    const w = cluster.fork();
    workers.push(w);
    w.once('message', () => resolve());
    w.once('exit', (code) => reject(new Error(`worker exited with ${code}`)));
  })));
  const source = clusterSource();
  const text = await source.metrics();
  t.match(source.contentType, /text\/plain/);
  t.match(text, /hsmproxy_http_request_duration_seconds_count\{method="GET",status_class="2xx",route="app"\} 2/, 'one request from each of two workers');
  t.match(text, /hsmproxy_hsm_in_flight\{hsm="hsm-0"\} 6/, 'in-flight requests add up across workers');
  t.match(text, /hsmproxy_hsm_up\{hsm="hsm-0"\} 0/, 'an HSM one worker cannot reach is reported down');
  t.match(text, /hsmproxy_hsm_keys\{hsm="hsm-0",kind="token"\} 10/, 'keys on one HSM are counted once, not once per worker');
});
