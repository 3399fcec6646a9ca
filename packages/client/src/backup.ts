/**
 * BackupService client: backup, verify and restore are long streams to ONE coordinator replica
 * (a restore's ceremony and its file must reach the same replica), so this client takes one
 * address and never retries: a broken stream is reported and the operator runs it again.
 * Calls reject with a KeyshardError (errors.ts), as every SDK call does.
 */
import { once } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import { keyshardProto, makeClient, requestMetadata, type pb, type TlsFiles, type TlsMaterial } from '@keyshard/rpc';
import { coordinatorIdentity, tlsMaterial } from './connection.ts';
import { toKeyshardError } from './errors.ts';
import type { BackupChunk, BackupSummary, RestoreProgress } from './types.ts';

export type { BackupChunk, BackupSummary, RestoreProgress };

/** Writes to a client stream, waiting for drain when grpc-js asks for it. */
async function writeAll(call: grpc.ClientWritableStream<{ data: Buffer }>, chunks: AsyncIterable<Buffer>): Promise<void> {
  for await (const data of chunks) if (!call.write({ data })) await once(call, 'drain');
}

export class BackupClient {
  #client: pb.BackupServiceClient;

  /** `coordinatorIds`: as ClientOptions.coordinatorIds (the server is pinned to a coordinator identity). */
  constructor(opts: { address: string; tls: TlsMaterial | TlsFiles; coordinatorIds?: readonly string[] }) {
    const tls = tlsMaterial(opts.tls);
    // Backup files stream in chunks well under the default limits; keepalive holds a restore's wait for approvals.
    this.#client = makeClient(keyshardProto().BackupService, opts.address, tls, { 'grpc.keepalive_time_ms': 30_000 }, coordinatorIdentity(opts.coordinatorIds));
  }

  /** The backup file's bytes as they come, with progress. */
  async *createBackup(): AsyncGenerator<BackupChunk> {
    const call = this.#client.CreateBackup({}, requestMetadata());
    try {
      for await (const chunk of call as AsyncIterable<BackupChunk>) yield chunk;
    } catch (e) {
      throw toKeyshardError(e);
    } finally {
      call.cancel();
    }
  }

  /** Sends a backup file to an unsealed coordinator, which checks every entry against its root. */
  verifyBackup(file: AsyncIterable<Buffer>): Promise<BackupSummary> {
    return new Promise((resolve, reject) => {
      const call = this.#client.VerifyBackup(requestMetadata(), (err, res) => (err ? reject(toKeyshardError(err)) : resolve(res!)));
      writeAll(call, file).then(() => call.end(), (e: Error) => {
        call.cancel();
        reject(e);
      });
    });
  }

  /**
   * Restores into a fresh cluster: sends the header, reports the recover ceremony's progress
   * until the quorum approves, then streams `file()` (the whole file) and reports writing.
   */
  async restore(
    header: Buffer,
    file: () => AsyncIterable<Buffer>,
    options: { dryRun?: boolean; forceClusterId?: boolean; ttlSeconds?: number },
    onProgress: (p: RestoreProgress) => void,
  ): Promise<BackupSummary> {
    const call = this.#client.Restore(requestMetadata());
    call.write({ options: { dry_run: Boolean(options.dryRun), force_cluster_id: Boolean(options.forceClusterId), ttl_seconds: options.ttlSeconds ?? 0 }, data: header });
    let summary: BackupSummary | undefined;
    let sending: Promise<void> | undefined;
    try {
      for await (const p of call as AsyncIterable<RestoreProgress>) {
        onProgress(p);
        if (p.phase === 'send' && !sending) sending = writeAll(call, file()).then(() => void call.end());
        if (p.phase === 'done') summary = p.summary ?? undefined;
      }
      await sending;
    } catch (e) {
      throw toKeyshardError(e);
    } finally {
      call.cancel();
    }
    if (!summary) throw new Error('the restore stream ended without a summary');
    return summary;
  }

  close(): void {
    this.#client.close();
  }
}
