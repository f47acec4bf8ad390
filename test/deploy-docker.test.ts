// The Dockerfile and deploy/compose.yaml, checked without a Docker engine (none on CI): the image's
// invariants (multi-stage, non-root, health check, volumes, no secrets) and the compose topology
// (three HSM containers, proxy, upstream, Prometheus, Grafana) with every file it mounts present.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { repoRoot } from './helpers/cli.js';

interface Instruction { op: string; args: string; stage: number }

/** The Dockerfile's instructions, continuation lines joined, comments dropped, with their stage. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let stage = -1;
  const joined = text.split('\n').filter((l) => !/^\s*#/.test(l)).join('\n').replace(/\\\n/g, ' ');
  for (const line of joined.split('\n')) {
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === 'FROM') stage++;
    out.push({ op: m[1]!, args: m[2]!.trim(), stage });
  }
  return out;
}

const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
const ins = instructions(dockerfile);
const lastStage = Math.max(...ins.map((i) => i.stage));
const runtime = ins.filter((i) => i.stage === lastStage);

t.test('the image is multi-stage: a build stage, then a slim Node 20 runtime', async (t) => {
  const froms = ins.filter((i) => i.op === 'FROM');
  t.ok(froms.length >= 2, 'two or more stages');
  t.match(froms.at(-1)!.args, /^node:20-[a-z]+-slim\b/, 'runtime on a slim Node 20 LTS image');
  t.ok(ins.some((i) => i.stage < lastStage && i.op === 'RUN' && /npm ci\b/.test(i.args)), 'dependencies installed (with dev) in the build stage');
  t.ok(ins.some((i) => i.stage < lastStage && i.op === 'RUN' && /npm prune --omit=dev/.test(i.args)), 'dev dependencies pruned before the copy');
  t.notOk(runtime.some((i) => i.op === 'RUN' && /npm (ci|install)/.test(i.args)), 'no npm install in the runtime stage');
});

t.test("the build stage installs before it copies the sources, so without the package's prepare (the build)", async (t) => {
  const build = ins.filter((i) => i.stage < lastStage);
  const ci = build.findIndex((i) => i.op === 'RUN' && /npm ci\b/.test(i.args));
  const src = build.findIndex((i) => i.op === 'COPY' && /^src\b/.test(i.args));
  t.ok(ci >= 0 && src > ci, 'npm ci comes before COPY src (dependencies cached apart from the code)');
  t.match(build[ci]?.args, /npm ci\b[^&]*--ignore-scripts/, 'so it runs no scripts: prepare would build without sources');
  t.match(build[ci]?.args, /npm rebuild pkcs11js\b/, "and pkcs11js's native build runs by itself");
  t.ok(build.slice(src).some((i) => i.op === 'RUN' && /npm run build\b/.test(i.args)), 'the build runs once the sources are in');
});

t.test('the runtime runs as a non-root user with a fixed uid, and owns only its volumes', async (t) => {
  const users = runtime.filter((i) => i.op === 'USER');
  t.equal(users.length, 1);
  t.notMatch(users[0]!.args, /^(root|0)(:|$)/, 'not root');
  const userAt = runtime.indexOf(users[0]!);
  t.ok(runtime.findIndex((i) => i.op === 'ENTRYPOINT') > userAt, 'USER comes before the entrypoint');
  t.match(runtime.find((i) => i.op === 'RUN' && /useradd/.test(i.args))?.args, /--uid \d+/, 'a fixed uid');
  t.notOk(runtime.some((i) => i.op === 'COPY' && /--chown/.test(i.args) && /(dist|node_modules)/.test(i.args)), 'code is not writable by the process');
});

t.test('a HEALTHCHECK asks /healthz on the admin port the shipped configs use', async (t) => {
  const hc = runtime.find((i) => i.op === 'HEALTHCHECK');
  t.ok(hc, 'HEALTHCHECK present');
  t.match(hc?.args, /\/healthz/);
  const port = /127\.0\.0\.1:(\d+)\/healthz/.exec(hc?.args ?? '')?.[1];
  const admin = (parse(readFileSync(join(repoRoot, 'config', 'hsmproxy.yaml'), 'utf8')) as { admin: { port: number } }).admin.port;
  t.equal(Number(port), admin, 'the port of config/hsmproxy.yaml');
  t.equal(Number(/admin: \{ address: [\d.]+, port: (\d+) \}/.exec(readFileSync(join(repoRoot, 'deploy', 'hsmproxy', 'hsmproxy.yaml'), 'utf8'))?.[1]), admin, 'and of the compose config');
});

t.test('data and certs are volumes, and no secret is baked in', async (t) => {
  const vol = runtime.find((i) => i.op === 'VOLUME')?.args ?? '';
  t.match(vol, /\/app\/data/);
  t.match(vol, /\/app\/certs/);
  for (const i of ins.filter((x) => x.op === 'ENV' || x.op === 'ARG')) t.notMatch(i.args, /PIN|PASSWORD|SECRET|TOKEN|CREDENTIAL|KEY/i, `${i.op} ${i.args}`);
  for (const i of ins.filter((x) => x.op === 'COPY' || x.op === 'ADD')) t.notMatch(i.args, /(^|\s)\.?\/?(data|certs)\b/, `${i.op} copies no data or certs`);
  t.notOk(ins.some((i) => i.op === 'ADD'), 'COPY, not ADD');
  const ignore = readFileSync(join(repoRoot, '.dockerignore'), 'utf8').split('\n');
  for (const p of ['data', 'certs', 'node_modules', '.git']) t.ok(ignore.includes(p), `.dockerignore keeps ${p} out of the build context`);
});

t.test('every path the Dockerfile copies from the context exists', async (t) => {
  for (const i of ins.filter((x) => x.op === 'COPY' && !/--from=/.test(x.args))) {
    const parts = i.args.split(/\s+/).filter((p) => !p.startsWith('--'));
    for (const src of parts.slice(0, -1)) t.ok(existsSync(join(repoRoot, src)), `${src} exists`);
  }
});

interface Service { image?: string; build?: unknown; command?: string[]; entrypoint?: string[]; volumes?: string[]; network_mode?: string; depends_on?: Record<string, { condition: string }> }
const compose = parse(readFileSync(join(repoRoot, 'deploy', 'compose.yaml'), 'utf8'), { merge: true }) as { services: Record<string, Service> };
const services = compose.services;

t.test('compose runs three HSMs as separate containers, each serving one HSM of the cluster', async (t) => {
  const hsms = Object.entries(services).filter(([, s]) => s.command?.slice(0, 2).join(' ') === 'hsm serve');
  t.same(hsms.map(([n]) => n), ['hsm-1', 'hsm-2', 'hsm-3']);
  for (const [name, s] of hsms) t.equal(s.command?.at(-1), name, `${name} serves --hsm ${name}`);
});

t.test('compose runs hsmproxy from the mounted config, after the cluster setup has completed', async (t) => {
  const p = services.hsmproxy!;
  t.same(p.command, ['serve', '--config', '/deploy/hsmproxy.yaml']);
  t.ok(p.volumes?.includes('./hsmproxy/hsmproxy.yaml:/deploy/hsmproxy.yaml:ro'));
  t.equal(p.depends_on?.['cluster-setup']?.condition, 'service_completed_successfully');
  t.same(services['cluster-setup']?.command, ['activate']);
  t.same(services['cluster-init']?.command, ['init']);
});

t.test('compose has a demo upstream, Prometheus with the rules, and Grafana with the dashboard', async (t) => {
  t.ok(services.upstream?.volumes?.some((v) => v.startsWith('./upstream/server.mjs:')));
  const prom = services.prometheus?.volumes ?? [];
  t.ok(prom.includes('./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro'));
  t.ok(prom.includes('./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro'), 'the rules sit next to the config, where rule_files points');
  t.ok(services.grafana?.volumes?.includes('./grafana/provisioning:/etc/grafana/provisioning:ro'));
});

t.test('every file compose mounts from the repository exists', async (t) => {
  for (const [name, s] of Object.entries(services)) {
    for (const v of s.volumes ?? []) {
      if (!v.startsWith('./')) continue;
      t.ok(existsSync(join(repoRoot, 'deploy', v.split(':')[0]!)), `${name}: ${v.split(':')[0]} exists`);
    }
  }
});

// A compose volume entry: named volume (or ./bind path), mount point, read-only or not.
function mount(v: string): { source: string; target: string; ro: boolean; named: boolean } {
  const [source = '', target = '', mode = ''] = v.split(':');
  return { source, target, ro: mode.split(',').includes('ro'), named: !/^[./~]/.test(source) };
}
const namedVolumes = (s: Service | undefined) => (s?.volumes ?? []).map(mount).filter((m) => m.named).map((m) => m.source);

t.test('the proxy mounts no volume holding HSM or CA secrets: only its client bundle and the certificates, read-only', async (t) => {
  // Where the cluster directory lives: the volumes the HSM containers and the init step use.
  const secret = new Set([...Object.values(services).filter((s) => s.command?.slice(0, 2).join(' ') === 'hsm serve'), services['cluster-init']].flatMap(namedVolumes));
  t.ok(secret.has('data'), 'the cluster directory is the data volume');
  const proxy = (services.hsmproxy?.volumes ?? []).map(mount);
  t.same(proxy.filter((m) => secret.has(m.source)), [], 'none of them is mounted in the proxy');
  t.same(proxy.filter((m) => !m.ro), [], 'everything the proxy mounts is read-only');
  t.same(namedVolumes(services.hsmproxy).sort(), ['certs', 'hsm-client']);
  t.same(services['hsmproxy-net']?.volumes ?? [], [], 'nor does the network-namespace owner, which publishes the proxy ports');
  // Written only by the setup step, which issues the bundle; no HSM container mounts it.
  t.same(Object.entries(services).filter(([, s]) => namedVolumes(s).includes('hsm-client')).map(([n]) => n).sort(), ['cluster-setup', 'hsmproxy']);
  t.equal((services['cluster-setup']?.volumes ?? []).map(mount).find((m) => m.source === 'hsm-client')?.target, '/app/hsm-client');

  // The proxy's config reaches the HSMs through that bundle: manifest and credentials inside its mount.
  const hsm = (parse(readFileSync(join(repoRoot, 'deploy', 'hsmproxy', 'hsmproxy.yaml'), 'utf8')) as { hsm: { manifest: string; credentials: { file: string } } }).hsm;
  const bundle = proxy.find((m) => m.source === 'hsm-client')!.target;
  t.equal(hsm.manifest, `${bundle}/cluster.json`);
  t.equal(hsm.credentials.file, `${bundle}/crypto-user.pin`);
  t.match(readFileSync(join(repoRoot, 'deploy', 'cluster', 'setup.sh'), 'utf8'), /cluster client-cert --dir "\$DIR" --name [^\n]* --out-dir "\$BUNDLE"/, 'setup.sh issues the bundle');
});

t.test('the image has the bundle mount point, owned by its user and private, so the non-root setup can write a new volume there', async (t) => {
  t.ok(runtime.some((i) => i.op === 'RUN' && /install -d -m 0700 -o hsmproxy -g hsmproxy \/app\/hsm-client/.test(i.args)));
});
