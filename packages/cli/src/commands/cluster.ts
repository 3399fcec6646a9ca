/** status, init, unseal, seal. */
import type { Command } from 'commander';
import { ceremonyState, unsealAndWait, type Status } from '@keyshard/client';
import { coordinatorClient, withClient } from '../connection.ts';
import { printJson, progress } from '../output.ts';

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
    lines.push(`ceremony     ${c.operation} ${c.id} ${ceremonyState(c)} (approvals ${c.approved_by.length}/${c.threshold})`);
    for (const f of c.failures) lines.push(`  rejected   ${f.custodian_id}: ${f.reason}`);
  }
  for (const r of s.replicas) lines.push(`replica      ${r.id.padEnd(14)} ${r.address.padEnd(22)} ${r.sealed ? 'sealed' : 'unsealed'}${r.leader ? '  leader' : ''}`);
  for (const c of s.custodians) lines.push(`custodian    ${c.id.padEnd(14)} ${c.address.padEnd(22)} ${c.reachable ? 'reachable' : 'UNREACHABLE'}`);
  if (s.etcd && !s.etcd.reachable) lines.push(`etcd         UNREACHABLE: ${s.etcd.error}`);
  for (const m of s.etcd?.members ?? [])
    lines.push(`etcd         ${(m.name || m.id).padEnd(14)} ${(m.client_urls[0] ?? '(not started)').padEnd(22)} ${m.leader ? 'leader' : m.learner ? 'learner' : 'member'}${s.etcd!.version ? `  v${s.etcd!.version}` : ''}`);
  const sink = s.audit_sink;
  if (sink) lines.push(`audit sink   ${''.padEnd(14)} ${sink.address.padEnd(22)} ${sink.reachable ? `reachable, ${sink.tree_size} records` : `UNREACHABLE: ${sink.error}`}`);
  return lines.join('\n');
}

export function registerCluster(program: Command): void {
  program
    .command('status')
    .description('show seal state, quorum, ceremony progress, replicas, custodians, etcd members and the audit sink')
    .option('--json', 'print JSON (has a boolean field "sealed")')
    .action(async (opts: { json?: boolean }) => {
      const s = await withClient(program, (client) => client.status());
      if (opts.json) printJson(s);
      else process.stdout.write(`${describe(s)}\n`);
    });

  program
    .command('init')
    .description('generate the root key and deliver its shares to the custodians')
    .option('--shares <n>', 'number of shares (default: all configured custodians)', (v) => Number.parseInt(v, 10))
    .option('--threshold <t>', 'shares needed to unseal', (v) => Number.parseInt(v, 10), 3)
    .action(async (opts: { shares?: number; threshold: number }) => {
      const r = await withClient(program, (client) => client.init(opts.shares, opts.threshold));
      process.stdout.write(
        `initialized cluster ${r.cluster_id}: ${r.threshold} of ${r.shares} shares (${r.custodian_ids.join(', ')})\n` +
          `manifest fingerprint ${r.manifest_fingerprint}\n`,
      );
    });

  program
    .command('unseal')
    .description('open an unseal ceremony for the custodian quorum')
    .option('--wait', 'wait until the ceremony finishes, showing approvals')
    .action(async (opts: { wait?: boolean }) => {
      const client = coordinatorClient(program.opts());
      try {
        if (!opts.wait) {
          const c = await client.startUnseal();
          process.stdout.write(`unseal ceremony ${c.id} open until ${c.expires_at}; hash ${c.hash}\n`);
          return;
        }
        const c = await unsealAndWait(client, (c) => progress(`approvals ${c.approved_by.length}/${c.threshold}`), 15 * 60_000);
        for (const f of c.failures) progress(`share from ${f.custodian_id} rejected: ${f.reason}`);
        process.stdout.write(`unsealed (ceremony ${c.id}, approved by ${c.approved_by.join(', ')})\n`);
      } finally {
        client.close();
      }
    });

  program
    .command('seal')
    .description('drop the root key from memory; unsealing needs the quorum again')
    .action(async () => {
      await withClient(program, (client) => client.seal());
      process.stdout.write('sealed\n');
    });
}
