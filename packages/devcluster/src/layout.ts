/**
 * The on-disk layout of a local cluster under DIR, made once and reused on restart:
 *   cluster.json        ports, custodian count, threshold (so a restart keeps its endpoints)
 *   pki/                dev CA and one certificate per component and client principal, and
 *                       etcd-root: the etcd operator's (root role), given to no keyshard process
 *   hsm/<custodian>/    one SoftHSM token per custodian: softhsm2.conf, tokens/, pin and so-pin (0600;
 *                       the SO PIN is kept only in a dev cluster: production configs never hold it)
 *   transport/<id>.pem  each coordinator's long-term transport private key (0600), enrolled by
 *                       the dev SO into every custodian token (index.ts) before any ceremony
 *   witness/<id>.pem    each coordinator's audit witness key (Ed25519, 0600: config witnessKeyFile)
 *   audit-trust.json    the auditor's trust roots (sink public key, every witness vkey, quorum):
 *                       what `keyshard audit verify` is given as trust roots
 *   etcd/               etcd data (one member), or etcd-1/ etcd-2/ etcd-3/ (three members)
 *   audit/              the audit sink's log;  config/  service configs
 *   logs/               every process's structured log;  env  shell exports for the CLI
 */
import { createPrivateKey, createPublicKey, generateKeyPair, generateKeyPairSync, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { issueCert, type CertFiles, type CertProfile } from '@keyshard/pki';
import { trustFileText, vkeyOf, witnessName } from '@keyshard/audit-log';
import { initSoftHsmToken, SOFTHSM_MODULE } from '@keyshard/hsm';
import { freePort } from './processes.ts';

export interface ClusterPlan {
  clusterName: string;
  custodians: number;
  threshold: number;
  approvalPolicy: 'auto' | 'manual';
  /** etcdClient / etcdPeer are the first etcd member's; `etcd` lists every member (absent in plans made before it). */
  /** `audit` is the first audit sink replica's; `auditReplicas` the others' (absent or empty: one sink). */
  ports: { etcdClient: number; etcdPeer: number; etcd?: EtcdPorts[]; audit: number; auditReplicas?: number[]; coordinators: number[]; custodians: number[] };
}

export interface EtcdPorts {
  client: number;
  peer: number;
}

/** One etcd member: its process name (`etcd`, or `etcd-1`..`etcd-3`), its `--name`, ports and data directory. */
export interface EtcdMember {
  name: string;
  memberName: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
}

/** Deep-merged into every coordinator's config (tests: e.g. small usage bounds). */
export type CoordinatorOverrides = Record<string, unknown>;

/** See Layout.auditRoute. */
export type AuditRoute = (from: string, sinkId: string) => string | undefined;

export interface Layout {
  dir: string;
  plan: ClusterPlan;
  certs: Record<string, CertFiles>;
  custodianIds: string[];
  coordinatorIds: string[];
  coordinatorOverrides: CoordinatorOverrides;
  /** Deep-merged into one replica's config, after coordinatorOverrides (tests: e.g. a replica's etcd path through a proxy). */
  replicaOverrides: Record<string, CoordinatorOverrides>;
  /**
   * The address `from` (a coordinator, custodian or audit sink replica) dials to reach audit sink
   * replica `sinkId`, when not the replica's own (tests: a TCP link in between, to partition one
   * replica); undefined: the replica's listen address.
   */
  auditRoute?: AuditRoute;
  softhsmConf: Record<string, string>;
  pinFile: Record<string, string>;
  /** Dev only: each token's security-officer PIN (what enrolls transport keys). */
  soPinFile: Record<string, string>;
  /** Each coordinator's transport private key file (config transportKeyFile). */
  transportKeyFile: Record<string, string>;
  /** Each coordinator's audit witness key file (config witnessKeyFile). */
  witnessKeyFile: Record<string, string>;
  /** DIR/audit-trust.json: the trust roots an auditor verifies the log with. */
  trustFile: string;
  configFile: (name: string) => string;
  /** The first audit sink replica's data directory (the only sink's unless several run). */
  auditDir: string;
  /**
   * Audit sink replicas, as process names and certificate CNs: `audit-sink` (the first keeps the
   * names a single sink always had: its dir audit/, its keys audit-keys/, its port) then
   * `audit-sink-2`, `audit-sink-3`, … (services/audit-sink REPLICATION.md).
   */
  auditSinkIds: string[];
  auditSinkAddress: (id: string) => string;
  auditDirOf: (id: string) => string;
  /** Every replica's checkpoint public key (what producers verify acknowledgements with). */
  sinkCheckpointPublicKeys: string[];
  sinkCheckpointKeyOf: (id: string) => string;
  /** The first etcd member's data directory. */
  etcdDir: string;
  etcdMembers: EtcdMember[];
  logDir: string;
  /** The audit sink's checkpoint signing key, and its public key that producers verify acknowledgements with. */
  sinkCheckpointKey: string;
  sinkCheckpointPublicKey: string;
}

export const ADMIN = 'admin';
export const AUDITOR = 'auditor';
/** A service principal that may use the key service but is not an admin. */
export const APP = 'app';
/** The first coordinator replica (the only one unless the cluster has several). */
export const COORDINATOR = 'coordinator-1';
export const coordinatorId = (i: number) => `coordinator-${i + 1}`;
/**
 * The etcd operator's certificate CN: the etcd user with the root role (deploy/etcd-auth.sh).
 * Only DevCluster's bootstrap and operator steps (etcdctl) use it, never a keyshard process.
 */
export const ETCD_ROOT = 'etcd-root';
export const operatorOf = (custodianId: string) => `${custodianId}-operator`;
/** The i-th audit sink replica (0-based): `audit-sink`, then `audit-sink-2`, `audit-sink-3`, … */
export const auditSinkId = (i: number) => (i === 0 ? 'audit-sink' : `audit-sink-${i + 1}`);

interface PlanOptions {
  custodians: number;
  threshold: number;
  approvalPolicy: 'auto' | 'manual';
  coordinators: number;
  /** 1 or 3. */
  etcdMembers: number;
  /** Audit sink replicas: 1 (default), 3, 5 or 7. */
  auditReplicas?: number;
}

async function newPlan(opts: PlanOptions): Promise<ClusterPlan> {
  const ports = { etcdClient: 0, etcdPeer: 0, audit: 0, coordinators: [] as number[], custodians: [] as number[] };
  const taken = new Set<number>();
  const next = async () => {
    for (;;) {
      const p = await freePort();
      if (!taken.has(p)) {
        taken.add(p);
        return p;
      }
    }
  };
  const etcd: EtcdPorts[] = [];
  for (let i = 0; i < opts.etcdMembers; i++) etcd.push({ client: await next(), peer: await next() });
  ports.etcdClient = etcd[0]!.client;
  ports.etcdPeer = etcd[0]!.peer;
  ports.audit = await next();
  const auditReplicas: number[] = [];
  for (let i = 1; i < (opts.auditReplicas ?? 1); i++) auditReplicas.push(await next());
  for (let i = 0; i < opts.coordinators; i++) ports.coordinators.push(await next());
  for (let i = 0; i < opts.custodians; i++) ports.custodians.push(await next());
  return { clusterName: 'dev', custodians: opts.custodians, threshold: opts.threshold, approvalPolicy: opts.approvalPolicy, ports: { ...ports, auditReplicas, etcd } };
}

export async function prepareLayout(
  dir: string,
  opts: PlanOptions & { coordinatorOverrides?: CoordinatorOverrides; replicaOverrides?: Record<string, CoordinatorOverrides>; auditRoute?: AuditRoute },
  progress: (msg: string) => void,
): Promise<Layout> {
  dir = path.resolve(dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const planFile = path.join(dir, 'cluster.json');
  let plan: ClusterPlan;
  if (existsSync(planFile)) {
    plan = JSON.parse(readFileSync(planFile, 'utf8')) as ClusterPlan;
    const old = plan.ports as ClusterPlan['ports'] & { coordinator?: number }; // before several replicas
    if (!old.coordinators && old.coordinator) old.coordinators = [old.coordinator];
    old.etcd ??= [{ client: old.etcdClient, peer: old.etcdPeer }]; // before several etcd members
    progress(`reusing ${dir} (${plan.custodians} custodians, threshold ${plan.threshold}, ${old.etcd.length} etcd member(s))`);
  } else {
    plan = await newPlan(opts);
    writeFileSync(planFile, JSON.stringify(plan, null, 2));
  }
  const custodianIds = plan.ports.custodians.map((_, i) => `custodian-${i + 1}`);
  const coordinatorIds = plan.ports.coordinators.map((_, i) => coordinatorId(i));
  const etcdMembers = etcdMembersOf(dir, plan.ports.etcd!);
  const auditPorts = [plan.ports.audit, ...(plan.ports.auditReplicas ?? [])];
  const auditSinkIds = auditPorts.map((_, i) => auditSinkId(i));
  const auditSinkAddress = (id: string) => addr(auditPorts[auditSinkIds.indexOf(id)]!);
  const auditDirOf = (id: string) => path.join(dir, id === 'audit-sink' ? 'audit' : id.replace('audit-sink', 'audit'));
  const pki = path.join(dir, 'pki');
  progress('dev PKI');
  const certs: Record<string, CertFiles> = {};
  // Principals get client-only certificates; components that also call others both usages;
  // etcd only serves (@keyshard/pki profiles). Certificates of an older profile are re-issued.
  const profiles: [string, CertProfile][] = [
    ['etcd', 'server'],
    ...[...auditSinkIds, ...coordinatorIds, ...custodianIds].map((n): [string, CertProfile] => [n, 'component']),
    ...[ADMIN, AUDITOR, APP, ETCD_ROOT, ...custodianIds.map(operatorOf)].map((n): [string, CertProfile] => [n, 'client']),
  ];
  for (const [name, profile] of profiles) certs[name] = await issueCert(pki, name, name, profile);
  const sinkKeysDir = (id: string) => path.join(dir, id === 'audit-sink' ? 'audit-keys' : id.replace('audit-sink', 'audit-keys'));
  const sinkKeysOf = Object.fromEntries(auditSinkIds.map((id) => [id, ensureSinkCheckpointKey(sinkKeysDir(id))]));
  const sinkKeys = sinkKeysOf['audit-sink']!;

  const softhsmConf: Record<string, string> = {};
  const pinFile: Record<string, string> = {};
  const soPinFile: Record<string, string> = {};
  for (const id of custodianIds) {
    const tokenDir = path.join(dir, 'hsm', id);
    mkdirSync(tokenDir, { recursive: true, mode: 0o700 });
    pinFile[id] = path.join(tokenDir, 'pin');
    soPinFile[id] = path.join(tokenDir, 'so-pin');
    if (!existsSync(pinFile[id]!)) writeFileSync(pinFile[id]!, randomBytes(12).toString('hex'), { mode: 0o600 });
    if (!existsSync(soPinFile[id]!)) writeFileSync(soPinFile[id]!, randomBytes(12).toString('hex'), { mode: 0o600 });
    const pin = readFileSync(pinFile[id]!, 'utf8').trim();
    progress(`SoftHSM token ${id}`);
    softhsmConf[id] = (await initSoftHsmToken({ dir: tokenDir, label: id, pin, soPin: readFileSync(soPinFile[id]!, 'utf8').trim() })).confPath;
  }
  const transportKeyFile = Object.fromEntries(coordinatorIds.map((id) => [id, path.join(dir, 'transport', `${id}.pem`)]));
  const witnessKeyFile = Object.fromEntries(coordinatorIds.map((id) => [id, path.join(dir, 'witness', `${id}.pem`)]));
  const configDir = path.join(dir, 'config');
  mkdirSync(configDir, { recursive: true });
  return {
    dir,
    plan,
    certs,
    custodianIds,
    coordinatorIds,
    coordinatorOverrides: opts.coordinatorOverrides ?? {},
    replicaOverrides: opts.replicaOverrides ?? {},
    ...(opts.auditRoute ? { auditRoute: opts.auditRoute } : {}),
    softhsmConf,
    pinFile,
    soPinFile,
    transportKeyFile,
    witnessKeyFile,
    trustFile: path.join(dir, 'audit-trust.json'),
    configFile: (name) => path.join(configDir, `${name}.json`),
    auditDir: path.join(dir, 'audit'),
    auditSinkIds,
    auditSinkAddress,
    auditDirOf,
    sinkCheckpointPublicKeys: auditSinkIds.map((id) => sinkKeysOf[id]!.publicKeyFile),
    sinkCheckpointKeyOf: (id) => sinkKeysOf[id]!.privateKeyFile,
    etcdDir: etcdMembers[0]!.dataDir,
    etcdMembers,
    logDir: path.join(dir, 'logs'),
    sinkCheckpointKey: sinkKeys.privateKeyFile,
    sinkCheckpointPublicKey: sinkKeys.publicKeyFile,
  };
}

/**
 * The sink's checkpoint signing key (Ed25519, PKCS#8, 0600), made here rather than by the sink on
 * first start so that its public key can go into every producer's config before anything runs
 * (audit.checkpointPublicKeys); the public key is written beside it, derived from the private one.
 */
function ensureSinkCheckpointKey(keysDir: string): { privateKeyFile: string; publicKeyFile: string } {
  mkdirSync(keysDir, { recursive: true, mode: 0o700 });
  const privateKeyFile = path.join(keysDir, 'checkpoint.pem');
  const publicKeyFile = path.join(keysDir, 'checkpoint.pub.pem');
  if (!existsSync(privateKeyFile)) {
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(privateKeyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  }
  const pub = createPublicKey(createPrivateKey(readFileSync(privateKeyFile))).export({ type: 'spki', format: 'pem' }) as string;
  if (!existsSync(publicKeyFile) || readFileSync(publicKeyFile, 'utf8') !== pub) writeFileSync(publicKeyFile, pub, { mode: 0o644 });
  return { privateKeyFile, publicKeyFile };
}

/**
 * A single member keeps the names it always had (process `etcd`, member `dev`, data in etcd/),
 * so existing state directories and tests work unchanged; three are etcd-1..etcd-3.
 */
function etcdMembersOf(dir: string, ports: EtcdPorts[]): EtcdMember[] {
  if (ports.length === 1) return [{ name: 'etcd', memberName: 'dev', clientPort: ports[0]!.client, peerPort: ports[0]!.peer, dataDir: path.join(dir, 'etcd') }];
  return ports.map((p, i) => ({ name: `etcd-${i + 1}`, memberName: `etcd-${i + 1}`, clientPort: p.client, peerPort: p.peer, dataDir: path.join(dir, `etcd-${i + 1}`) }));
}

/** Every etcd member's client URL (TLS). */
export const etcdClientUrls = (l: Layout) => l.etcdMembers.map((m) => `https://127.0.0.1:${m.clientPort}`);

const addr = (port: number) => `127.0.0.1:${port}`;

/** Writes every service's config file; returns nothing secret (PINs stay in their files). */
export function writeConfigs(l: Layout): void {
  const { plan } = l;
  const write = (name: string, cfg: unknown) => writeFileSync(l.configFile(name), JSON.stringify(cfg, null, 2));
  const replicated = l.auditSinkIds.length > 1;
  const route = (from: string, sinkId: string) => l.auditRoute?.(from, sinkId) ?? l.auditSinkAddress(sinkId);
  for (const id of l.auditSinkIds)
    write(id, {
      listen: l.auditSinkAddress(id),
      dataDir: l.auditDirOf(id),
      tls: l.certs[id],
      // Each appender records only its own component's operations (@keyshard/audit-log appender-scope.ts).
      appenders: [...l.coordinatorIds.map((principal) => ({ principal, scope: 'coordinator' })), ...l.custodianIds.map((principal) => ({ principal, scope: 'custodian' }))],
      readers: [AUDITOR],
      // The sink's keys live outside its data dir, so a copy of the log holds neither. Each
      // replica signs with its own checkpoint key; the HMAC key of sensitive fields is one for
      // all (a value hashes the same whichever replica leads).
      checkpointKeyFile: l.sinkCheckpointKeyOf(id),
      hmacKeyFile: path.join(l.dir, 'audit-keys', 'hmac.key'),
      ...(replicated
        ? {
            replication: {
              replicas: l.auditSinkIds.map((r, i) => ({ id: r, address: r === id ? l.auditSinkAddress(r) : route(id, r), checkpointPublicKey: l.sinkCheckpointPublicKeys[i]! })),
            },
          }
        : {}),
    });
  /** How producer `from` reaches the audit log: the first replica, or every replica. */
  const sinkPin = (from: string) => ({
    address: route(from, 'audit-sink'),
    serverId: 'audit-sink',
    checkpointPublicKeys: l.sinkCheckpointPublicKeys,
    ...(replicated ? { replicas: l.auditSinkIds.map((id) => ({ address: route(from, id), serverId: id })) } : {}),
  });
  l.custodianIds.forEach((id, i) =>
    write(id, {
      custodianId: id,
      listen: addr(plan.ports.custodians[i]!),
      tls: l.certs[id],
      token: { modulePath: SOFTHSM_MODULE, label: id, pinFile: l.pinFile[id] },
      oaepHash: 'sha1',
      approvalPolicy: plan.approvalPolicy,
      coordinators: l.coordinatorIds,
      operators: [operatorOf(id)],
      audit: sinkPin(id),
    }),
  );
  l.coordinatorIds.forEach((id, i) =>
    write(
      id,
      merge(
        {
          clusterName: plan.clusterName,
          coordinatorId: id,
          listen: addr(plan.ports.coordinators[i]!),
          tls: l.certs[id],
          transportKeyFile: l.transportKeyFile[id],
          witnessKeyFile: l.witnessKeyFile[id],
          etcd: { endpoints: etcdClientUrls(l), tls: l.certs[id], serverName: 'etcd' },
          audit: { ...sinkPin(id), spoolDir: path.join(l.dir, 'spool', id) },
          custodians: l.custodianIds.map((cid, j) => ({ id: cid, address: addr(plan.ports.custodians[j]!) })),
          admins: [ADMIN],
          keyUsers: [APP],
          // A dev/test cluster: rotation periods and destruction waits of seconds are allowed.
          keys: { minRotationPeriodSeconds: 1, minDestructionWaitSeconds: 1, defaultDestructionWaitSeconds: 30 * 24 * 3600 },
          rotationSweepSeconds: 1,
          oaepHash: 'sha1',
        },
        merge(l.coordinatorOverrides, l.replicaOverrides[id] ?? {}),
      ),
    ),
  );
}

/** `over` merged into `base`, objects recursively (arrays and values replace). */
function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
    out[k] = isObj(b) && isObj(v) ? merge(b, v) : v;
  }
  return out;
}

/**
 * DIR/env: everything the README's commands need, for `. DIR/env` — the admin's identity for the
 * coordinators, the auditor's for the audit sink (KEYSHARD_AUDIT_CERT/KEY), and custodian-1's
 * operator for `keyshard custodian …` (KEYSHARD_CUSTODIAN_ADDR/CERT/KEY). DIR/<custodian>.env
 * sets the custodian variables for each custodian's operator (`. DIR/custodian-2.env` acts as
 * custodian-2's). Returns DIR/env.
 */
export function writeEnvFile(l: Layout): string {
  const admin = l.certs[ADMIN]!;
  const auditor = l.certs[AUDITOR]!;
  const lines = [
    '# keyshard dev cluster: `. ./env` then `npx keyshard status`',
    `export KEYSHARD_ADDR=${q(l.plan.ports.coordinators.map(addr).join(','))}`,
    // The CLI pins the servers it reaches: these replicas, and the sink by its certificate name.
    `export KEYSHARD_COORDINATOR_IDS=${q(l.coordinatorIds.join(','))}`,
    `export KEYSHARD_CA=${q(admin.ca)}`,
    `export KEYSHARD_CERT=${q(admin.cert)}`,
    `export KEYSHARD_KEY=${q(admin.key)}`,
    `# the admin administers keys; to use them as the service principal \`${APP}\`: . ${appEnvFile(l)}`,
    `export KEYSHARD_ETCD_ENDPOINTS=${q(etcdClientUrls(l).join(','))}`,
    '# the audit sink, read as the auditor (`keyshard audit …`)',
    `export KEYSHARD_AUDIT_DIR=${q(l.auditDir)}`,
    `export KEYSHARD_AUDIT_ADDR=${q(addr(l.plan.ports.audit))}`,
    `export KEYSHARD_AUDIT_SERVER_ID=${q('audit-sink')}`,
    `export KEYSHARD_AUDIT_CERT=${q(auditor.cert)}`,
    `export KEYSHARD_AUDIT_KEY=${q(auditor.key)}`,
    `# \`keyshard custodian …\` as ${l.custodianIds[0]}'s operator; another custodian's: . ${path.join(l.dir, '<custodian>.env')}`,
    ...custodianExports(l, l.custodianIds[0]!),
    `# each custodian has its own token directory: ${path.join(l.dir, 'hsm', '<custodian>', 'softhsm2.conf')}`,
    `export SOFTHSM2_CONF=${q(l.softhsmConf[l.custodianIds[0]!]!)}`,
    '',
  ];
  // The service principal `app` (config keyUsers): the key service as an application uses it.
  // Cluster admins administer keys and use only those whose policy names them (separation of duties).
  const app = l.certs[APP]!;
  writeFileSync(
    appEnvFile(l),
    [`# the key service as \`${APP}\`, a service principal (key user): \`. ${appEnvFile(l)}\``, ...lines.slice(1, 4), `export KEYSHARD_CERT=${q(app.cert)}`, `export KEYSHARD_KEY=${q(app.key)}`, ''].join('\n'),
    { mode: 0o600 },
  );
  for (const id of l.custodianIds)
    writeFileSync(custodianEnvFile(l, id), [`# ${id}'s operator: \`. ${custodianEnvFile(l, id)}\` then \`npx keyshard custodian pending\``, `export KEYSHARD_CA=${q(admin.ca)}`, ...custodianExports(l, id), ''].join('\n'), { mode: 0o600 });
  const file = path.join(l.dir, 'env');
  writeFileSync(file, lines.join('\n'), { mode: 0o600 });
  return file;
}

/** DIR/app.env: the variables that make `keyshard …` act as the service principal `app` instead of the admin. */
export const appEnvFile = (l: Layout) => path.join(l.dir, 'app.env');

/** DIR/<custodian>.env: the variables that make `keyshard custodian …` act as that custodian's operator. */
export const custodianEnvFile = (l: Layout, custodianId: string) => path.join(l.dir, `${custodianId}.env`);

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function custodianExports(l: Layout, id: string): string[] {
  const op = l.certs[operatorOf(id)]!;
  return [
    `export KEYSHARD_CUSTODIAN_ADDR=${q(addr(l.plan.ports.custodians[l.custodianIds.indexOf(id)]!))}`,
    `export KEYSHARD_CUSTODIAN_CERT=${q(op.cert)}`,
    `export KEYSHARD_CUSTODIAN_KEY=${q(op.key)}`,
  ];
}

/**
 * Creates (RSA-3072, PKCS#8, 0600) each coordinator's transport key file that is missing; resolves
 * with the ids created. Generated off the event loop (libuv's thread pool): RSA-3072 takes a
 * second or more on a loaded machine, and a test process that relays the cluster's traffic (TCP
 * links) must not stall meanwhile.
 */
export async function ensureTransportKeys(l: Layout, ids = l.coordinatorIds): Promise<string[]> {
  const created: string[] = [];
  await Promise.all(
    ids.map(async (id) => {
      const file = l.transportKeyFile[id]!;
      if (existsSync(file)) return;
      mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      const { privateKey } = await generateRsa('rsa', { modulusLength: 3072 });
      writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
      created.push(id);
    }),
  );
  return ids.filter((id) => created.includes(id));
}

const generateRsa = promisify(generateKeyPair);

/** The transport public key (SPKI PEM) of a coordinator of the layout. */
export const transportPublicKeyPem = (l: Layout, id: string) =>
  createPublicKey(createPrivateKey(readFileSync(l.transportKeyFile[id]!, 'utf8'))).export({ type: 'spki', format: 'pem' }).toString();

/**
 * Makes each coordinator's witness key (Ed25519, PKCS#8, 0600) that is missing — here rather than
 * by the coordinator on first start, so that the trust file can name every witness before
 * anything runs — and writes DIR/audit-trust.json: the sink's checkpoint public key, every
 * replica's witness vkey (name = keyshard.dev/witness/<certificate CN>; a dev certificate's CN is
 * the coordinator id) and a witness quorum of EVERY replica: each witness checks only its own
 * chain, so a sink can show one replica history A and another history B (a split view); an
 * auditor that requires every witness, each with a fresh cosignature (verify.ts --max-age), sees
 * that B's fresh cosignature is of a tree A's log does not contain. Returns the trust file's path.
 */
export function writeTrustFile(l: Layout): string {
  const witnesses: string[] = [];
  for (const id of l.coordinatorIds) {
    const file = l.witnessKeyFile[id]!;
    if (!existsSync(file)) {
      mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      writeFileSync(file, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
    }
    witnesses.push(vkeyOf(witnessName(id), createPublicKey(createPrivateKey(readFileSync(file, 'utf8')))));
  }
  writeFileSync(l.trustFile, trustFileText(l.sinkCheckpointPublicKeys.map((f) => readFileSync(f, 'utf8')), witnesses, witnesses.length), { mode: 0o644 });
  return l.trustFile;
}
