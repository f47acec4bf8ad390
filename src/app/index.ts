// app/: the composition root. Builds a running proxy from a config (startServing: the HSM side,
// the demo, and one proxy runtime per serving process, in this process or in workers), the
// scaling advisor over the simulated cluster, and the cluster sessions commands open. cli/ calls
// it and prints; bench/ opens clusters through it.
// May import every module below cli/ (config, engine, hsm, metrics, pki, proxy, tls); never cli/ or bench/.
export { writeAdminRecord, readAdminRecord, adminUrl, ADMIN_RECORD, type AdminRecord } from './admin-record.js';
export { openCluster } from './cluster-session.js';
export { UsageError, WorkerReloadError, WorkerStartError } from './errors.js';
export { describeCluster, hsmReadiness, openHsmSide, publishHsmState, type HsmSide } from './hsm-side.js';
export { startProxyRuntime, type ProxyRuntime, type ProxyRuntimeOptions } from './runtime.js';
export { advisorConfig, scalingFor, startScaling, type ScalingRuntime, type StartScalingOptions } from './scaling.js';
export { packageRoot, startServing, type Serving } from './serve.js';
export { workerCount } from './workers/primary.js';
