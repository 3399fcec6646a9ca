/**
 * The data half of a restore and of `backup verify --against-cluster`: reads a backup file
 * with the root key, checks every chunk and entry (openBackup) and, for a restore that is not a
 * dry run, writes the entries under the restore's claim on the cluster record (transactions of
 * BATCH puts, IN_FLIGHT at a time). The cluster record itself is returned, not written: the
 * restore commits it last.
 *
 * It runs in a worker thread with a capped heap (`runBackupCheck`, block-worker.ts): any
 * number of keys is checked holding one chunk and one batch window at a time, off the serving
 * thread (a verify runs on a live cluster).
 */
import type { BackupHeader } from '@keyshard/crypto';
import { invalidArgument, failedPrecondition } from '@keyshard/errors';
import { clusterNamespace, connectEtcd, paths, type Etcd3, type EtcdConfig } from '@keyshard/store';
import { headerId, openBackup } from './backup.ts';
import { BackupStore } from './backup-store.ts';
import { BlockWorker, etcdConfigInWorker, serveBlockWorker } from './block-worker.ts';

/** Puts per etcd transaction (etcd's default limit is 128 operations) and transactions in flight. */
const BATCH = 100;
const IN_FLIGHT = 4;

export interface RestoreCounts {
  entries: number;
  keks: number;
  versions: number;
  keys: number;
}

export interface WriteTarget {
  store: BackupStore;
  /** The claim on the cluster record every write is conditional on (its exact JSON). */
  claim: string;
}

/** What the file must be: the backup the custodians approved (restore), or one of this cluster (verify). */
export interface Expected {
  headerId?: string;
  clusterId?: string;
}

export interface CheckResult {
  header: Pick<BackupHeader, 'cluster' | 'clusterId' | 'revision'>;
  counts: RestoreCounts;
  clusterRecord: Buffer | undefined;
}

/** Checks (and with a target writes) every entry of a backup that is what `expect` says. */
export async function checkAndWrite(
  root: Buffer,
  expect: Expected,
  bytes: AsyncIterable<Buffer>,
  target: WriteTarget | undefined,
  progress: (done: number) => void,
): Promise<CheckResult> {
  let clusterRecord: Buffer | undefined;
  let counts: RestoreCounts = { entries: 0, keks: 0, versions: 0, keys: 0 };
  let header: CheckResult['header'] | undefined;
  for await (const { entries, checker } of openBackup(root, bytes, (h) => {
    if (expect.headerId && headerId(h) !== expect.headerId) throw invalidArgument('the file sent is not the backup whose header the custodians approved', { reason: 'INVALID_BACKUP' });
    if (expect.clusterId && h.clusterId !== expect.clusterId) throw failedPrecondition(`the backup is of cluster ${h.clusterId}, this cluster is ${expect.clusterId}`, { reason: 'WRONG_CLUSTER' });
    header = { cluster: h.cluster, clusterId: h.clusterId, revision: h.revision };
  })) {
    counts = checker.counts;
    if (target) {
      const { store, claim } = target;
      const puts = entries.filter((e) => {
        if (e.key !== paths.cluster) return true;
        clusterRecord = Buffer.from(e.value);
        return false;
      });
      const batches: (typeof puts)[] = [];
      for (let i = 0; i < puts.length; i += BATCH) batches.push(puts.slice(i, i + BATCH));
      for (let i = 0; i < batches.length; i += IN_FLIGHT)
        await Promise.all(
          batches.slice(i, i + IN_FLIGHT).map(async (b) => {
            if (!(await store.write(claim, b))) throw failedPrecondition('the restore claim on the cluster record was lost');
          }),
        );
    }
    progress(counts.entries);
  }
  if (!header) throw invalidArgument('no backup was sent');
  return { header, counts: { ...counts }, clusterRecord };
}

interface WriterData {
  root: Uint8Array;
  expect: Expected;
  /** Absent on a dry run: nothing is written. */
  write?: { etcd: EtcdConfig; clusterName: string; claim: string };
}

type WriterResult = Omit<CheckResult, 'clusterRecord'> & { clusterRecord: Uint8Array | undefined };

/**
 * Runs `checkAndWrite` in a BlockWorker; `write` absent checks only. `root` is copied to the
 * worker (which zeroizes its copy); the caller keeps and zeroizes its own. Errors keep their code.
 */
export async function runBackupCheck(
  root: Buffer,
  expect: Expected,
  bytes: AsyncIterable<Buffer>,
  write: WriterData['write'],
  progress: (done: number) => void,
): Promise<CheckResult> {
  const data: WriterData = { root: new Uint8Array(root), expect, write };
  const worker = new BlockWorker<WriterResult>(import.meta.url, data, 'restore', progress);
  data.root.fill(0); // the worker has its own copy
  try {
    await Promise.all([worker.send(bytes), worker.result]);
    const r = await worker.result;
    return { ...r, clusterRecord: r.clusterRecord && Buffer.from(r.clusterRecord) };
  } finally {
    await worker.close();
  }
}

await serveBlockWorker<WriterData>(import.meta.url, async (data, side) => {
  const root = Buffer.from(data.root.buffer, data.root.byteOffset, data.root.byteLength);
  let etcd: Etcd3 | undefined;
  try {
    let target: WriteTarget | undefined;
    if (data.write) {
      etcd = connectEtcd(etcdConfigInWorker(data.write.etcd));
      target = { store: new BackupStore(clusterNamespace(etcd, data.write.clusterName)), claim: data.write.claim };
    }
    const r = await checkAndWrite(root, data.expect, side.received(), target, (done) => side.progress(done));
    return { ...r, clusterRecord: r.clusterRecord && new Uint8Array(r.clusterRecord) } satisfies WriterResult;
  } finally {
    root.fill(0);
    etcd?.close();
  }
});
