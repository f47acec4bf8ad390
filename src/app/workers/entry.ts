// Entry of one `hsmproxy serve` worker process (workers: N), forked by the primary through
// node:cluster; everything it does is in worker.ts.
import { runWorker } from './worker.js';

await runWorker();
