/** backup create / verify and restore: disaster recovery from the CLI (admin identity). */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import type { Command } from 'commander';
import { BackupClient, ceremonyState, type RestoreProgress } from '@keyshard/client';
import { BackupParser, writeBackupFile, type BackupHeader } from '@keyshard/crypto';
import { coordinatorIdsFrom, tlsFrom, type ConnectionFlags } from '../connection.ts';
import { printJson, progress, progressBar, UsageError, type ProgressBar } from '../output.ts';
import { ceremonyReporter, tally } from '../ceremony-progress.ts';
import { ceremonyTtl } from '../parse.ts';

/** Backups and restores talk to one replica: the first of --addr / KEYSHARD_ADDR. */
function backupClient(f: ConnectionFlags): BackupClient {
  const addr = (f.addr ?? process.env.KEYSHARD_ADDR ?? '').split(',')[0]?.trim();
  if (!addr) throw new UsageError('addr is not set: pass --addr or set KEYSHARD_ADDR');
  return new BackupClient({ address: addr, tls: tlsFrom(f), coordinatorIds: coordinatorIdsFrom(f) });
}

async function withBackupClient<T>(program: { opts(): ConnectionFlags }, fn: (c: BackupClient) => Promise<T>): Promise<T> {
  const c = backupClient(program.opts());
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** A bar driven by absolute counts (the server reports how far it got). */
function absoluteBar(label: string) {
  let bar: ProgressBar | undefined;
  let shown = 0;
  return {
    update(done: number, total: number) {
      bar ??= progressBar(label, total);
      if (done > shown) bar.tick(done - shown);
      shown = done;
    },
    done(summary: string) {
      if (bar) bar.done(summary);
      else process.stderr.write(`${summary}\n`);
    },
  };
}

/** The file's bytes up to and including its header, and the header. */
async function readHeader(file: string): Promise<{ bytes: Buffer; header: BackupHeader }> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(12);
    await fh.read(head, 0, 12, 0);
    const n = head.readUInt32BE(8);
    if (n > 1 << 20) throw new UsageError(`${file} is not a keyshard backup`);
    const bytes = Buffer.alloc(12 + n);
    await fh.read(bytes, 0, bytes.length, 0);
    const parser = new BackupParser();
    for (const part of parser.push(bytes)) if (part.kind === 'header') return { bytes, header: part.header };
    throw new UsageError(`${file} is not a keyshard backup`);
  } finally {
    await fh.close();
  }
}

const fileChunks = (file: string) => createReadStream(file, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>;

function describe(h: BackupHeader): string {
  const signer = createHash('sha256').update(Buffer.from(h.signer, 'base64')).digest('hex').slice(0, 16);
  return [
    `cluster ${h.cluster} (${h.clusterId}), etcd revision ${h.revision}, taken ${h.createdAt}`,
    `${h.entries} entries; share manifest ${h.manifestFingerprint.slice(0, 16)}… (${h.manifest.threshold} of ${h.manifest.custodians.map((c) => c.id).join(', ')}); signer ${signer}`,
  ].join('\n');
}

/** Offline: structure and signature, streaming through the file. Throws on any defect. */
async function verifyOffline(file: string): Promise<BackupHeader> {
  const parser = new BackupParser();
  let frames = 0;
  let signed = false;
  for await (const data of fileChunks(file))
    for (const part of parser.push(data)) {
      if (part.kind === 'frame') frames++;
      if (part.kind === 'end') signed = part.signatureValid;
    }
  parser.end();
  if (!signed) throw new Error(`${file}: the signature does not verify: the file was modified`);
  process.stderr.write(`structure ok (${frames} chunks), signature ok\n`);
  return parser.header!;
}

/** The recover ceremony's line; refusals and denials are printed once each, as they arrive (ceremonyReporter). */
const recoverLine = (c: NonNullable<RestoreProgress['ceremony']>): string =>
  `recover ceremony ${c.id} ${ceremonyState(c)}: ${tally(c)} shares${c.approved_by.length ? ` (${c.approved_by.join(', ')})` : ''}`;

/** The header as JSON (--json): what the file is a backup of. */
const headerJson = (h: BackupHeader) => ({
  cluster: h.cluster, cluster_id: h.clusterId, revision: h.revision, created_at: h.createdAt, entries: h.entries,
  manifest_fingerprint: h.manifestFingerprint, threshold: h.manifest.threshold, custodians: h.manifest.custodians.map((c) => c.id),
});

export function registerBackup(program: Command): void {
  const backup = program.command('backup').description('encrypted, signed backups of the whole cluster');
  backup
    .command('create')
    .description('stream a backup of the cluster (one consistent etcd revision) to a file')
    .requiredOption('--out <file>', 'where to write it (written to a fresh temporary file beside it, then renamed)')
    .option('--json', 'print JSON: what the backup holds')
    .action(async (opts: { out: string; json?: boolean }) => {
      await withBackupClient(program, async (client) => {
        const bar = absoluteBar('backing up');
        await writeBackupFile(
          opts.out,
          (async function* () {
            for await (const chunk of client.createBackup()) {
              bar.update(Number(chunk.entries_done), Number(chunk.entries_total));
              yield chunk.data;
            }
          })(),
        );
        bar.done(`backup written to ${opts.out}`);
        const { header } = await readHeader(opts.out);
        if (opts.json) printJson({ file: opts.out, ...headerJson(header) });
        else process.stdout.write(`${describe(header)}\n`);
      });
    });
  backup
    .command('verify <file>')
    .description('check a backup: offline its structure and signature; with --against-cluster also that every entry decrypts under the cluster\'s root')
    .option('--against-cluster', 'also send it to an unsealed coordinator of the same root')
    .option('--json', 'print JSON')
    .action(async (file: string, opts: { againstCluster?: boolean; json?: boolean }) => {
      const header = await verifyOffline(file);
      if (!opts.json) process.stdout.write(`${describe(header)}\n`);
      const s = opts.againstCluster ? await withBackupClient(program, (client) => client.verifyBackup(fileChunks(file))) : undefined;
      if (opts.json) return printJson({ ...headerJson(header), signature_valid: true, ...(s ? { against_cluster: s } : {}) });
      if (s) process.stdout.write(`every entry decrypts: ${s.keks} KEKs, ${s.keys} keys, ${s.key_versions} key versions (${s.entries} entries)\n`);
    });
  program
    .command('restore <file>')
    .description('restore a backup into a fresh, uninitialized cluster; a quorum of the backup\'s custodians approves a recover ceremony')
    .option('--dry-run', 'check everything (quorum, signature, every entry) and write nothing')
    .option('--force-cluster-id', 'restore a backup taken from a cluster of another name')
    .option('--ttl <duration>', 'how long custodians have to approve (e.g. 15m)', ceremonyTtl)
    .option('--json', 'print JSON: what was restored (or checked)')
    .action(async (file: string, opts: { dryRun?: boolean; forceClusterId?: boolean; ttl?: number; json?: boolean }) => {
      const { bytes, header } = await readHeader(file);
      process.stderr.write(`restoring ${file}${opts.dryRun ? ' (dry run: nothing is written)' : ''}\n${describe(header)}\n`);
      await withBackupClient(program, async (client) => {
        const bar = absoluteBar(opts.dryRun ? 'checking' : 'restoring');
        const report = ceremonyReporter(recoverLine);
        const summary = await client.restore(bytes, () => fileChunks(file), { dryRun: opts.dryRun, forceClusterId: opts.forceClusterId, ttlSeconds: opts.ttl }, (p) => {
          if (p.phase === 'ceremony' && p.ceremony) report(p.ceremony);
          else if (p.phase === 'send') progress('quorum reached; the root key checks out against the backup: sending the file');
          else if (p.phase === 'writing') bar.update(Number(p.entries_done), Number(p.entries_total));
        });
        bar.done(
          summary.dry_run
            ? `dry run ok: ${summary.entries} entries (${summary.keys} keys, ${summary.key_versions} versions, ${summary.keks} KEKs) check out; nothing was written`
            : `restored cluster ${summary.cluster_id} at revision ${summary.revision}: ${summary.keys} keys, ${summary.key_versions} versions; this coordinator is ${summary.unsealed ? 'unsealed' : 'sealed'}`,
        );
        if (opts.json) printJson(summary);
      });
    });
}
