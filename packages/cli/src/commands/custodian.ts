/**
 * custodian pending/show/approve/deny, enroll/revoke/trusted-keys: run by a custodian's operator
 * against that custodian. The SO PIN of enroll/revoke is read from a file the officer supplies
 * at that moment (never an argument: argv is visible to other users), sent for that one call.
 */
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { ShareExport } from '@keyshard/client';
import { recoveryKeyFingerprint } from '@keyshard/crypto';
import { withClient, withCustodian } from '../connection.ts';
import { printJson, progress, UsageError } from '../output.ts';
import { followCeremony } from '../ceremony-progress.ts';
import { ceremonyTtl, readFlagFile, readRecoveryPrivateKey, readRecoveryPublicKey, readTransportPublicKey } from '../parse.ts';

const EXPORT_FORMAT = 'keyshard-share-export';

/** The export file: the share wrapped to the recovery key (no plaintext), and what the import needs. */
function readExport(file: string): ShareExport {
  let e: ShareExport & { format?: string; wrapped_share: string; succession_statement: string };
  try {
    e = JSON.parse(readFlagFile('--in', file));
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`--in ${file} is not a keyshard share export`);
  }
  if (e.format !== EXPORT_FORMAT) throw new UsageError(`${file} is not a keyshard share export`);
  return { ...e, wrapped_share: Buffer.from(e.wrapped_share, 'base64'), succession_statement: Buffer.from(e.succession_statement ?? '', 'base64') };
}

function readSoPin(file: string): string {
  const pin = readFlagFile('--so-pin-file', file).trim();
  if (!pin) throw new UsageError(`${file} is empty: it must hold the token security officer's PIN`);
  return pin;
}

/** What enroll / revoke act on: a coordinator's transport key, or an offline recovery key. */
function target(opts: { coordinator?: string; transportPublicKey?: string; recoveryPublicKey?: string }, needKey: boolean) {
  if (opts.recoveryPublicKey) {
    if (opts.coordinator || opts.transportPublicKey) throw new UsageError('--recovery-public-key goes alone, without --coordinator / --transport-public-key');
    // Enrollment takes only an RSA public key of >= 3072 bits; a revocation may name an older, smaller
    // one, but never a private key (the same refusal before anything is sent).
    const publicKeyPem = needKey ? readRecoveryPublicKey('--recovery-public-key', opts.recoveryPublicKey) : readFlagFile('--recovery-public-key', opts.recoveryPublicKey);
    if (!needKey) {
      try {
        recoveryKeyFingerprint(publicKeyPem);
      } catch (e) {
        throw new UsageError(`--recovery-public-key ${opts.recoveryPublicKey}: ${(e as Error).message}`);
      }
    }
    return { kind: 'recovery' as const, publicKeyPem };
  }
  if (!opts.coordinator) throw new UsageError('--coordinator ID (or --recovery-public-key FILE) is required');
  if (needKey && !opts.transportPublicKey) throw new UsageError('--transport-public-key FILE is required');
  return { kind: 'transport' as const, coordinatorId: opts.coordinator, publicKeyPem: opts.transportPublicKey ? readTransportPublicKey('--transport-public-key', opts.transportPublicKey) : undefined };
}

export function registerCustodian(program: Command): void {
  const cust = program
    .command('custodian')
    .description('custodian operator commands (KEYSHARD_CUSTODIAN_ADDR, KEYSHARD_CUSTODIAN_CERT/KEY)')
    .option('--custodian <host:port>', 'custodian address (KEYSHARD_CUSTODIAN_ADDR)')
    .option('--custodian-server-id <id>', 'the name the custodian\'s certificate must carry; default: the one the operator certificate is named for (KEYSHARD_CUSTODIAN_ID)');
  const flags = () => ({ ...program.opts(), ...cust.opts() });

  cust
    .command('pending')
    .description('list ceremonies waiting for this custodian')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { ceremonies } = await withCustodian(flags(), (c) => c.pending());
      if (opts.json) printJson(ceremonies);
      else if (ceremonies.length === 0) process.stdout.write('no ceremonies waiting for this custodian\n');
      else for (const x of ceremonies) process.stdout.write(`${x.id}  ${x.operation}  by ${x.initiator}  expires ${x.expires_at}\n`);
    });
  cust
    .command('show <ceremony-id>')
    .description('show every bound parameter of a ceremony before approving it (JSON)')
    .option('--json', 'print JSON (the only format)')
    .action(async (id: string) => {
      const cer = await withCustodian(flags(), (c) => c.show(id));
      printJson(cer);
    });
  cust
    .command('approve <ceremony-id>')
    .description("approve a ceremony: the HSM signs its hash and wraps the share to the ceremony's recipients")
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const r = await withCustodian(flags(), (c) => c.approve(id));
      if (opts.json) printJson({ ceremony_id: r.ceremony_id, status: r.status });
      else process.stdout.write(`${r.ceremony_id}: ${r.status}\n`);
    });
  cust
    .command('backup')
    .description("custodian recovery: a quorum-approved ceremony wraps one custodian's share to an offline RSA recovery key; the export is written to a file (admin, via the coordinator)")
    .requiredOption('--custodian-id <id>', 'whose share')
    .requiredOption('--recovery-public-key <public.pem>', 'the offline recovery public key (RSA, at least 3072 bits; a private key is refused before anything is sent)')
    .requiredOption('--out <file>', 'where to write the export')
    .option('--ttl <duration>', 'how long custodians have to approve (e.g. 15m, 24h)', ceremonyTtl)
    .option('--json', 'print JSON: the export written')
    .action(async (opts: { custodianId: string; recoveryPublicKey: string; out: string; ttl?: number; json?: boolean }) => {
      const recoveryKey = readRecoveryPublicKey('--recovery-public-key', opts.recoveryPublicKey);
      await withClient(program, async (client) => {
        const c = await client.startCeremony('export-share', { custodian: opts.custodianId, recovery_key: recoveryKey }, opts.ttl ?? 0);
        progress(`export-share ceremony ${c.id} for ${opts.custodianId}, recovery key ${c.parameters.recovery_key_fingerprint!.slice(0, 16)}…; waiting for approvals`);
        await followCeremony(client, c);
        const e = await client.getShareExport(c.id);
        await writeFile(opts.out, `${JSON.stringify({ format: EXPORT_FORMAT, version: 1, ...e, wrapped_share: Buffer.from(e.wrapped_share).toString('base64'), succession_statement: Buffer.from(e.succession_statement).toString('base64') }, null, 2)}\n`, { mode: 0o600 });
        if (opts.json) printJson({ ceremony_id: c.id, custodian_id: e.custodian_id, cluster_id: e.cluster_id, generation: e.generation, out: opts.out });
        else process.stdout.write(`share of ${e.custodian_id} (cluster ${e.cluster_id}, set ${e.generation}) exported to ${opts.out}\n`);
      });
    });
  cust
    .command('restore')
    .description("custodian recovery: import a share export into this custodian's new token, unwrapped inside the token with the recovery private key")
    .requiredOption('--in <file>', 'the export written by `keyshard custodian backup`')
    .requiredOption('--recovery-private-key <private.pem>', 'the offline recovery private key (RSA, at least 3072 bits; a public key is refused)')
    .option('--json', 'print JSON')
    .action(async (opts: { in: string; recoveryPrivateKey: string; json?: boolean }) => {
      const e = readExport(opts.in);
      const recoveryPrivateKey = readRecoveryPrivateKey('--recovery-private-key', opts.recoveryPrivateKey);
      const r = await withCustodian(flags(), (c) => c.importShare(e, recoveryPrivateKey));
      if (opts.json) return printJson({ custodian_id: r.custodian_id, cluster_id: e.cluster_id, generation: e.generation });
      process.stdout.write(`custodian ${r.custodian_id} holds its share of cluster ${e.cluster_id} (set ${e.generation}) again\n`);
    });
  cust
    .command('enroll')
    .description("the token's security officer enrolls a coordinator's transport public key (or an offline recovery key) as a trusted key: the only kind the HSM will release a share to")
    .option('--coordinator <id>', 'the coordinator identity (certificate CN) the key belongs to')
    .option('--transport-public-key <file>', "the coordinator's transport public key (PEM)")
    .option('--recovery-public-key <public.pem>', 'instead: an offline recovery public key (RSA, at least 3072 bits) for custodian recovery exports')
    .requiredOption('--so-pin-file <file>', "a file holding the token security officer's PIN (used for this call only)")
    .option('--json', 'print JSON')
    .action(async (opts: { coordinator?: string; transportPublicKey?: string; recoveryPublicKey?: string; soPinFile: string; json?: boolean }) => {
      const t = target(opts, true);
      const r = await withCustodian(flags(), (c) => c.enrollTransportKey({ ...t, publicKeyPem: t.publicKeyPem!, soPin: readSoPin(opts.soPinFile) }));
      if (opts.json) printJson(r);
      else process.stdout.write(`${r.custodian_id}: ${r.kind} key ${r.kind === 'transport' ? `of ${r.name} ` : ''}${r.fingerprint.slice(0, 16)}… ${r.already_enrolled ? 'was already enrolled' : 'enrolled'}\n`);
    });
  cust
    .command('revoke')
    .description("the token's security officer revokes a coordinator's transport keys (only the one given, for a rotation), or an offline recovery key")
    .option('--coordinator <id>', 'the coordinator identity')
    .option('--transport-public-key <file>', 'revoke only this key (the old key of a rotation)')
    .option('--recovery-public-key <public.pem>', 'instead: the offline recovery public key to revoke')
    .requiredOption('--so-pin-file <file>', "a file holding the token security officer's PIN (used for this call only)")
    .option('--json', 'print JSON')
    .action(async (opts: { coordinator?: string; transportPublicKey?: string; recoveryPublicKey?: string; soPinFile: string; json?: boolean }) => {
      const t = target(opts, false);
      const r = await withCustodian(flags(), (c) => c.revokeTransportKey({ ...t, soPin: readSoPin(opts.soPinFile) }));
      if (opts.json) printJson(r);
      else process.stdout.write(`${r.custodian_id}: revoked ${r.revoked} key(s)\n`);
    });
  cust
    .command('trusted-keys')
    .description("list the keys this custodian's token may release shares to (enrolled by its security officer)")
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const r = await withCustodian(flags(), (c) => c.listTrustedKeys());
      if (opts.json) return printJson(r);
      if (r.keys.length === 0) process.stdout.write('no trusted keys: its security officer enrolls them (keyshard custodian enroll)\n');
      for (const k of r.keys) process.stdout.write(`${k.kind.padEnd(9)}  ${k.kind === 'transport' ? k.name.padEnd(24) : ''.padEnd(24)}  ${k.fingerprint}\n`);
    });
  cust
    .command('deny <ceremony-id>')
    .description('deny a ceremony, with a reason that is recorded')
    .requiredOption('--reason <text>', 'why')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { reason: string; json?: boolean }) => {
      const r = await withCustodian(flags(), (c) => c.deny(id, opts.reason));
      if (opts.json) printJson({ ceremony_id: r.ceremony_id, status: r.status });
      else process.stdout.write(`${r.ceremony_id}: ${r.status}\n`);
    });
}
