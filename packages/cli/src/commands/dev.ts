/** `keyshard dev`: a whole local cluster in the foreground until SIGINT/SIGTERM. */
import path from 'node:path';
import type { Command } from 'commander';
import type { Ceremony } from '@keyshard/client';
import { appEnvFile, custodianEnvFile, DevCluster, ETCD_ROOT } from '@keyshard/devcluster';
import { printJson, progress, UsageError } from '../output.ts';
import { integer, oneOf } from '../parse.ts';

/** `--manual`: what each custodian's operator runs to approve the unseal ceremony that waits. */
function approvalInstructions(cluster: DevCluster, c: Ceremony): string {
  const rel = (f: string) => (path.relative(process.cwd(), f).startsWith('..') ? f : path.relative(process.cwd(), f));
  return [
    `unseal ceremony ${c.id} waits for ${c.threshold} of ${cluster.custodianIds.length} custodians to approve (--manual).`,
    `In another shell, as each custodian's operator (its variables in ${rel(path.join(cluster.layout.dir, '<custodian>.env'))}):`,
    ...cluster.custodianIds.map((id) => `  . ${rel(custodianEnvFile(cluster.layout, id))} && npx keyshard custodian approve ${c.id}`),
    `(\`npx keyshard custodian show ${c.id}\` first shows what is approved.)`,
  ].join('\n');
}

export function registerDev(program: Command): void {
  program
    .command('dev')
    .description('run a local cluster on 127.0.0.1: etcd (1 or 3 members), SoftHSM custodians, audit sink, coordinators; init and unseal')
    .option('--dir <dir>', 'state directory', '.keyshard/dev')
    .option('--custodians <n>', 'number of custodians (first start only)', integer({ min: 2, max: 255 }), 5)
    .option('--threshold <t>', 'shares needed to unseal (first start only)', integer({ min: 1, max: 255 }), 3)
    .option('--coordinators <n>', 'coordinator replicas (first start only)', integer({ min: 1, max: 9 }), 1)
    .option('--etcd-members <n>', 'etcd members, 1 or 3 (first start only)', oneOf('1', '3'), '1')
    .option('--audit-replicas <n>', 'audit sink replicas, 1, 3, 5 or 7: an event is acknowledged once a majority holds it (first start only)', oneOf('1', '3', '5', '7'), '3')
    .option('--manual', 'custodians wait for `keyshard custodian approve` instead of auto-approving (first start only); prints the commands')
    .option('--no-init', 'leave a fresh cluster uninitialized (to restore a backup into: `keyshard restore FILE`)')
    .option('--json', 'print the endpoints as JSON once the cluster is up')
    .action(async (opts: { dir: string; custodians: number; threshold: number; coordinators: number; etcdMembers: string; auditReplicas: string; manual?: boolean; init: boolean; json?: boolean }) => {
      if (opts.threshold > opts.custodians) throw new UsageError(`--threshold ${opts.threshold} is more than --custodians ${opts.custodians}`);
      const cluster = await DevCluster.create({
        dir: opts.dir,
        custodians: opts.custodians,
        threshold: opts.threshold,
        coordinators: opts.coordinators,
        etcdMembers: Number(opts.etcdMembers) as 1 | 3,
        auditReplicas: Number(opts.auditReplicas),
        approvalPolicy: opts.manual ? 'manual' : 'auto',
        progress,
      });
      let stopping: Promise<void> | undefined;
      const stop = () => {
        stopping ??= cluster.stop().then(() => process.exit(0));
        return stopping;
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      let ceremony: Ceremony | undefined;
      try {
        await cluster.start();
        const manual = cluster.layout.plan.approvalPolicy === 'manual';
        ceremony = await cluster.bootstrap({
          init: opts.init,
          ...(manual ? { onUnsealOpened: (c: Ceremony) => progress(approvalInstructions(cluster, c)), timeoutMs: 24 * 3600_000 } : {}),
        });
      } catch (e) {
        await cluster.stop();
        throw e;
      }
      const uninitialized = !opts.init && ceremony === undefined && (await uninitializedNow(cluster));
      const { plan } = cluster.layout;
      const endpoints = {
        state: uninitialized ? 'uninitialized' : 'unsealed',
        coordinators: Object.fromEntries(cluster.coordinatorIds.map((id) => [id, cluster.coordinatorAddressOf(id)])),
        audit_sink: `127.0.0.1:${plan.ports.audit}`,
        audit_replicas: Object.fromEntries(cluster.auditSinkIds.map((id) => [id, cluster.layout.auditSinkAddress(id)])),
        audit_log: cluster.auditLogFile,
        etcd: Object.fromEntries(cluster.layout.etcdMembers.map((m) => [m.name, `https://127.0.0.1:${m.clientPort}`])),
        custodians: Object.fromEntries(cluster.custodianIds.map((id) => [id, cluster.custodianAddress(id)])),
        logs: cluster.layout.logDir,
        env: cluster.envFile,
        app_env: appEnvFile(cluster.layout),
        audit_trust: cluster.trustFile,
      };
      if (opts.json) printJson(endpoints);
      else
        process.stdout.write(
          [
            uninitialized ? 'keyshard dev cluster is up, not initialized (--no-init): `keyshard restore FILE` or `keyshard init`' : 'keyshard dev cluster is up and unsealed',
            ...cluster.coordinatorIds.map((id) => `  ${id.padEnd(12)} ${cluster.coordinatorAddressOf(id)}`),
            ...(cluster.auditSinkIds.length > 1
              ? cluster.auditSinkIds.map((id) => `  ${id.padEnd(12)} ${cluster.layout.auditSinkAddress(id)}  (log ${path.join(cluster.layout.auditDirOf(id), 'audit.log')}; replicated, leader now ${cluster.auditLeader() ?? 'being elected'})`)
              : [`  audit sink   127.0.0.1:${plan.ports.audit}  (log ${cluster.auditLogFile})`]),
            ...cluster.layout.etcdMembers.map((m) => `  ${m.name.padEnd(12)} https://127.0.0.1:${m.clientPort}`),
            `  etcd auth    coordinators only; the etcd operator's certificate is ${cluster.layout.certs[ETCD_ROOT]!.cert}`,
            ...cluster.custodianIds.map((id) => `  ${id.padEnd(12)} ${cluster.custodianAddress(id)}`),
            `  logs         ${cluster.layout.logDir}`,
            `  audit trust  ${cluster.trustFile}  (sink key + witness keys for \`keyshard audit verify\`; keep a copy outside the log folder)`,
            '',
            `In another shell:  . ${cluster.envFile} && npx keyshard status   (the admin: administers keys, uses none unless a policy names it)`,
            `As the service principal app, which uses keys:  . ${appEnvFile(cluster.layout)}`,
            'Press Ctrl-C to stop every process.',
            '',
          ].join('\n'),
        );
      await new Promise(() => {});
    });
}

async function uninitializedNow(cluster: DevCluster): Promise<boolean> {
  const client = cluster.client();
  try {
    return !(await client.status()).initialized;
  } finally {
    client.close();
  }
}
