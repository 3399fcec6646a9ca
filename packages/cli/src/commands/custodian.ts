/** custodian pending/show/approve/deny: run by a custodian's operator against that custodian. */
import type { Command } from 'commander';
import { withCustodian } from '../connection.ts';
import { printJson } from '../output.ts';

export function registerCustodian(program: Command): void {
  const cust = program
    .command('custodian')
    .description('custodian operator commands (KEYSHARD_CUSTODIAN_ADDR, KEYSHARD_CUSTODIAN_CERT/KEY)')
    .option('--custodian <host:port>', 'custodian address (KEYSHARD_CUSTODIAN_ADDR)');
  const flags = () => ({ ...program.opts(), ...cust.opts() });

  cust
    .command('pending')
    .description('list ceremonies waiting for this custodian')
    .action(async () => {
      const { ceremonies } = await withCustodian(flags(), (c) => c.pending());
      for (const x of ceremonies) process.stdout.write(`${x.id}  ${x.operation}  by ${x.initiator}  expires ${x.expires_at}\n`);
    });
  cust
    .command('show <ceremony-id>')
    .description('show every bound parameter of a ceremony before approving it')
    .action(async (id: string) => {
      const cer = await withCustodian(flags(), (c) => c.show(id));
      printJson(cer);
    });
  cust
    .command('approve <ceremony-id>')
    .description("approve a ceremony: the HSM signs its hash and wraps the share to the ceremony's recipients")
    .action(async (id: string) => {
      const r = await withCustodian(flags(), (c) => c.approve(id));
      process.stdout.write(`${r.ceremony_id}: ${r.status}\n`);
    });
  cust
    .command('deny <ceremony-id>')
    .description('deny a ceremony, with a reason that is recorded')
    .requiredOption('--reason <text>', 'why')
    .action(async (id: string, opts: { reason: string }) => {
      const r = await withCustodian(flags(), (c) => c.deny(id, opts.reason));
      process.stdout.write(`${r.ceremony_id}: ${r.status}\n`);
    });
}
