/** ceremony list/show/cancel, and key destroy (a destroy-key quorum ceremony). */
import type { Command } from 'commander';
import { waitForCeremony, type Ceremony } from '@keyshard/client';
import { withClient } from '../connection.ts';
import { printJson, progress } from '../output.ts';

const stateOf = (c: Ceremony) => c.state.replace('CEREMONY_STATE_', '').toLowerCase();

function ceremonyLine(c: Ceremony): string {
  return `${c.id}  ${c.operation.padEnd(15)} ${stateOf(c).padEnd(9)} approvals ${c.approved_by.length}/${c.threshold}  by ${c.initiator}  expires ${c.expires_at}`;
}

export function registerCeremonies(program: Command): void {
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
      await withClient(program, async (client) => {
        const c = await client.startCeremony('destroy-key', { key: ref }, opts.ttl ?? 0);
        process.stdout.write(`destroy-key ceremony ${c.id} for ${c.parameters.key_name} (${c.parameters.key_id}) open until ${c.expires_at}; hash ${c.hash}\n`);
        if (!opts.wait) return;
        const done = await waitForCeremony(client, c, (x) => progress(`approvals ${x.approved_by.length}/${x.threshold}`), 24 * 3600_000);
        process.stdout.write(`destroyed ${done.parameters.key_name} (approved by ${done.approved_by.join(', ')})\n`);
      });
    });
}
