/** ceremony list/show/cancel; the quorum ceremonies key destroy, reshare, rotate-root, destroy-cluster. */
import type { Command } from 'commander';
import { ceremonyState as stateOf, type Ceremony, type KeyshardClient } from '@keyshard/client';
import { withClient } from '../connection.ts';
import { printJson } from '../output.ts';
import { followCeremony, tally } from '../ceremony-progress.ts';
import { ceremonyTtl, integer } from '../parse.ts';

function ceremonyLine(c: Ceremony): string {
  return `${c.id}  ${c.operation.padEnd(15)} ${stateOf(c).padEnd(9)} approvals ${tally(c)}  by ${c.initiator}  expires ${c.expires_at}`;
}

/**
 * Opens a quorum ceremony and prints it; with --wait follows approvals and refusals until it
 * ends. With --json, stdout is the ceremony as JSON (the finished one with --wait).
 */
async function runCeremony(
  client: KeyshardClient,
  operation: string,
  parameters: Record<string, string>,
  opts: { wait?: boolean; ttl?: number; json?: boolean },
  done: (c: Ceremony) => string,
): Promise<void> {
  const c = await client.startCeremony(operation, parameters, opts.ttl ?? 0);
  const shown = Object.entries(c.parameters).map(([k, v]) => `${k}=${v}`).join(' ');
  const opened = `${operation} ceremony ${c.id} open until ${c.expires_at}; hash ${c.hash}\n  ${shown}\n`;
  if (!opts.wait) return opts.json ? printJson(c) : void process.stdout.write(opened);
  if (opts.json) process.stderr.write(opened);
  else process.stdout.write(opened);
  const finished = await followCeremony(client, c);
  if (opts.json) printJson(finished);
  else process.stdout.write(`${done(finished)} (approved by ${finished.approved_by.join(', ')})\n`);
}

/** The options every quorum ceremony command takes. */
const ceremonyOptions = (cmd: Command) =>
  cmd
    .option('--wait', 'wait until the ceremony finishes, showing approvals and refusals')
    .option('--ttl <duration>', 'how long custodians have to approve (e.g. 15m, 24h; at most 7d)', ceremonyTtl)
    .option('--json', 'print the ceremony as JSON');

export function registerCeremonies(program: Command): void {
  ceremonyOptions(
    program
      .command('reshare')
      .description('a new custodian set and/or threshold for the same root key (quorum ceremony); old shares are destroyed once the new set is in use')
      .requiredOption('--threshold <t>', 'shares needed to unseal with the new set', integer({ min: 1, max: 255 }))
      .option('--custodians <ids>', 'comma-separated custodian ids of the new set (default: the current set)'),
  ).action(async (opts: { threshold: number; custodians?: string; wait?: boolean; ttl?: number; json?: boolean }) => {
    const params: Record<string, string> = { threshold: String(opts.threshold) };
    if (opts.custodians) params.custodians = opts.custodians;
    await withClient(program, (c) => runCeremony(c, 'reshare', params, opts, (x) => `reshared: ${x.parameters.threshold} of ${x.parameters.custodians}`));
  });
  ceremonyOptions(
    program.command('rotate-root').description('a new root key: every key-encryption key re-wrapped, new shares, old shares destroyed (quorum ceremony)'),
  ).action(async (opts: { wait?: boolean; ttl?: number; json?: boolean }) => {
    await withClient(program, (c) => runCeremony(c, 'rotate-root', {}, opts, (x) => `root key rotated: share set ${x.parameters.new_generation}`));
  });
  ceremonyOptions(
    program.command('destroy-cluster').description('destroy every share in every HSM and erase the cluster state: irreversible (quorum ceremony)'),
  ).action(async (opts: { wait?: boolean; ttl?: number; json?: boolean }) => {
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
      else if (ceremonies.length === 0) process.stdout.write(opts.all ? 'no ceremonies\n' : 'no open ceremonies (--all lists finished ones too)\n');
      else for (const c of ceremonies) process.stdout.write(`${ceremonyLine(c)}\n`);
    });
  cer
    .command('show <id>')
    .description('every field of a ceremony as JSON: bound parameters, hash, approvals, refusals')
    .option('--json', 'print JSON (the only format)')
    .action(async (id: string) => printJson(await withClient(program, (c) => c.getCeremony(id))));
  cer
    .command('cancel <id>')
    .description('cancel an open ceremony (admin)')
    .option('--json', 'print the ceremony as JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const c = await withClient(program, (client) => client.cancelCeremony(id));
      if (opts.json) printJson(c);
      else process.stdout.write(`${ceremonyLine(c)}\n`);
    });

  ceremonyOptions(
    program
      .commands.find((c) => c.name() === 'key')!
      .command('destroy <key>')
      .description('crypto-shred a key past its destruction waiting period: opens a destroy-key ceremony for the custodian quorum'),
  ).action(async (ref: string, opts: { wait?: boolean; ttl?: number; json?: boolean }) => {
    await withClient(program, (c) => runCeremony(c, 'destroy-key', { key: ref }, opts, (x) => `destroyed ${x.parameters.key_name}`));
  });
}
