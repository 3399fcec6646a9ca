/** `keyshard dev`: a whole local cluster in the foreground until SIGINT/SIGTERM. */
import type { Command } from 'commander';
import { DevCluster, ETCD_ROOT } from '@keyshard/devcluster';
import { progress } from '../output.ts';

export function registerDev(program: Command): void {
  program
    .command('dev')
    .description('run a local cluster on 127.0.0.1: etcd (1 or 3 members), SoftHSM custodians, audit sink, coordinators; init and unseal')
    .option('--dir <dir>', 'state directory', '.keyshard/dev')
    .option('--custodians <n>', 'number of custodians (first start only)', (v) => Number.parseInt(v, 10), 5)
    .option('--threshold <t>', 'shares needed to unseal (first start only)', (v) => Number.parseInt(v, 10), 3)
    .option('--coordinators <n>', 'coordinator replicas (first start only)', (v) => Number.parseInt(v, 10), 1)
    .option('--etcd-members <n>', 'etcd members, 1 or 3 (first start only)', (v) => Number.parseInt(v, 10), 1)
    .option('--manual', 'custodians wait for `keyshard custodian approve` instead of auto-approving')
    .action(async (opts: { dir: string; custodians: number; threshold: number; coordinators: number; etcdMembers: number; manual?: boolean }) => {
      if (!(opts.custodians >= 2 && opts.custodians <= 255)) throw new Error('--custodians must be between 2 and 255');
      if (!(opts.coordinators >= 1 && opts.coordinators <= 9)) throw new Error('--coordinators must be between 1 and 9');
      if (opts.etcdMembers !== 1 && opts.etcdMembers !== 3) throw new Error('--etcd-members must be 1 or 3');
      const cluster = await DevCluster.create({
        dir: opts.dir,
        custodians: opts.custodians,
        threshold: opts.threshold,
        coordinators: opts.coordinators,
        etcdMembers: opts.etcdMembers,
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
      try {
        await cluster.start();
        await cluster.bootstrap();
      } catch (e) {
        await cluster.stop();
        throw e;
      }
      const { plan } = cluster.layout;
      process.stdout.write(
        [
          'keyshard dev cluster is up and unsealed',
          ...cluster.coordinatorIds.map((id) => `  ${id.padEnd(12)} ${cluster.coordinatorAddressOf(id)}`),
          `  audit sink   127.0.0.1:${plan.ports.audit}  (log ${cluster.auditLogFile})`,
          ...cluster.layout.etcdMembers.map((m) => `  ${m.name.padEnd(12)} https://127.0.0.1:${m.clientPort}`),
          `  etcd auth    coordinators only; the etcd operator's certificate is ${cluster.layout.certs[ETCD_ROOT]!.cert}`,
          ...cluster.custodianIds.map((id) => `  ${id.padEnd(12)} ${cluster.custodianAddress(id)}`),
          `  logs         ${cluster.layout.logDir}`,
          '',
          `In another shell:  . ${cluster.envFile} && npx keyshard status`,
          'Press Ctrl-C to stop every process.',
          '',
        ].join('\n'),
      );
      await new Promise(() => {});
    });
}
