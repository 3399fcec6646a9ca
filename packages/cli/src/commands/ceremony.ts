/** ceremony list/show/cancel; the quorum ceremonies key destroy, reshare, rotate-root, destroy-cluster. */
import type { Command } from 'commander';
import { ceremonyState as stateOf, waitForCeremony, type Ceremony } from '@keyshard/client';
import type { KeyshardClient } from '@keyshard/client';
import { withClient } from '../connection.ts';
import { printJson, progress } from '../output.ts';

function ceremonyLine(c: Ceremony): string {
  return `${c.id}  ${c.operation.padEnd(15)} ${stateOf(c).padEnd(9)} approvals ${c.approved_by.length}/${c.threshold}  by ${c.initiator}  expires ${c.expires_at}`;
}

/** Opens a quorum ceremony, prints it, and with --wait follows approvals until it ends. */
async function runCeremony(
  client: KeyshardClient,
  operation: string,
  parameters: Record<string, string>,
  opts: { wait?: boolean; ttl?: number },
  done: (c: Ceremony) => string,
): Promise<void> {
  const c = await client.startCeremony(operation, parameters, opts.ttl ?? 0);
  const shown = Object.entries(c.parameters).map(([k, v]) => `${k}=${v}`).join(' ');
  process.stdout.write(`${operation} ceremony ${c.id} open until ${c.expires_at}; hash ${c.hash}\n  ${shown}\n`);
  if (!opts.wait) return;
  const finished = await waitForCeremony(client, c, (x) => progress(`approvals ${x.approved_by.length}/${x.threshold}`), 24 * 3600_000);
  process.stdout.write(`${done(finished)} (approved by ${finished.approved_by.join(', ')})\n`);
}

const WAIT = ['--wait', 'wait until the ceremony finishes, showing approvals'] as const;
const TTL = ['--ttl <seconds>', 'how long custodians have to approve'] as const;
const int = (v: string) => Number.parseInt(v, 10);

export function registerCeremonies(program: Command): void {
  program
    .command('reshare')
    .description('a new custodian set and/or threshold for the same root key (quorum ceremony); old shares are destroyed once the new set is in use')
    .requiredOption('--threshold <t>', 'shares needed to unseal with the new set', int)
    .option('--custodians <ids>', 'comma-separated custodian ids of the new set (default: the current set)')
    .option(...WAIT)
    .option(...TTL, int)
    .action(async (opts: { threshold: number; custodians?: string; wait?: boolean; ttl?: number }) => {
      const params: Record<string, string> = { threshold: String(opts.threshold) };
      if (opts.custodians) params.custodians = opts.custodians;
      await withClient(program, (c) => runCeremony(c, 'reshare', params, opts, (x) => `reshared: ${x.parameters.threshold} of ${x.parameters.custodians}`));
    });
  program
    .command('rotate-root')
    .description('a new root key: every key-encryption key re-wrapped, new shares, old shares destroyed (quorum ceremony)')
    .option(...WAIT)
    .option(...TTL, int)
    .action(async (opts: { wait?: boolean; ttl?: number }) => {
      await withClient(program, (c) => runCeremony(c, 'rotate-root', {}, opts, (x) => `root key rotated: share set ${x.parameters.new_generation}`));
    });
  program
    .command('destroy-cluster')
    .description('destroy every share in every HSM and erase the cluster state: irreversible (quorum ceremony)')
    .option(...WAIT)
    .option(...TTL, int)
    .action(async (opts: { wait?: boolean; ttl?: number }) => {
      await withClient(program, (c) => runCeremony(c, 'destroy-cluster', {}, opts, (x) => `cluster ${x.parameters.cluster_id} destroyed`));
    });

  const cer = program.command('ceremony').description('quorum ceremonies: list, show, cancel');
  cer
    .command('list')
    .description('open ceremonies (--all: finished ones too)')
    .option('--all', 'include completed, failed, expired and cancelled ceremonies')
    .option('--json', 'print JSON')
    .action(async (opts: { all?: boolean; json?: boolean }) => {
      const { ceremonies } = await withClient(program, (c) => c.listCeremonies(!!opts.all));
      if (opts.json) printJson(ceremonies);
      else for (const c of ceremonies) process.stdout.write(`${ceremonyLine(c)}\n`);
    });
  cer
    .command('show <id>')
    .description('every field of a ceremony: bound parameters, hash, approvals, refusals')
    .action(async (id: string) => printJson(await withClient(program, (c) => c.getCeremony(id))));
  cer
    .command('cancel <id>')
    .description('cancel an open ceremony (admin)')
    .action(async (id: string) => {
      const c = await withClient(program, (client) => client.cancelCeremony(id));
      process.stdout.write(`${ceremonyLine(c)}\n`);
    });

  program
    .commands.find((c) => c.name() === 'key')!
    .command('destroy <key>')
    .description('crypto-shred a key past its destruction waiting period: opens a destroy-key ceremony for the custodian quorum')
    .option('--wait', 'wait until the ceremony finishes, showing approvals')
    .option('--ttl <seconds>', 'how long custodians have to approve', (v) => Number.parseInt(v, 10))
    .action(async (ref: string, opts: { wait?: boolean; ttl?: number }) => {
      await withClient(program, (c) => runCeremony(c, 'destroy-key', { key: ref }, opts, (x) => `destroyed ${x.parameters.key_name}`));
    });
}
