/**
 * Thin gRPC handlers for BackupService (streams): decode, call backup.ts / restore.ts, encode.
 * Authentication, the admin-only rule, audit intent and outcome come from `unaryService`.
 */
import { once } from 'node:events';
import { invalidArgument, failedPrecondition } from '@keyshard/errors';
import { isUndecodable, type pb, type ServiceHandlers } from '@keyshard/rpc';
import { zeroize } from '@keyshard/crypto';
import type * as grpc from '@grpc/grpc-js';
import { createBackup, type BackupSource } from '../backup/backup.ts';
import { runBackupCheck } from '../backup/restore-writer.ts';
import { readHeader, type Restores, type RestoreEvent, type RestoreSummary } from '../backup/restore.ts';

/**
 * The messages of a call's read side. Not `for await (… of call)`: a stream's default iterator
 * destroys the stream when the reading ends, and with it the call's write side (the replies).
 */
const messagesOf = <Req>(call: grpc.ServerReadableStream<Req, unknown> | grpc.ServerDuplexStream<Req, unknown>) =>
  call.iterator({ destroyOnReturn: false }) as AsyncIterableIterator<Req>;

/** The `data` of each message of a client stream, refusing undecodable ones. */
async function* dataOf(messages: AsyncIterable<{ data: Buffer }>): AsyncGenerator<Buffer> {
  for await (const m of messages) {
    if (isUndecodable(m)) throw invalidArgument('a message of the stream is not valid');
    if (m.data.length) yield m.data;
  }
}

function summaryMessage(s: Omit<RestoreSummary, 'unsealed' | 'dryRun' | 'cluster'> & Partial<RestoreSummary>): pb.BackupSummary {
  return {
    cluster: s.cluster ?? '',
    cluster_id: s.clusterId,
    revision: s.revision,
    entries: s.entries,
    keys: s.keys,
    key_versions: s.versions,
    keks: s.keks,
    dry_run: s.dryRun ?? false,
    unsealed: s.unsealed ?? false,
  };
}

/**
 * Waits until `call` takes more data. A stream the client cancelled is destroyed and never
 * drains: then this throws, so the backup (and its worker) stops rather than waiting for ever.
 */
export async function drained(call: grpc.ServerWritableStream<unknown, unknown>): Promise<void> {
  const gone = new AbortController();
  const abort = () => gone.abort();
  call.once('cancelled', abort).once('close', abort);
  try {
    if (call.cancelled || call.destroyed) abort();
    await once(call, 'drain', { signal: gone.signal });
  } catch {
    throw failedPrecondition('the client cancelled the backup', { reason: 'CANCELLED' });
  } finally {
    call.off('cancelled', abort).off('close', abort);
  }
}

export function backupHandlers(src: BackupSource, restores: Restores): ServiceHandlers<'BackupService'> {
  return {
    async CreateBackup(call, ctx) {
      let last = { done: 0, total: 0 };
      for await (const { data, progress } of createBackup(src)) {
        if (call.cancelled) throw failedPrecondition('the client cancelled the backup', { reason: 'CANCELLED' });
        last = progress;
        if (!call.write({ data, entries_done: progress.done, entries_total: progress.total })) await drained(call);
      }
      ctx.facts.details = { entries: String(last.done) };
    },

    async VerifyBackup(call, ctx) {
      const { record } = src.cluster.requireInitialized();
      const root = await src.cluster.currentRoot();
      try {
        const { header, counts } = await runBackupCheck(root, { clusterId: record.clusterId }, dataOf(messagesOf(call)), undefined, () => {});
        const summary = summaryMessage({ ...header, ...counts });
        ctx.facts.details = { revision: String(summary.revision), entries: String(summary.entries) };
        return summary;
      } finally {
        zeroize(root);
      }
    },

    async Restore(call, ctx) {
      const messages = messagesOf(call);
      const first = await messages.next();
      if (first.done || isUndecodable(first.value) || !first.value.data.length) throw invalidArgument('the first message must carry the options and the backup header');
      const header = readHeader(first.value.data);
      const o: Partial<pb.RestoreOptions__Output> = first.value.options ?? {};
      ctx.facts.details = { backup_cluster_id: header.clusterId, revision: header.revision, dry_run: String(Boolean(o.dry_run)) };
      const rest = { [Symbol.asyncIterator]: () => messages };
      const emit = (e: RestoreEvent) => {
        if (e.phase === 'ceremony') {
          ctx.facts.ceremonyId = e.ceremony.id;
          call.write({ phase: e.phase, ceremony: e.ceremony });
        } else if (e.phase === 'writing') call.write({ phase: e.phase, entries_done: e.done, entries_total: e.total });
        else call.write({ phase: e.phase });
      };
      const summary = await restores.run(
        header,
        { dryRun: Boolean(o.dry_run), forceClusterId: Boolean(o.force_cluster_id), ttlSeconds: o.ttl_seconds || undefined },
        ctx.principal,
        () => dataOf(rest),
        emit,
        () => call.cancelled,
      );
      call.write({ phase: 'done', summary: summaryMessage(summary) });
    },
  };
}
