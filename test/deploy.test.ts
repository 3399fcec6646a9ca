/**
 * Structural checks of deploy/ (issue 7, item 4), no cluster needed: every Kubernetes manifest
 * and systemd unit parses; every config file they carry validates with the service's own schema
 * and uses no key the schema lacks (coordinator and custodian schemas silently drop unknown
 * keys, so a misspelt key would otherwise pass); every file a config names is mounted or
 * handed over; ports agree between config listen addresses, container ports, Services, probes
 * and the peers' configs; every Secret and ConfigMap a workload uses exists (with the keys it
 * reads); etcd has 3 members; the audit sink's replicas (replication.replicas) are the deployed
 * ones at the addresses producers use, and every producer lists every replica and its checkpoint
 * key (audit.replicas, audit.checkpointPublicKeys). Every runtime command (containers, probes, ExecStart) runs
 * compiled output with plain node, never tsx: each entry point it names exists after
 * `npm run build` and loads with plain node; the image installs production dependencies only,
 * which do not include tsx.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { parseConfig, z } from '@keyshard/config';
import { coordinatorConfig } from '../services/coordinator/src/config.ts';
import { custodianConfig } from '../services/custodian/src/config.ts';
import { auditSinkConfigSchema } from '../services/audit-sink/src/config.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const K8S = path.join(ROOT, 'deploy/k8s');
const SYSTEMD = path.join(ROOT, 'deploy/systemd');
const NAMESPACE = 'keyshard';
const DOMAIN = `${NAMESPACE}.svc.cluster.local`;

type Component = 'coordinator' | 'custodian' | 'audit-sink';
const SCHEMAS: Record<Component, z.ZodType> = { coordinator: coordinatorConfig, custodian: custodianConfig, 'audit-sink': auditSinkConfigSchema };
/** The names each component's HealthService reports (services/*\/src/main.ts; test/health.test.ts checks them live). */
const HEALTH: Record<Component, string[]> = {
  coordinator: ['', 'keyshard.v1.KeyService', 'keyshard.v1.CeremonyService'],
  custodian: ['', 'keyshard.v1.CustodianService'],
  'audit-sink': ['', 'keyshard.v1.AuditService'],
};

// ---------------------------------------------------------------- config files, any deployment

/** Paths in `value` (a config) that are not properties of the schema, e.g. "audit.spooldir". */
function unknownKeys(schema: z.ZodType, value: unknown): string[] {
  const out: string[] = [];
  const walk = (js: any, v: unknown, at: string) => {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(js?.items ?? {}, x, `${at}[${i}]`));
    if (typeof v !== 'object' || v === null || !js?.properties) return;
    for (const [k, x] of Object.entries(v)) {
      const p = at ? `${at}.${k}` : k;
      if (!(k in js.properties)) out.push(p);
      else walk(js.properties[k], x, p);
    }
  };
  walk(z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }), value, '');
  return out;
}

/** Validates with the service's real schema and refuses keys it does not know; returns the parsed config. */
function validConfig(component: Component, text: string, label: string): any {
  const raw = JSON.parse(text);
  const cfg = parseConfig(SCHEMAS[component], raw, label);
  assert.deepEqual(unknownKeys(SCHEMAS[component], raw), [], `${label}: keys not in the ${component} schema`);
  return cfg;
}

const portOf = (hostPort: string) => Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));
const hostOf = (hostPort: string) => hostPort.slice(0, hostPort.lastIndexOf(':'));

/** Every file a config names (TLS material, PIN, keys, data directories). */
function filesOf(component: Component, cfg: any): string[] {
  const tls = (t: any) => (t ? [t.ca, t.cert, t.key] : []);
  if (component === 'coordinator') return [...tls(cfg.tls), ...tls(cfg.etcd.tls), ...cfg.audit.checkpointPublicKeys, ...(cfg.audit.spoolDir ? [cfg.audit.spoolDir] : []), cfg.transportKeyFile, cfg.witnessKeyFile];
  if (component === 'custodian') return [...tls(cfg.tls), ...cfg.audit.checkpointPublicKeys, ...(cfg.token.pinFile ? [cfg.token.pinFile] : [])];
  return [...tls(cfg.tls), cfg.dataDir, cfg.checkpointKeyFile, cfg.hmacKeyFile, ...(cfg.replication?.replicas ?? []).map((r: any) => r.checkpointPublicKey)];
}

/** Coordinator, custodian and sink configs that must name each other consistently. */
interface Deployment {
  coordinators: any[];
  custodians: { cfg: any; address: string }[]; // address: how coordinators reach it
  /** The audit sink, or each replica of a replicated one: its id (certificate CN), how producers reach it, its config. */
  sinks: { id: string; address: string; cfg: any }[];
  etcdEndpoints: string[];
  /** Every coordinator identity, when `coordinators` holds only an example of them (systemd: one host's file). */
  coordinatorIds?: string[];
}

function checkPeers(d: Deployment): void {
  const coordinatorIds = d.coordinatorIds ?? d.coordinators.map((c) => c.coordinatorId);
  for (const c of d.coordinators) assert.ok(coordinatorIds.includes(c.coordinatorId), `${c.coordinatorId} is a known coordinator`);
  const custodianIds = d.custodians.map((c) => c.cfg.custodianId);
  assert.equal(new Set(coordinatorIds).size, coordinatorIds.length, 'coordinator ids are unique');
  for (const c of d.coordinators) {
    assert.deepEqual(
      c.custodians.map((x: any) => [x.id, x.address]),
      d.custodians.map((x) => [x.cfg.custodianId, x.address]),
      `${c.coordinatorId}: custodians are the deployed ones, at their listen ports`,
    );
    checkAuditProducer(c.coordinatorId, c.audit, d.sinks);
    assert.deepEqual([...c.etcd.endpoints].sort(), [...d.etcdEndpoints].sort(), `${c.coordinatorId}: etcd endpoints are the members'`);
  }
  for (const { cfg } of d.custodians) {
    assert.deepEqual([...cfg.coordinators].sort(), [...coordinatorIds].sort(), `${cfg.custodianId}: releases shares to exactly the coordinators`);
    checkAuditProducer(cfg.custodianId, cfg.audit, d.sinks);
    assert.equal(cfg.token.label, cfg.custodianId, `${cfg.custodianId}: token label`);
  }
  checkAuditReplicas(d.sinks);
  for (const sink of d.sinks) {
    const scopeOf = new Map(sink.cfg.appenders.map((a: { principal: string; scope: string }) => [a.principal, a.scope]));
    for (const id of coordinatorIds) assert.equal(scopeOf.get(id), 'coordinator', `${sink.id} accepts coordinator events from ${id}`);
    for (const id of custodianIds) assert.equal(scopeOf.get(id), 'custodian', `${sink.id} accepts custodian events (only) from ${id}`);
  }
  const hashes = new Set([...d.coordinators, ...d.custodians.map((c) => c.cfg)].map((c) => c.oaepHash));
  assert.equal(hashes.size, 1, 'coordinators and custodians use the same RSA-OAEP hash');
}

/** A producer's `audit` names the one sink, or every replica with every replica's checkpoint key. */
function checkAuditProducer(label: string, audit: any, sinks: Deployment['sinks']): void {
  if (sinks.length === 1 && !sinks[0]!.cfg.replication) {
    assert.equal(audit.address, sinks[0]!.address, `${label}: audit address is the sink's`);
    assert.equal(audit.replicas, undefined, `${label}: one sink, no audit.replicas`);
    return;
  }
  assert.deepEqual(audit.replicas, sinks.map((s) => ({ address: s.address, serverId: s.id })), `${label}: audit.replicas are the sink replicas, at their addresses, pinned to their ids (certificate CNs)`);
  assert.ok(audit.replicas.some((r: any) => r.address === audit.address && r.serverId === audit.serverId), `${label}: audit.address and serverId are one of the replicas`);
  const keyNames = sinks[0]!.cfg.replication.replicas.map((r: any) => path.basename(r.checkpointPublicKey));
  assert.deepEqual(audit.checkpointPublicKeys.map((f: string) => path.basename(f)).sort(), [...keyNames].sort(), `${label}: checkpointPublicKeys is every replica's key`);
}

/**
 * Replicas of one audit log: each lists every replica, itself included (found by its certificate
 * CN), at the address producers use and on the port it listens on; an odd number; one HMAC key
 * file (the same value must hash the same whichever replica leads) and the same appenders.
 */
function checkAuditReplicas(sinks: Deployment['sinks']): void {
  if (sinks.length === 1 && !sinks[0]!.cfg.replication) return;
  assert.equal(sinks.length % 2, 1, 'an odd number of audit sink replicas');
  for (const s of sinks) {
    const listed = s.cfg.replication?.replicas ?? [];
    assert.deepEqual(listed.map((r: any) => [r.id, r.address]), sinks.map((x) => [x.id, x.address]), `${s.id}: replication.replicas is every replica, itself included`);
    assert.equal(portOf(s.address), portOf(s.cfg.listen), `${s.id}: reached on the port it listens on`);
    assert.deepEqual(s.cfg.appenders, sinks[0]!.cfg.appenders, `${s.id}: the same appenders as every replica`);
    assert.equal(s.cfg.hmacKeyFile, sinks[0]!.cfg.hmacKeyFile, `${s.id}: the shared HMAC key`);
  }
  const keys = sinks[0]!.cfg.replication.replicas.map((r: any) => r.checkpointPublicKey);
  assert.equal(new Set(keys).size, keys.length, 'each replica its own checkpoint key');
}

// ---------------------------------------------------------------- Kubernetes

type Obj = Record<string, any>;

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? yamlFiles(p) : /\.ya?ml$/.test(e.name) ? [p] : [];
  });
}

function loadManifests(): Obj[] {
  const docs: Obj[] = [];
  for (const file of yamlFiles(K8S)) {
    for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
      assert.deepEqual(doc.errors.map((e) => e.message), [], `${path.relative(ROOT, file)} parses`);
      const js = doc.toJS() as Obj | null;
      if (js) docs.push({ ...js, file: path.relative(ROOT, file) });
    }
  }
  return docs;
}

class Cluster {
  readonly docs = loadManifests();

  all(kind: string): Obj[] {
    return this.docs.filter((d) => d.kind === kind);
  }

  get(kind: string, name: string): Obj {
    const found = this.docs.filter((d) => d.kind === kind && d.metadata?.name === name);
    assert.equal(found.length, 1, `exactly one ${kind} ${name} (found ${found.length})`);
    return found[0]!;
  }

  get workloads(): Obj[] {
    return this.docs.filter((d) => ['StatefulSet', 'Deployment', 'DaemonSet', 'Job'].includes(d.kind));
  }

  /** Pod names, known only for StatefulSets: <name>-0 .. <name>-(replicas-1). */
  podNames(w: Obj): string[] {
    assert.equal(w.kind, 'StatefulSet', `${w.metadata.name}: per-pod names need a StatefulSet`);
    return Array.from({ length: w.spec.replicas ?? 1 }, (_, i) => `${w.metadata.name}-${i}`);
  }

  /** Services whose selector picks this workload's pods. */
  servicesOf(w: Obj): Obj[] {
    const labels = w.spec.template.metadata.labels ?? {};
    return this.all('Service').filter((s) => s.spec.selector && Object.entries(s.spec.selector).every(([k, v]) => labels[k] === v));
  }

  /** The content behind `file` as seen by `container`: a ConfigMap/Secret key, or the kind of volume. */
  resolve(w: Obj, container: Obj, file: string): { text?: string; volume: Obj; mountPath: string; rel: string } | undefined {
    const mounts = (container.volumeMounts ?? []) as Obj[];
    const mount = mounts
      .filter((m) => file === m.mountPath || file.startsWith(`${m.mountPath}/`))
      .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
    if (!mount) return undefined;
    const rel = file.slice(mount.mountPath.length + 1);
    const volume =
      (w.spec.template.spec.volumes ?? []).find((v: Obj) => v.name === mount.name) ??
      (w.spec.volumeClaimTemplates ?? []).find((v: Obj) => v.metadata.name === mount.name);
    assert.ok(volume, `${w.metadata.name}/${container.name}: volume ${mount.name} is defined`);
    const data = (kind: string, name: string) => {
      const o = this.get(kind, name);
      return { ...o.data, ...o.stringData } as Record<string, string>;
    };
    let text: string | undefined;
    if (volume.configMap) text = data('ConfigMap', volume.configMap.name)[rel];
    if (volume.secret) text = data('Secret', volume.secret.secretName)[rel];
    if ((volume.configMap || volume.secret) && rel) assert.ok(text !== undefined, `${w.metadata.name}/${container.name}: ${file} is key ${rel} of ${volume.configMap?.name ?? volume.secret.secretName}`);
    return { text, volume, mountPath: mount.mountPath, rel };
  }
}

/** `--flag value` and `--flag=value` pairs of a command line. */
function flags(args: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('--')) continue;
    const eq = a.indexOf('=');
    if (eq > 0) out.set(a.slice(2, eq), a.slice(eq + 1));
    else if (args[i + 1] !== undefined && !args[i + 1]!.startsWith('--')) out.set(a.slice(2), args[++i]!);
    else out.set(a.slice(2), '');
  }
  return out;
}

const expand = (s: string, env: Record<string, string>) => s.replace(/\$\(([A-Z_][A-Z0-9_]*)\)/g, (m, v) => env[v] ?? m);
const componentOf = (c: Obj): Component | undefined =>
  (/services\/(coordinator|custodian|audit-sink)\/dist\/main\.js/.exec((c.command ?? []).join(' '))?.[1] as Component | undefined);

// ---------------------------------------------------------------- runtime commands, any deployment

const PROBE = 'packages/rpc/dist/health-probe.js';

/**
 * A command a deployment runs: plain node on a compiled entry point (a path under the image's
 * or host's install root, `root`), no tsx, no TypeScript; the entry exists once built.
 */
function checkRuntimeCommand(argv: string[], root: string, label: string): void {
  assert.match(argv[0] ?? '', /(^|\/)node$/, `${label}: runs node`);
  assert.ok(!argv.some((a) => /tsx|\.ts$/.test(a)), `${label}: no tsx and no TypeScript source in ${argv.join(' ')}`);
  const entry = argv[1] ?? '';
  assert.ok(entry.startsWith(root) && /\/dist\/[\w-]+\.js$/.test(entry), `${label}: ${entry} is a compiled entry point under ${root}`);
  const local = path.join(ROOT, entry.slice(root.length));
  assert.ok(existsSync(local), `${label}: ${path.relative(ROOT, local)} exists (run \`npm run build\` first)`);
}

describe('compiled entry points', () => {
  it('each service and the health probe load with plain node (no source condition, no tsx)', () => {
    for (const svc of ['coordinator', 'custodian', 'audit-sink']) {
      const r = spawnSync(process.execPath, [path.join(ROOT, `services/${svc}/dist/main.js`), '--config', '/nonexistent/keyshard.json'], { encoding: 'utf8', cwd: ROOT, env: { ...process.env, NODE_OPTIONS: '' } });
      assert.equal(r.status, 2, `${svc}: exits 2 (unreadable config) once every module loaded: ${r.stderr}`);
      assert.match(r.stderr, /cannot read config \/nonexistent\/keyshard\.json/, svc);
    }
    const r = spawnSync(process.execPath, [path.join(ROOT, PROBE)], { encoding: 'utf8', cwd: ROOT });
    assert.equal(r.status, 2, `the probe exits 2 on missing arguments: ${r.stderr}`);
  });

  it('the image builds, then installs production dependencies only, which do not include tsx', () => {
    const docker = readFileSync(path.join(ROOT, 'deploy/docker/Dockerfile'), 'utf8');
    const run = docker.split('\n').filter((l) => !l.trim().startsWith('#')).join('\n');
    assert.match(run, /npm ci\b[^]*npm run build[^]*npm ci --omit=dev/, 'npm ci, npm run build, then npm ci --omit=dev');
    assert.ok(!/\btsx\b/.test(run), 'the Dockerfile names no tsx');
    const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
    for (const dev of ['tsx', 'esbuild', 'typescript']) assert.equal(lock.packages[`node_modules/${dev}`]?.dev, true, `${dev} is a dev dependency only (npm ci --omit=dev leaves it out)`);
  });
});

function containerPort(c: Obj, port: string | number): number {
  if (typeof port === 'number') return port;
  const p = (c.ports ?? []).find((x: Obj) => x.name === port);
  assert.ok(p, `${c.name}: container port named ${port}`);
  return p.containerPort;
}

interface Pod {
  name: string;
  /** ConfigMap/key of its config file (several pods may share one). */
  configKey: string;
  component: Component;
  cfg: any;
  listenPort: number;
  workload: Obj;
}

/** Checks one keyshard workload and returns its pods with their validated configs. */
function checkKeyshardWorkload(k: Cluster, w: Obj): Pod[] {
  const containers = w.spec.template.spec.containers as Obj[];
  const main = containers.find((c) => componentOf(c));
  if (!main) return [];
  const component = componentOf(main)!;
  assert.equal(main.workingDir, '/app', `${w.metadata.name}: runs in the image's /app`);
  checkRuntimeCommand(main.command, '', `${w.metadata.name} command`);
  const pods: Pod[] = [];
  // One config per pod ($(POD_NAME)), or one config for every pod of a StatefulSet (audit sink replicas).
  const perPod = main.command.join(' ').includes('$(POD_NAME)') || (w.kind === 'StatefulSet' && (w.spec.replicas ?? 1) > 1);
  const names = perPod ? k.podNames(w) : [`${w.metadata.name}`];
  for (const name of names) {
    const env = { POD_NAME: name };
    const args = main.command.map((a: string) => expand(a, env));
    const configFile = flags(args).get('config')!;
    assert.ok(configFile, `${name}: --config`);
    const r = k.resolve(w, main, configFile);
    assert.ok(r?.text, `${name}: ${configFile} comes from a ConfigMap`);
    const cfg = validConfig(component, r.text, `${name} config ${configFile}`);
    if (component === 'coordinator') assert.equal(cfg.coordinatorId, name, `${name}: coordinatorId is the pod name (its certificate CN)`);
    if (component === 'custodian') assert.equal(cfg.custodianId, name, `${name}: custodianId is the pod name (its certificate CN)`);

    // Every file the config names is there: a ConfigMap/Secret key, a volume, or written by an init container.
    for (const file of filesOf(component, cfg)) {
      const f = k.resolve(w, main, file);
      assert.ok(f, `${name}: ${file} (named in its config) is on a mounted volume`);
      if (f.volume.emptyDir) {
        const writer = (w.spec.template.spec.initContainers ?? []).find((ic: Obj) =>
          (ic.volumeMounts ?? []).some((m: Obj) => m.name === f.volume.name && ic.command.join('\n').includes(`${m.mountPath}/${f.rel}`)),
        );
        assert.ok(writer, `${name}: an init container writes ${f.rel} into volume ${f.volume.name}`);
      }
    }
    pods.push({ name, component, cfg, listenPort: portOf(cfg.listen), workload: w, configKey: `${r.volume.configMap?.name}/${r.rel}` });
  }
  const port = pods[0]!.listenPort;
  assert.ok(pods.every((p) => p.listenPort === port), `${w.metadata.name}: every pod listens on one port`);
  assert.ok((main.ports ?? []).some((p: Obj) => p.containerPort === port), `${w.metadata.name}: containerPort ${port} (config listen)`);

  const services = k.servicesOf(w);
  assert.ok(services.length > 0, `${w.metadata.name}: a Service selects it`);
  for (const s of services)
    for (const sp of s.spec.ports) {
      assert.equal(containerPort(main, sp.targetPort ?? sp.port), port, `Service ${s.metadata.name} targets the listen port`);
      assert.equal(sp.port, port, `Service ${s.metadata.name} exposes the listen port`);
    }

  // Probes: grpc.health.v1 over the same mutual-TLS port, with the pod's own certificate.
  for (const kind of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
    const probe = main[kind];
    if (!probe) {
      assert.equal(kind, 'startupProbe', `${w.metadata.name}: has a ${kind}`);
      continue;
    }
    const cmd = probe.exec?.command as string[] | undefined;
    assert.equal(cmd?.[1], PROBE, `${w.metadata.name}: ${kind} runs the compiled health probe`);
    checkRuntimeCommand(cmd!, '', `${w.metadata.name} ${kind}`);
    const f = flags(cmd!);
    assert.equal(portOf(f.get('address')!), port, `${w.metadata.name}: ${kind} dials the listen port`);
    assert.match(hostOf(f.get('address')!), /^(127\.0\.0\.1|localhost)$/, `${w.metadata.name}: ${kind} dials the pod itself`);
    for (const t of ['ca', 'cert', 'key'] as const)
      for (const p of pods) assert.equal(f.get(t), p.cfg.tls[t], `${w.metadata.name}: ${kind} --${t} is the config's tls.${t}`);
    assert.ok(HEALTH[component].includes(f.get('service') ?? ''), `${w.metadata.name}: ${kind} asks about a service the ${component} reports`);
    if (component === 'coordinator' && kind === 'readinessProbe')
      assert.equal(f.get('service'), 'keyshard.v1.KeyService', 'coordinators are ready only while unsealed');
    if (component === 'coordinator' && kind !== 'readinessProbe')
      assert.equal(f.get('service'), 'keyshard.v1.CeremonyService', 'a sealed coordinator is alive');
  }
  return pods;
}

/** Files init containers read from Secrets/ConfigMaps exist for every pod. */
function checkInitContainers(k: Cluster, w: Obj): void {
  for (const ic of (w.spec.template.spec.initContainers ?? []) as Obj[]) {
    const script = (ic.command ?? []).join('\n');
    for (const name of script.includes('$POD_NAME') ? k.podNames(w) : [w.metadata.name]) {
      for (const m of script.matchAll(/"?(\/[\w/.$-]+)"?/g)) {
        const file = m[1]!.replaceAll('$POD_NAME', name);
        const r = k.resolve(w, ic, file);
        assert.ok(r || file.startsWith('/usr/'), `${w.metadata.name}/${ic.name}: ${file} is on a mounted volume`);
      }
    }
  }
}

/** Every Secret and ConfigMap a workload names exists. */
function checkReferences(k: Cluster, w: Obj): string[] {
  const used: string[] = [];
  const spec = w.spec.template.spec;
  const want = (kind: string, name: string) => {
    k.get(kind, name);
    used.push(`${kind}/${name}`);
  };
  for (const v of spec.volumes ?? []) {
    if (v.secret) want('Secret', v.secret.secretName);
    if (v.configMap) want('ConfigMap', v.configMap.name);
    for (const s of v.projected?.sources ?? []) {
      if (s.secret) want('Secret', s.secret.name);
      if (s.configMap) want('ConfigMap', s.configMap.name);
    }
  }
  for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
    for (const e of c.env ?? []) {
      if (e.valueFrom?.secretKeyRef) want('Secret', e.valueFrom.secretKeyRef.name);
      if (e.valueFrom?.configMapKeyRef) want('ConfigMap', e.valueFrom.configMapKeyRef.name);
    }
    for (const e of c.envFrom ?? []) {
      if (e.secretRef) want('Secret', e.secretRef.name);
      if (e.configMapRef) want('ConfigMap', e.configMapRef.name);
    }
  }
  return used;
}

describe('Kubernetes manifests (deploy/k8s)', () => {
  const k = new Cluster();
  const keyshard = () => k.workloads.flatMap((w) => checkKeyshardWorkload(k, w));

  it('parse, and every object is in the keyshard namespace', () => {
    assert.ok(k.docs.length > 10, `${k.docs.length} objects`);
    for (const d of k.docs) {
      assert.ok(d.apiVersion && d.kind && d.metadata?.name, `${d.file}: apiVersion, kind, metadata.name`);
      if (d.kind !== 'Namespace') assert.equal(d.metadata.namespace, NAMESPACE, `${d.file}: ${d.kind} ${d.metadata.name}`);
    }
    k.get('Namespace', NAMESPACE);
  });

  it('every Secret and ConfigMap a workload uses exists, and every one is used', () => {
    const used = new Set(k.workloads.flatMap((w) => checkReferences(k, w)));
    for (const d of [...k.all('Secret'), ...k.all('ConfigMap')]) assert.ok(used.has(`${d.kind}/${d.metadata.name}`), `${d.kind} ${d.metadata.name} is used`);
  });

  it('every config file validates with its service schema and names only mounted files', () => {
    const pods = keyshard();
    const count = (c: Component) => pods.filter((p) => p.component === c).length;
    assert.deepEqual([count('coordinator'), count('custodian'), count('audit-sink')], [3, 3, 3]);
    // No config file in a ConfigMap goes unchecked.
    const checked = new Set(pods.map((p) => p.configKey)).size;
    const configs = k.all('ConfigMap').flatMap((c) => Object.keys(c.data ?? {}).filter((key) => key.endsWith('.json')));
    assert.equal(configs.length, checked, `${configs.length} config files in ConfigMaps, ${checked} used by pods`);
  });

  it('init containers find every file they copy, for every pod', () => {
    for (const w of k.workloads) checkInitContainers(k, w);
  });

  it('ports and names agree between configs, containers, Services and probes', () => {
    const pods = keyshard();
    const of = (c: Component) => pods.filter((p) => p.component === c);
    const etcd = k.get('StatefulSet', 'etcd');
    const etcdFlags = flags(etcd.spec.template.spec.containers[0].command);
    const clientPort = portOf(etcdFlags.get('listen-client-urls')!);
    const fqdn = (pod: Pod) => `${pod.name}.${pod.workload.spec.serviceName}.${DOMAIN}`;
    const sinkPods = of('audit-sink');
    const sinkService = k.servicesOf(sinkPods[0]!.workload)[0]!;
    // A replicated sink: each replica at its own name (headless Service); one sink: its Service.
    const sinks = sinkPods.map((p) => ({ id: p.name, cfg: p.cfg, address: p.cfg.replication ? `${fqdn(p)}:${p.listenPort}` : `${sinkService.metadata.name}.${DOMAIN}:${p.listenPort}` }));
    checkPeers({
      coordinators: of('coordinator').map((p) => p.cfg),
      custodians: of('custodian').map((p) => ({ cfg: p.cfg, address: `${fqdn(p)}:${p.listenPort}` })),
      sinks,
      etcdEndpoints: k.podNames(etcd).map((n) => `https://${n}.${etcd.spec.serviceName}.${DOMAIN}:${clientPort}`),
    });
    for (const w of k.workloads.filter((x) => x.kind === 'StatefulSet')) k.get('Service', w.spec.serviceName);
  });

  it('custodians load the HSM module and token directory that the keyshard-hsm ConfigMap names', () => {
    const hsm = k.get('ConfigMap', 'keyshard-hsm').data;
    const w = k.get('StatefulSet', 'keyshard-custodian');
    const main = w.spec.template.spec.containers.find((c: Obj) => componentOf(c));
    for (const p of keyshard().filter((x) => x.component === 'custodian')) assert.equal(p.cfg.token.modulePath, hsm['module-path'], p.name);
    const conf = main.env.find((e: Obj) => e.name === 'SOFTHSM2_CONF')?.value;
    const r = k.resolve(w, main, conf);
    assert.equal(r?.text, hsm['softhsm2.conf'], 'SOFTHSM2_CONF is the ConfigMap file');
    const tokenDir = /^directories\.tokendir\s*=\s*(\S+)/m.exec(hsm['softhsm2.conf'])![1]!;
    assert.ok(k.resolve(w, main, `${tokenDir}/x`)?.volume.spec, 'the token directory is the pod\'s own PersistentVolume');
  });

  it('etcd is a 3-member StatefulSet behind a headless Service, its flags agreeing with its ports', () => {
    const etcd = k.get('StatefulSet', 'etcd');
    assert.equal(etcd.spec.replicas, 3);
    const c = etcd.spec.template.spec.containers[0];
    const svc = k.get('Service', etcd.spec.serviceName);
    assert.equal(svc.spec.clusterIP, 'None', 'headless');
    assert.equal(svc.spec.publishNotReadyAddresses, true, 'members resolve each other before a quorum is up');
    const pods = k.podNames(etcd);
    for (const pod of pods) {
      const f = flags(c.command.map((a: string) => expand(a, { POD_NAME: pod })));
      const members = f.get('initial-cluster')!.split(',').map((m) => m.split('='));
      assert.deepEqual(members.map(([n]) => n), pods, 'initial-cluster names the 3 pods');
      const peerPort = portOf(f.get('listen-peer-urls')!);
      const clientPort = portOf(f.get('listen-client-urls')!);
      for (const [n, url] of members) assert.equal(url, `https://${n}.${svc.metadata.name}.${DOMAIN}:${peerPort}`);
      assert.equal(f.get('initial-advertise-peer-urls'), `https://${pod}.${svc.metadata.name}.${DOMAIN}:${peerPort}`);
      assert.equal(f.get('advertise-client-urls'), `https://${pod}.${svc.metadata.name}.${DOMAIN}:${clientPort}`);
      assert.equal(containerPort(c, 'peer'), peerPort);
      assert.equal(containerPort(c, 'client'), clientPort);
      assert.equal(containerPort(c, 'metrics'), portOf(f.get('listen-metrics-urls')!));
      assert.ok(f.has('client-cert-auth') && f.has('peer-client-cert-auth'), 'mutual TLS for clients and peers');
      assert.equal(f.get('auto-compaction-mode'), 'periodic', 'auto-compaction on');
      for (const file of ['trusted-ca-file', 'cert-file', 'key-file', 'peer-trusted-ca-file', 'peer-cert-file', 'peer-key-file'])
        assert.ok(k.resolve(etcd, c, f.get(file)!)?.text !== undefined, `--${file} is a Secret key`);
    }
    for (const sp of svc.spec.ports) assert.equal(containerPort(c, sp.targetPort), sp.port, `etcd Service port ${sp.name}`);
    for (const kind of ['readinessProbe', 'livenessProbe']) assert.equal(containerPort(c, c[kind].httpGet.port), portOf(flags(c.command).get('listen-metrics-urls')!));
  });

  it('the etcd auth Job runs deploy/etcd-auth.sh for the coordinators\' CNs and cluster, as etcd-root, against every member', () => {
    const job = k.get('Job', 'keyshard-etcd-auth');
    const c = job.spec.template.spec.containers[0];
    const env = Object.fromEntries(c.env.map((e: Obj) => [e.name, e.value])) as Record<string, string>;
    const script = k.resolve(job, c, c.command[1]);
    assert.equal(script?.text, readFileSync(path.join(ROOT, 'deploy/etcd-auth.sh'), 'utf8'), 'the ConfigMap holds deploy/etcd-auth.sh verbatim');
    const args = c.command.slice(2) as string[];
    const values = (flag: string) => args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
    const coordinators = keyshard().filter((p) => p.component === 'coordinator');
    assert.deepEqual(values('--coordinator').sort(), coordinators.map((p) => p.name).sort(), 'every coordinator CN is an etcd user');
    assert.deepEqual(values('--cluster'), [...new Set(coordinators.map((p) => p.cfg.clusterName))], 'the role covers the coordinators\' cluster prefix');
    assert.deepEqual(values('--root-user'), ['etcd-root']);
    const etcd = k.get('StatefulSet', 'etcd');
    const clientPort = portOf(flags(etcd.spec.template.spec.containers[0].command).get('listen-client-urls')!);
    assert.deepEqual(env.ETCDCTL_ENDPOINTS!.split(','), k.podNames(etcd).map((n) => `https://${n}.${etcd.spec.serviceName}.${DOMAIN}:${clientPort}`));
    for (const v of ['ETCDCTL_CACERT', 'ETCDCTL_CERT', 'ETCDCTL_KEY']) {
      const r = k.resolve(job, c, env[v]!);
      assert.equal(r?.volume.secret?.secretName, 'keyshard-etcd-root-tls', `${v} comes from the operator's Secret`);
    }
    // The operator's certificate is mounted by this Job alone.
    for (const w of k.workloads.filter((x) => x !== job))
      assert.ok(!(w.spec.template.spec.volumes ?? []).some((v: Obj) => v.secret?.secretName === 'keyshard-etcd-root-tls'), `${w.metadata.name} does not mount the etcd root certificate`);
  });
});

// ---------------------------------------------------------------- systemd

type Unit = Map<string, [string, string][]>;

function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(\w+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      unit.set(section, unit.get(section) ?? []);
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(section && eq > 0, `a key=value line in a section: ${line}`);
    unit.get(section)!.push([line.slice(0, eq), line.slice(eq + 1)]);
  }
  return unit;
}

const values = (u: Unit, section: string, key: string) => (u.get(section) ?? []).filter(([k]) => k === key).map(([, v]) => v);

/** A unit as installed: its instance name expanded, its config read from deploy/systemd/etc. */
function installedUnit(file: string, instance?: string) {
  const unitName = instance ? file.replace('@.service', `@${instance}.service`) : file;
  const text = readFileSync(path.join(SYSTEMD, file), 'utf8').replaceAll('%i', instance ?? '%i');
  const unit = parseUnit(text);
  const exec = values(unit, 'Service', 'ExecStart');
  assert.equal(exec.length, 1, `${unitName}: one ExecStart`);
  const argv = exec[0]!.split(/\s+/);
  const main = argv.find((a) => a.includes('/services/'))!;
  const component = /services\/(coordinator|custodian|audit-sink)\/dist\/main\.js$/.exec(main)?.[1] as Component;
  assert.ok(component, `${unitName}: runs a compiled keyshard service`);
  checkRuntimeCommand(argv, '/opt/keyshard/', unitName);
  const configPath = flags(argv).get('config')!;
  assert.match(configPath, /^\/etc\/keyshard\//, `${unitName}: config under /etc/keyshard`);
  const local = path.join(SYSTEMD, configPath.slice(1));
  assert.ok(existsSync(local), `${unitName}: its config ${configPath} is in deploy/systemd${configPath}`);
  const cfg = validConfig(component, readFileSync(local, 'utf8'), `${unitName} config ${configPath}`);
  return { unitName, unit, component, cfg };
}

/** Files a config names are systemd credentials (LoadCredential) or inside a StateDirectory. */
function checkUnitFiles(u: ReturnType<typeof installedUnit>): void {
  const credentials = new Set(values(u.unit, 'Service', 'LoadCredential').map((v) => v.split(':')[0]!));
  const states = values(u.unit, 'Service', 'StateDirectory').flatMap((v) => v.split(/\s+/)).map((d) => `/var/lib/${d}`);
  const credDir = `/run/credentials/${u.unitName}/`;
  for (const file of filesOf(u.component, u.cfg)) {
    if (file.startsWith(credDir)) assert.ok(credentials.has(file.slice(credDir.length)), `${u.unitName}: LoadCredential for ${file}`);
    else
      assert.ok(
        states.some((d) => file === d || file.startsWith(`${d}/`)),
        `${u.unitName}: ${file} is in a StateDirectory (${states.join(', ')}) or a credential`,
      );
  }
}

describe('systemd units (deploy/systemd)', () => {
  const coordinator = installedUnit('keyshard-coordinator.service');
  const sink = installedUnit('keyshard-audit-sink.service');
  const custodians = coordinator.cfg.custodians.map((c: any) => installedUnit('keyshard-custodian@.service', c.id));
  const etcd = Object.fromEntries(
    readFileSync(path.join(SYSTEMD, 'etc/default/etcd'), 'utf8').split('\n').filter((l) => /^\w+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  ) as Record<string, string>;

  it('every config a unit names validates, uses only schema keys and finds its files', () => {
    for (const u of [coordinator, sink, ...custodians]) checkUnitFiles(u);
    assert.equal(custodians.length, 3);
  });

  it('ports and names agree between the configs and etcd has 3 members', () => {
    const members = etcd.ETCD_INITIAL_CLUSTER!.split(',').map((m) => m.split('=')[1]!);
    assert.equal(members.length, 3, 'etcd members');
    const clientPort = portOf(etcd.ETCD_LISTEN_CLIENT_URLS!);
    assert.equal(portOf(etcd.ETCD_ADVERTISE_CLIENT_URLS!), clientPort);
    assert.ok(members.includes(etcd.ETCD_INITIAL_ADVERTISE_PEER_URLS!), 'this member is in the initial cluster');
    const hosts = coordinator.cfg.custodians.map((c: any) => hostOf(c.address));
    checkPeers({
      coordinators: [coordinator.cfg],
      custodians: custodians.map((u: any, i: number) => ({ cfg: u.cfg, address: `${hosts[i]}:${portOf(u.cfg.listen)}` })),
      // The sink config shipped is the same on every sink host (each replica finds itself by its certificate CN).
      sinks: sink.cfg.replication
        ? sink.cfg.replication.replicas.map((r: any) => ({ id: r.id, address: r.address, cfg: sink.cfg }))
        : [{ id: coordinator.cfg.audit.serverId, address: `${hostOf(coordinator.cfg.audit.address)}:${portOf(sink.cfg.listen)}`, cfg: sink.cfg }],
      etcdEndpoints: members.map((url) => url.replace(/:\d+$/, `:${clientPort}`)),
      // One coordinator host's file is shipped; the others differ only in coordinatorId.
      coordinatorIds: ['coordinator-1', 'coordinator-2', 'coordinator-3'],
    });
    assert.equal(etcd.ETCD_CLIENT_CERT_AUTH, 'true');
    assert.equal(etcd.ETCD_AUTO_COMPACTION_MODE, 'periodic');
  });

  it('SoftHSM custodians point SOFTHSM2_CONF at a shipped file whose token directory is their StateDirectory', () => {
    for (const u of custodians) {
      const env = values(u.unit, 'Service', 'Environment').find((e) => e.startsWith('SOFTHSM2_CONF='))!.slice('SOFTHSM2_CONF='.length);
      const conf = readFileSync(path.join(SYSTEMD, env.slice(1)), 'utf8');
      const tokenDir = /^directories\.tokendir\s*=\s*(\S+)/m.exec(conf)![1]!;
      assert.ok(values(u.unit, 'Service', 'StateDirectory').some((d) => `/var/lib/${d}` === tokenDir), `${u.unitName}: ${tokenDir}`);
    }
  });

  it('processes holding key material never dump core or swap', () => {
    for (const u of [coordinator, ...custodians]) {
      assert.deepEqual(values(u.unit, 'Service', 'LimitCORE'), ['0'], u.unitName);
      assert.deepEqual(values(u.unit, 'Service', 'MemorySwapMax'), ['0'], u.unitName);
    }
  });

  const analyze = (() => {
    try {
      execFileSync('systemd-analyze', ['--version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
  it('systemd-analyze verify finds nothing to say', { skip: !analyze && 'systemd-analyze is not installed' }, () => {
    const files = ['keyshard-coordinator.service', 'keyshard-audit-sink.service', 'keyshard-custodian@.service'].map((f) => path.join(SYSTEMD, f));
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', ...files], { encoding: 'utf8' });
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '');
    assert.equal(r.status, 0);
  });
});
