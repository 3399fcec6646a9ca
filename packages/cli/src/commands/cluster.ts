/** status, init, unseal, seal. */
import type { Command } from 'commander';
import { ceremonyState, type Status } from '@keyshard/client';
import { withClient } from '../connection.ts';
import { printJson } from '../output.ts';
import { ceremonyReporter, followCeremony, refusalLine, tally } from '../ceremony-progress.ts';
import { ceremonyTtl, integer } from '../parse.ts';

function describe(s: Status): string {
  const lines = [
    `cluster      ${s.cluster_id || '(not initialized)'}`,
    `coordinator  ${s.coordinator_id}`,
    `leader       ${s.leader_id || '(none elected)'}`,
    `state        ${!s.initialized ? 'uninitialized' : s.sealed ? 'sealed' : 'unsealed'}`,
  ];
  if (s.initialized) lines.push(`quorum       ${s.threshold} of ${s.shares}`);
  if (s.ceremony) {
    const c = s.ceremony;
    lines.push(`ceremony     ${c.operation} ${c.id} ${ceremonyState(c)} (approvals ${tally(c)})`);
    for (const f of c.failures) lines.push(refusalLine(f));
  }
  for (const r of s.replicas) lines.push(`replica      ${r.id.padEnd(14)} ${r.address.padEnd(22)} ${!s.initialized ? 'uninitialized' : r.sealed ? 'sealed' : 'unsealed'}${r.leader ? '  leader' : ''}`);
  for (const c of s.custodians) lines.push(`custodian    ${c.id.padEnd(14)} ${c.address.padEnd(22)} ${c.reachable ? 'reachable' : 'UNREACHABLE'}`);
  if (s.etcd && !s.etcd.reachable) lines.push(`etcd         UNREACHABLE: ${s.etcd.error}`);
  for (const m of s.etcd?.members ?? [])
    lines.push(`etcd         ${(m.name || m.id).padEnd(14)} ${(m.client_urls[0] ?? '(not started)').padEnd(22)} ${m.leader ? 'leader' : m.learner ? 'learner' : 'member'}${s.etcd!.version ? `  v${s.etcd!.version}` : ''}`);
  lines.push(...auditSinkLines(s));
  const w = s.witness;
  if (w) lines.push(`witness      ${w.name}  ${w.alarm ? `ALARM: ${w.alarm} (audited operations refused until \`keyshard audit witness reset\`)` : `cosigned ${w.cosigned_tree_size} records`}`);
  return lines.join('\n');
}

/**
 * The audit sink: one line, or with a replicated sink (more than one in `audit_replicas`) one
 * line per replica, named, marked `leader` (it acknowledged this coordinator's latest batch) or
 * `sending` (the coordinator sends there, no acknowledgement yet). An older coordinator sends no
 * `audit_replicas`: its `audit_sink` alone.
 */
export function auditSinkLines(s: Pick<Status, 'audit_sink' | 'audit_replicas'>): string[] {
  const state = (r: NonNullable<Status['audit_sink']>) => (r.reachable ? `reachable, ${r.tree_size} records` : `UNREACHABLE: ${r.error}`);
  const replicas = s.audit_replicas ?? [];
  if (replicas.length <= 1) return s.audit_sink ? [`audit sink   ${''.padEnd(14)} ${s.audit_sink.address.padEnd(22)} ${state(s.audit_sink)}`] : [];
  return replicas.map((r) => `audit sink   ${r.server_id.padEnd(14)} ${r.address.padEnd(22)} ${state(r)}${r.leader ? '  leader' : r.sending ? '  sending' : ''}`);
}

export function registerCluster(program: Command): void {
  program
    .command('status')
    .description('show seal state, quorum, ceremony progress, replicas, custodians, etcd members, the audit sink (each replica of a replicated one) and this replica\'s witness of it')
    .option('--json', 'print JSON (has a boolean field "sealed")')
    .action(async (opts: { json?: boolean }) => {
      const s = await withClient(program, (client) => client.status());
      if (opts.json) printJson(s);
      else process.stdout.write(`${describe(s)}\n`);
    });

  program
    .command('init')
    .description('generate the root key and deliver its shares to the custodians')
    .option('--shares <n>', 'number of shares (default: all configured custodians)', integer({ min: 1, max: 255 }))
    .option('--threshold <t>', 'shares needed to unseal', integer({ min: 1, max: 255 }), 3)
    .option('--json', 'print JSON')
    .action(async (opts: { shares?: number; threshold: number; json?: boolean }) => {
      const r = await withClient(program, (client) => client.init(opts.shares, opts.threshold));
      if (opts.json) return printJson(r);
      process.stdout.write(
        `initialized cluster ${r.cluster_id}: ${r.threshold} of ${r.shares} shares (${r.custodian_ids.join(', ')})\n` +
          `manifest fingerprint ${r.manifest_fingerprint}\n`,
      );
    });

  program
    .command('unseal')
    .description('open an unseal ceremony for the custodian quorum')
    .option('--wait', "wait until the ceremony finishes, showing approvals and each custodian's refusal as it happens")
    .option('--ttl <duration>', 'how long custodians have to approve (e.g. 15m)', ceremonyTtl)
    .option('--json', 'print the ceremony as JSON (the finished one with --wait)')
    .action(async (opts: { wait?: boolean; ttl?: number; json?: boolean }) => {
      await withClient(program, async (client) => {
        const c = await client.startUnseal(opts.ttl);
        if (!opts.wait) return opts.json ? printJson(c) : void process.stdout.write(`unseal ceremony ${c.id} open until ${c.expires_at}; hash ${c.hash}\n`);
        const done = await followCeremony(client, c, ceremonyReporter(), 15 * 60_000);
        if (opts.json) printJson(done);
        else process.stdout.write(`unsealed (ceremony ${done.id}, approved by ${done.approved_by.join(', ')})\n`);
      });
    });

  program
    .command('seal')
    .description('drop the root key from memory; unsealing needs the quorum again')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      await withClient(program, (client) => client.seal());
      if (opts.json) printJson({ sealed: true });
      else process.stdout.write('sealed\n');
    });
}
