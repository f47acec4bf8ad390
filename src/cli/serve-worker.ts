// Entry of one `hsmproxy serve` worker process (workers: N), forked by the primary through
// node:cluster; everything it does is in serve-workers.ts.
import { runWorker } from './serve-workers.js';

await runWorker();
