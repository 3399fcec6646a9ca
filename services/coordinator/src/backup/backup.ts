/**
 * Backups: a consistent copy of the cluster's state at one etcd revision, written as a stream
 * in the signed, encrypted format of @keyshard/crypto's backup-file. Only what is already
 * encrypted or public goes in (wrapped KEKs and versions, the share manifest, metadata); live
 * state (ceremonies, replica registrations, locks, elections) does not.
 *
 * Invariants: every entry is read at the same revision (backup-store.ts: a page at a time, so
 * memory holds one page and one chunk whatever the number of keys); the root key is used only to derive the
 * backup's keys and is zeroized after; a backup's entries are checked with `EntryChecker`
 * (every KEK and key version unwraps) by `keyshard backup verify` and by every restore.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import {
  BackupOpener, BackupParser, BackupWriter, canonicalJson, manifestFingerprint, unwrapVersion, verifyRecordMac, writeBackupFile, zeroize, type BackupEntry, type BackupHeader,
} from '@keyshard/crypto';
import { KeyshardError, failedPrecondition, invalidArgument } from '@keyshard/errors';
import { clusterNamespace, connectEtcd, paths, type EtcdConfig } from '@keyshard/store';
import { BackupStore } from './backup-store.ts';
import { BlockWorker, etcdConfigInWorker, serveBlockWorker } from './block-worker.ts';
import type { Cluster } from '../cluster/cluster.ts';
import { unwrapKekRecord, unwrapRecordMacKeyRecord } from '../cluster/cluster-store.ts';
import type { Seal } from '../cluster/seal.ts';

export interface BackupProgress {
  done: number;
  total: number;
}

export interface BackupSource {
  store: BackupStore;
  /** How the backup's reader thread connects to etcd (its own client). */
  etcd: EtcdConfig;
  cluster: Cluster;
  seal: Seal;
  clusterName: string;
}

/**
 * Yields the backup file's bytes in blocks, with progress. Needs the seal open (the root key
 * derives the backup's keys). Throws FAILED_PRECONDITION on an uninitialized or sealed cluster.
 * The revision and entry count are read here; the pages are read, encrypted and signed in a
 * BlockWorker (block-worker.ts: a capped heap, off the serving thread).
 */
export async function* createBackup(src: BackupSource): AsyncGenerator<{ data: Buffer; progress: BackupProgress }> {
  src.cluster.requireInitialized();
  const root = await src.cluster.currentRoot(); // never a root rotated away through another replica
  let data: ReaderData;
  try {
    const { record, manifest } = src.cluster.requireInitialized();
    const revision = await src.store.revision();
    const total = await src.store.count(revision);
    const header = {
      cluster: src.clusterName,
      clusterId: record.clusterId,
      revision,
      createdAt: new Date().toISOString(),
      entries: total,
      manifest,
      manifestFingerprint: manifestFingerprint(manifest),
    };
    data = { root: new Uint8Array(root), header, etcd: src.etcd, clusterName: src.clusterName };
  } finally {
    zeroize(root);
  }
  const progress: BackupProgress = { done: 0, total: data.header.entries };
  const worker = new BlockWorker<number>(import.meta.url, data, 'backup', (done) => (progress.done = done));
  data.root.fill(0); // the worker has its own copy
  try {
    for await (const block of worker.received()) yield { data: block, progress };
    const read = await worker.result;
    if (read !== progress.total) throw new KeyshardError('INTERNAL', `backup read ${read} entries, expected ${progress.total}`);
  } finally {
    await worker.close();
  }
}

interface ReaderData {
  root: Uint8Array;
  header: BackupWriterHeader;
  etcd: EtcdConfig;
  clusterName: string;
}

type BackupWriterHeader = ConstructorParameters<typeof BackupWriter>[1];

/** The worker's side of createBackup: every entry at the header's revision, a page at a time. */
await serveBlockWorker<ReaderData>(import.meta.url, async (data, side) => {
  const root = Buffer.from(data.root.buffer, data.root.byteOffset, data.root.byteLength);
  let writer: BackupWriter;
  try {
    writer = new BackupWriter(root, data.header);
  } finally {
    zeroize(root);
  }
  const etcd = connectEtcd(etcdConfigInWorker(data.etcd));
  try {
    const store = new BackupStore(clusterNamespace(etcd, data.clusterName));
    let done = 0;
    await side.send(writer.start());
    for await (const e of store.entries(data.header.revision)) {
      done++;
      const block = writer.add(e.key, e.value);
      if (block) {
        side.progress(done);
        await side.send(block);
      }
    }
    side.progress(done);
    await side.send(writer.finish());
    side.end();
    return done;
  } finally {
    etcd.close();
  }
});

/**
 * Checks that a backup's entries are what a cluster can use: every KEK and the record MAC key
 * unwrap under the root, every key version under its KEK, every key record, usage record and alias passes its
 * record MAC (record-integrity.ts; the key sorts before them), every other entry is JSON.
 * Unwrapped material is zeroized at once.
 */
export class EntryChecker {
  #root: Buffer;
  #clusterId: string;
  #keks = new Map<number, Buffer>();
  #recordMacKey: Buffer | undefined;
  counts = { entries: 0, keks: 0, versions: 0, keys: 0 };

  constructor(root: Buffer, clusterId: string) {
    this.#root = root;
    this.#clusterId = clusterId;
  }

  check(e: BackupEntry): void {
    this.counts.entries++;
    // Names hold a bare key id; every other record is JSON.
    if (e.key.startsWith(paths.namesPrefix)) {
      if (!/^[\w-]{1,128}$/.test(e.value.toString('utf8'))) throw invalidArgument(`backup entry ${e.key} is not a key id`, { reason: 'INVALID_BACKUP' });
      return;
    }
    let body: { epoch?: number; kekEpoch?: number; wrapped?: string };
    try {
      body = JSON.parse(e.value.toString('utf8')) as typeof body;
    } catch {
      throw invalidArgument(`backup entry ${e.key} is not valid JSON`, { reason: 'INVALID_BACKUP' });
    }
    if ([paths.keysPrefix, paths.aliasesPrefix, paths.usagePrefix].some((p) => e.key.startsWith(p))) {
      if (!this.#recordMacKey) throw new KeyshardError('FAILED_PRECONDITION', `backup entry ${e.key} comes before the record MAC key (a backup made before record MACs cannot be restored)`, { reason: 'INVALID_BACKUP' });
      if (!verifyRecordMac(this.#recordMacKey, e.key, body).ok) throw new KeyshardError('FAILED_PRECONDITION', `backup entry ${e.key} failed its integrity check (altered outside keyshard?)`, { reason: 'INVALID_BACKUP' });
    }
    if (e.key === paths.recordMacKey) {
      zeroize(this.#recordMacKey);
      this.#recordMacKey = unwrapRecordMacKeyRecord(this.#root, this.#clusterId, { wrapped: body.wrapped ?? '' });
    } else if (e.key.startsWith(paths.keksPrefix)) {
      // The epoch its position names, not the one it states: the AAD binds the wrap to it.
      const epoch = Number(e.key.slice(paths.keksPrefix.length));
      this.#keks.set(epoch, unwrapKekRecord(this.#root, this.#clusterId, { epoch, wrapped: body.wrapped ?? '' }));
      this.counts.keks++;
    } else if (e.key.startsWith(paths.allVersionsPrefix)) {
      const [, keyId, v] = e.key.split('/');
      const kek = this.#keks.get(body.kekEpoch ?? -1);
      if (!kek) throw new KeyshardError('FAILED_PRECONDITION', `backup entry ${e.key} needs KEK epoch ${body.kekEpoch}, which the backup lacks`, { reason: 'INVALID_BACKUP' });
      zeroize(unwrapVersion(kek, this.#clusterId, keyId!, Number(v), Buffer.from(body.wrapped ?? '', 'base64')));
      this.counts.versions++;
    } else if (e.key.startsWith(paths.keysPrefix)) this.counts.keys++;
  }

  close(): void {
    zeroize(this.#recordMacKey, ...this.#keks.values());
    this.#recordMacKey = undefined;
    this.#keks.clear();
  }
}

/**
 * Reads a backup stream with the root key: yields each chunk's entries after checking them
 * (EntryChecker). Refuses a backup signed by another root, a modified chunk, a bad signature,
 * a cut file, or an entry count other than the header's. The header is passed to `onHeader`
 * first (it may refuse).
 */
export async function* openBackup(
  root: Buffer,
  bytes: AsyncIterable<Buffer>,
  onHeader: (h: BackupHeader) => void | Promise<void>,
): AsyncGenerator<{ header: BackupHeader; entries: BackupEntry[]; checker: EntryChecker }> {
  const parser = new BackupParser();
  let opener: BackupOpener | undefined;
  let checker: EntryChecker | undefined;
  let header: BackupHeader | undefined;
  try {
    for await (const data of bytes) {
      for (const part of parser.push(data)) {
        if (part.kind === 'header') {
          header = part.header;
          await onHeader(header);
          opener = new BackupOpener(root, header, part.aad);
          checker = new EntryChecker(root, header.clusterId);
        } else if (part.kind === 'frame') {
          const entries = opener!.open(part);
          for (const e of entries) checker!.check(e);
          yield { header: header!, entries, checker: checker! };
        } else if (!part.signatureValid) throw invalidArgument('the backup signature does not verify: the file was modified', { reason: 'INVALID_BACKUP' });
      }
    }
    parser.end();
    if (checker!.counts.entries !== header!.entries)
      throw invalidArgument(`the backup holds ${checker!.counts.entries} entries, its header says ${header!.entries}`, { reason: 'INVALID_BACKUP' });
    yield { header: header!, entries: [], checker: checker! };
  } finally {
    opener?.close();
    checker?.close();
  }
}

export interface ScheduledBackupOptions {
  dir: string;
  retain: number;
}

/**
 * Writes one backup into `dir` (a temporary name, fsync'ed, then renamed) and deletes all but
 * the newest `retain`. Returns the file written.
 */
export async function writeScheduledBackup(src: BackupSource, opts: ScheduledBackupOptions): Promise<{ file: string; entries: number }> {
  await mkdir(opts.dir, { recursive: true, mode: 0o700 });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = path.join(opts.dir, `keyshard-${src.clusterName}-${stamp}.ksbackup`);
  let entries = 0;
  await writeBackupFile(
    file,
    (async function* () {
      for await (const { data, progress } of createBackup(src)) {
        entries = progress.done;
        yield data;
      }
    })(),
  );
  const ours = (await readdir(opts.dir)).filter((f) => f.startsWith(`keyshard-${src.clusterName}-`) && f.endsWith('.ksbackup')).sort();
  for (const old of ours.slice(0, Math.max(0, ours.length - opts.retain))) await rm(path.join(opts.dir, old), { force: true });
  return { file, entries };
}

/** Identifies one backup: SHA-256 of its canonical header (what the recover ceremony binds). */
export function headerId(h: BackupHeader): string {
  return createHash('sha256').update(canonicalJson(h)).digest('hex');
}

/** The header check every restore makes before any custodian is asked. */
export function checkRestorable(header: BackupHeader, targetCluster: string, forceClusterId: boolean): void {
  if (header.cluster !== targetCluster && !forceClusterId)
    throw failedPrecondition(
      `the backup is of cluster ${header.cluster} (${header.clusterId}), this is cluster ${targetCluster}: pass --force-cluster-id to restore it here`,
      { reason: 'WRONG_CLUSTER' },
    );
  if (manifestFingerprint(header.manifest) !== header.manifestFingerprint) throw invalidArgument('not a valid keyshard backup: the manifest fingerprint does not match', { reason: 'INVALID_BACKUP' });
}
