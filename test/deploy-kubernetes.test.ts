// deploy/kubernetes, checked without a cluster (as the Docker test checks the Dockerfile): the
// proxies' ports and probes agree with their config, every container has resources and runs as
// non-root, secrets are only ever in Secrets (never in a ConfigMap), the HSM names the cluster is
// made with are the StatefulSet pods' DNS names, and the PDB, HPA and Service select the proxies.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { parseConfig } from '../src/config/index.js';
import { repoRoot } from './helpers/cli.js';

// Manifests are loosely typed trees; each check reads the fields it needs.
type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const dir = join(repoRoot, 'deploy/kubernetes');
const files = readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
const docs: Obj[] = files.flatMap((f) => parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map((d) => {
  if (d.errors.length > 0) throw new Error(`${f}: ${d.errors[0]!.message}`);
  return d.toJS() as Obj;
}));
const find = (kind: string, name: string): Obj => {
  const d = docs.find((x) => x.kind === kind && x.metadata?.name === name);
  if (!d) throw new Error(`no ${kind} ${name} in deploy/kubernetes`);
  return d;
};
const workloads = docs.filter((d) => ['Deployment', 'StatefulSet', 'Job'].includes(d.kind));
const podOf = (w: Obj): Obj => w.spec.template.spec;
const deployment = find('Deployment', 'hsmproxy');
const pod = podOf(deployment);
const proxy = pod.containers[0];
const configYaml = find('ConfigMap', 'hsmproxy-config').data['hsmproxy.yaml'] as string;
const config = parseConfig(configYaml, { checkFiles: false });

t.test('kustomization lists every manifest, all in namespace hsmproxy', async (t) => {
  const k = parseAllDocuments(readFileSync(join(dir, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as Obj;
  t.same([...k.resources].sort(), [...files].sort());
  for (const d of docs.filter((x) => x.kind !== 'Namespace')) t.equal(d.metadata.namespace, 'hsmproxy', `${d.kind} ${d.metadata.name}`);
});

t.test('the proxies\' container ports, probes and Service agree with their config', async (t) => {
  const ports = Object.fromEntries(proxy.ports.map((p: Obj) => [p.name, p.containerPort]));
  t.equal(ports.https, config.listeners[0]!.port, 'https is the listener port');
  t.equal(ports.admin, config.admin.port, 'admin is the admin port');
  t.equal(config.listeners[0]!.address, '0.0.0.0', 'the listener is reachable from outside the pod');
  t.equal(config.admin.address, '0.0.0.0', 'so is the admin port (probes, Prometheus)');
  t.match(proxy.readinessProbe, { httpGet: { path: '/readyz', port: 'admin' } });
  t.match(proxy.livenessProbe, { httpGet: { path: '/healthz', port: 'admin' } });
  const annotations = deployment.spec.template.metadata.annotations;
  t.same(annotations, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(config.admin.port), 'prometheus.io/path': '/metrics' });
  const svc = find('Service', 'hsmproxy');
  t.same(svc.spec.selector, deployment.spec.selector.matchLabels);
  t.equal(svc.spec.ports[0].targetPort, 'https');
  t.ok(pod.terminationGracePeriodSeconds * 1000 > config.timeouts.shutdownMs, 'the kill comes after the drain deadline');
});

t.test('every container has requests and limits and runs as non-root without privilege escalation', async (t) => {
  t.ok(workloads.length >= 4);
  for (const w of workloads) {
    const spec = podOf(w);
    t.equal(spec.securityContext?.runAsNonRoot, true, `${w.metadata.name} runs as non-root`);
    t.equal(spec.automountServiceAccountToken, false, `${w.metadata.name} needs no API token`);
    for (const c of spec.containers) {
      for (const r of ['cpu', 'memory']) {
        t.ok(c.resources?.requests?.[r], `${w.metadata.name}/${c.name} requests ${r}`);
        t.ok(c.resources?.limits?.[r], `${w.metadata.name}/${c.name} limits ${r}`);
      }
      t.equal(c.securityContext?.allowPrivilegeEscalation, false, `${w.metadata.name}/${c.name}`);
    }
  }
});

t.test('secrets only in Secrets: no ConfigMap holds a key, a password or credentials, and the proxies never mount the cluster directory', async (t) => {
  for (const cm of docs.filter((d) => d.kind === 'ConfigMap')) {
    const text = JSON.stringify(cm.data);
    t.notMatch(text, /PRIVATE KEY|BEGIN CERTIFICATE/, `${cm.metadata.name} holds no PEM`);
    t.notMatch(text, /(password|pin)\s*[:=]\s*['"]?[A-Za-z0-9]/i, `${cm.metadata.name} holds no password`);
  }
  t.same(config.hsm.credentials, { env: 'HSMPROXY_PIN' }, 'the crypto user comes from the environment');
  const pin = proxy.env.find((e: Obj) => e.name === 'HSMPROXY_PIN');
  t.match(pin, { valueFrom: { secretKeyRef: { name: 'hsmproxy-cu' } } }, 'which comes from a Secret');
  t.notOk(proxy.env.some((e: Obj) => typeof e.value === 'string' && /:/.test(e.value)), 'no literal credentials in env');
  const mounts = Object.fromEntries(proxy.volumeMounts.map((m: Obj) => [m.mountPath, pod.volumes.find((v: Obj) => v.name === m.name)]));
  t.match(mounts['/app/hsm-client'], { secret: { secretName: 'hsmproxy-hsm-client' } }, 'the client bundle (client key) is a Secret');
  t.ok(config.hsm.manifest?.startsWith('/app/hsm-client/'), 'the config reads the bundle from that mount');
  t.match(mounts['/app/certs'], { secret: { secretName: 'hsmproxy-certs' } });
  for (const c of config.listeners[0]!.certificates) t.ok(c.key.startsWith('/app/certs/') && c.cert.startsWith('/app/certs/'), c.key);
  t.match(mounts['/etc/hsmproxy'], { configMap: { name: 'hsmproxy-config' } });
  t.notOk(pod.volumes.some((v: Obj) => v.persistentVolumeClaim), 'no cluster volume in the proxies');
  for (const v of pod.volumes.filter((x: Obj) => x.secret)) t.equal(v.secret.defaultMode & 0o007, 0, `${v.name} is not world-readable`);
});

t.test('the HSMs: a StatefulSet behind a headless Service, made with its pods\' DNS names', async (t) => {
  const sts = find('StatefulSet', 'hsm');
  const svc = find('Service', sts.spec.serviceName);
  t.equal(svc.spec.clusterIP, 'None', 'headless');
  t.same(svc.spec.selector, sts.spec.selector.matchLabels);
  const n = sts.spec.replicas as number;
  const init = find('Job', 'hsm-cluster-init');
  const env = Object.fromEntries(podOf(init).containers[0].env.map((e: Obj) => [e.name, e.value]));
  t.equal(Number(env.HSMS), n, 'one HSM per pod');
  const names = Array.from({ length: n }, (_, i) => `${sts.metadata.name}-${i}.${svc.metadata.name}.${sts.metadata.namespace}.svc.cluster.local`);
  t.equal(env.HOSTS, names.join(','), 'cluster init --host names each pod');
  const base = Number(env.BASE_PORT);
  const hsmPorts = Array.from({ length: n }, (_, i) => base + i);
  t.same(svc.spec.ports.map((p: Obj) => p.port), hsmPorts, 'the Service carries every HSM\'s port');
  t.same(podOf(sts).containers[0].ports.map((p: Obj) => p.containerPort), hsmPorts);
  t.match(podOf(sts).containers[0].command.join(' '), /hsm serve --dir \/app\/data\/cluster --hsm "hsm-\$\(\( \$\{HOSTNAME##\*-\} \+ 1 \)\)"/, 'pod N serves hsm-(N+1)');
  t.ok(podOf(sts).containers[0].readinessProbe && podOf(sts).containers[0].livenessProbe, 'HSM probes');
  // A signing worker only helps with a core to spare: the pod may use a second one.
  const workers = Number(podOf(sts).containers[0].env.find((e: Obj) => e.name === 'HSMPROXY_HSM_SIGN_WORKERS')?.value);
  const cpuLimit = String(podOf(sts).containers[0].resources.limits.cpu);
  const cores = cpuLimit.endsWith('m') ? Number(cpuLimit.slice(0, -1)) / 1000 : Number(cpuLimit);
  t.ok(workers >= 1 && cores >= workers + 1, `the HSMs sign on ${workers} worker(s) beside the main thread, within ${cores} cores`);
  // The Jobs run the compose stack's script, copied into the ConfigMap: it must not drift.
  t.equal(find('ConfigMap', 'hsm-setup').data['setup.sh'], readFileSync(join(repoRoot, 'deploy/cluster/setup.sh'), 'utf8'));
  for (const j of ['hsm-cluster-init', 'hsm-cluster-setup']) {
    t.match(podOf(find('Job', j)).volumes, [{ persistentVolumeClaim: { claimName: 'hsm-data' } }, { configMap: { name: 'hsm-setup' } }]);
  }
});

t.test('the PDB and the HPA act on the proxies', async (t) => {
  const pdb = find('PodDisruptionBudget', 'hsmproxy');
  t.same(pdb.spec.selector.matchLabels, deployment.spec.selector.matchLabels);
  t.ok(pdb.spec.minAvailable >= 1 && pdb.spec.minAvailable < find('HorizontalPodAutoscaler', 'hsmproxy').spec.minReplicas, 'a drain can always evict one');
  const hpa = find('HorizontalPodAutoscaler', 'hsmproxy');
  t.same(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: 'hsmproxy' });
  t.match(hpa.spec.metrics, [{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization' } } }]);
  t.ok(deployment.spec.replicas >= hpa.spec.minReplicas);
  t.equal(deployment.spec.strategy.rollingUpdate.maxUnavailable, 0, 'a rollout never drops below the replicas');
  t.equal(config.tickets.keys, 'hsm', 'tickets resume on any pod');
});
