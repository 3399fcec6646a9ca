/**
 * The on-disk layout of a local cluster under DIR, made once and reused on restart:
 *   cluster.json        ports, custodian count, threshold (so a restart keeps its endpoints)
 *   pki/                dev CA and one certificate per component and client principal
 *   hsm/<custodian>/    one SoftHSM token per custodian: softhsm2.conf, tokens/, pin (0600)
 *   etcd/               etcd data;  audit/  the audit sink's log;  config/  service configs
 *   logs/               every process's structured log;  env  shell exports for the CLI
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { issueCert, type CertFiles } from '@keyshard/pki';
import { initSoftHsmToken, SOFTHSM_MODULE } from '@keyshard/hsm';
import { freePort } from './processes.ts';

export interface ClusterPlan {
  clusterName: string;
  custodians: number;
  threshold: number;
  approvalPolicy: 'auto' | 'manual';
  ports: { etcdClient: number; etcdPeer: number; audit: number; coordinator: number; custodians: number[] };
}

export interface Layout {
  dir: string;
  plan: ClusterPlan;
  certs: Record<string, CertFiles>;
  custodianIds: string[];
  softhsmConf: Record<string, string>;
  pinFile: Record<string, string>;
  configFile: (name: string) => string;
  auditDir: string;
  etcdDir: string;
  logDir: string;
}

export const ADMIN = 'admin';
export const AUDITOR = 'auditor';
/** A service principal that may use the key service but is not an admin. */
export const APP = 'app';
export const COORDINATOR = 'coordinator-1';
export const operatorOf = (custodianId: string) => `${custodianId}-operator`;

async function newPlan(opts: { custodians: number; threshold: number; approvalPolicy: 'auto' | 'manual' }): Promise<ClusterPlan> {
  const ports = { etcdClient: 0, etcdPeer: 0, audit: 0, coordinator: 0, custodians: [] as number[] };
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
  ports.etcdClient = await next();
  ports.etcdPeer = await next();
  ports.audit = await next();
  ports.coordinator = await next();
  for (let i = 0; i < opts.custodians; i++) ports.custodians.push(await next());
  return { clusterName: 'dev', ...opts, ports };
}

export async function prepareLayout(
  dir: string,
  opts: { custodians: number; threshold: number; approvalPolicy: 'auto' | 'manual' },
  progress: (msg: string) => void,
): Promise<Layout> {
  dir = path.resolve(dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const planFile = path.join(dir, 'cluster.json');
  let plan: ClusterPlan;
  if (existsSync(planFile)) {
    plan = JSON.parse(readFileSync(planFile, 'utf8')) as ClusterPlan;
    progress(`reusing ${dir} (${plan.custodians} custodians, threshold ${plan.threshold})`);
  } else {
    plan = await newPlan(opts);
    writeFileSync(planFile, JSON.stringify(plan, null, 2));
  }
  const custodianIds = plan.ports.custodians.map((_, i) => `custodian-${i + 1}`);
  const pki = path.join(dir, 'pki');
  progress('dev PKI');
  const certs: Record<string, CertFiles> = {};
  for (const name of ['etcd', 'audit-sink', COORDINATOR, ADMIN, AUDITOR, APP, ...custodianIds, ...custodianIds.map(operatorOf)])
    certs[name] = await issueCert(pki, name);

  const softhsmConf: Record<string, string> = {};
  const pinFile: Record<string, string> = {};
  for (const id of custodianIds) {
    const tokenDir = path.join(dir, 'hsm', id);
    mkdirSync(tokenDir, { recursive: true, mode: 0o700 });
    pinFile[id] = path.join(tokenDir, 'pin');
    if (!existsSync(pinFile[id]!)) writeFileSync(pinFile[id]!, randomBytes(12).toString('hex'), { mode: 0o600 });
    const pin = readFileSync(pinFile[id]!, 'utf8').trim();
    progress(`SoftHSM token ${id}`);
    softhsmConf[id] = (await initSoftHsmToken({ dir: tokenDir, label: id, pin, soPin: randomBytes(12).toString('hex') })).confPath;
  }
  const configDir = path.join(dir, 'config');
  mkdirSync(configDir, { recursive: true });
  return {
    dir,
    plan,
    certs,
    custodianIds,
    softhsmConf,
    pinFile,
    configFile: (name) => path.join(configDir, `${name}.json`),
    auditDir: path.join(dir, 'audit'),
    etcdDir: path.join(dir, 'etcd'),
    logDir: path.join(dir, 'logs'),
  };
}

const addr = (port: number) => `127.0.0.1:${port}`;

/** Writes every service's config file; returns nothing secret (PINs stay in their files). */
export function writeConfigs(l: Layout): void {
  const { plan } = l;
  const etcdUrl = `https://127.0.0.1:${plan.ports.etcdClient}`;
  const write = (name: string, cfg: unknown) => writeFileSync(l.configFile(name), JSON.stringify(cfg, null, 2));
  write('audit-sink', {
    listen: addr(plan.ports.audit),
    dataDir: l.auditDir,
    tls: l.certs['audit-sink'],
    appenders: [COORDINATOR, ...l.custodianIds],
    readers: [AUDITOR],
  });
  l.custodianIds.forEach((id, i) =>
    write(id, {
      custodianId: id,
      listen: addr(plan.ports.custodians[i]!),
      tls: l.certs[id],
      token: { modulePath: SOFTHSM_MODULE, label: id, pinFile: l.pinFile[id] },
      oaepHash: 'sha1',
      approvalPolicy: plan.approvalPolicy,
      coordinators: [COORDINATOR],
      operators: [operatorOf(id)],
      audit: { address: addr(plan.ports.audit) },
    }),
  );
  write(COORDINATOR, {
    clusterName: plan.clusterName,
    coordinatorId: COORDINATOR,
    listen: addr(plan.ports.coordinator),
    tls: l.certs[COORDINATOR],
    etcd: { endpoints: [etcdUrl], tls: l.certs[COORDINATOR] },
    audit: { address: addr(plan.ports.audit), spoolDir: path.join(l.dir, 'spool', COORDINATOR) },
    custodians: l.custodianIds.map((id, i) => ({ id, address: addr(plan.ports.custodians[i]!) })),
    admins: [ADMIN],
    keyUsers: [APP],
    // A dev/test cluster: rotation periods and destruction waits of seconds are allowed.
    keys: { minRotationPeriodSeconds: 1, minDestructionWaitSeconds: 1, defaultDestructionWaitSeconds: 30 * 24 * 3600 },
    rotationSweepSeconds: 1,
    oaepHash: 'sha1',
  });
}

export function writeEnvFile(l: Layout): string {
  const admin = l.certs[ADMIN]!;
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const lines = [
    '# keyshard dev cluster: `. ./env` then `npx keyshard status`',
    `export KEYSHARD_ADDR=${q(addr(l.plan.ports.coordinator))}`,
    `export KEYSHARD_CA=${q(admin.ca)}`,
    `export KEYSHARD_CERT=${q(admin.cert)}`,
    `export KEYSHARD_KEY=${q(admin.key)}`,
    `export KEYSHARD_ETCD_ENDPOINTS=${q(`https://127.0.0.1:${l.plan.ports.etcdClient}`)}`,
    `export KEYSHARD_AUDIT_DIR=${q(l.auditDir)}`,
    `export KEYSHARD_AUDIT_ADDR=${q(addr(l.plan.ports.audit))}`,
    `# each custodian has its own token directory: ${path.join(l.dir, 'hsm', '<custodian>', 'softhsm2.conf')}`,
    `export SOFTHSM2_CONF=${q(l.softhsmConf[l.custodianIds[0]!]!)}`,
    '',
  ];
  const file = path.join(l.dir, 'env');
  writeFileSync(file, lines.join('\n'), { mode: 0o600 });
  return file;
}
