/**
 * The read side of the audit sink, for auditors (CLI, tests): checkpoints, proofs, Query,
 * Tail, HashValue. Needs a certificate whose CN is one of the sink's `readers`.
 * Proofs are returned verified: a reader never has to trust the sink's own arithmetic.
 */
import * as grpc from '@grpc/grpc-js';
import { AUDIT_SINK_ID, expectServer, keyshardProto, makeClient, requestMetadata, unaryCall, type TlsMaterial } from '@keyshard/rpc';
import { fromCheckpointMsg, verifyConsistency, verifyInclusion, type AuditEvent, type CheckpointMsg, type SignedCheckpoint } from '@keyshard/audit-log';

export interface StoredAuditEvent {
  index: number;
  event: AuditEvent;
}

export interface QueryFilter {
  from_time?: string;
  to_time?: string;
  principal?: string;
  key_id?: string;
  operation?: string;
  result?: string;
}

interface StoredEventMsg {
  index: string;
  event: AuditEvent;
}

export class AuditReader {
  private readonly client: grpc.Client;

  /**
   * `channelOptions`: e.g. a short reconnect backoff for a long-lived reader that must notice the sink is back.
   * `serverId`: the sink's certificate CN (default `audit-sink`); any other server is refused.
   */
  constructor(opts: { address: string; tls: TlsMaterial; timeoutMs?: number; channelOptions?: grpc.ChannelOptions; serverId?: string }) {
    this.client = makeClient(keyshardProto().AuditService, opts.address, opts.tls, opts.channelOptions, expectServer('the audit sink', opts.serverId ?? AUDIT_SINK_ID));
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  private readonly timeoutMs: number;

  private call<T>(method: string, req: unknown): Promise<T> {
    return unaryCall<T>(this.client, method, req, { timeoutMs: this.timeoutMs });
  }

  async checkpoint(): Promise<SignedCheckpoint> {
    return fromCheckpointMsg(await this.call<CheckpointMsg>('GetCheckpoint', {}));
  }

  /** An inclusion proof for `index` in the tree of `treeSize` (default: current), checked before it is returned. */
  async inclusionProof(index: number, treeSize = 0): Promise<{ treeSize: number; leafHash: Buffer; rootHash: Buffer; path: Buffer[] }> {
    const r = await this.call<{ tree_size: string; leaf_hash: Buffer; root_hash: Buffer; path: Buffer[] }>('GetInclusionProof', { index, tree_size: treeSize });
    const size = Number(r.tree_size);
    if (!verifyInclusion(index, size, r.leaf_hash, r.path, r.root_hash)) throw new Error(`the sink's inclusion proof for ${index} in ${size} does not verify`);
    return { treeSize: size, leafHash: r.leaf_hash, rootHash: r.root_hash, path: r.path };
  }

  /** PROOF(first, D[second]) as the sink computes it (RFC 6962 §2.1.2); check it with verifyConsistency. */
  async consistencyProof(first: number, second: number): Promise<Buffer[]> {
    return (await this.call<{ path: Buffer[] }>('GetConsistencyProof', { first_size: first, second_size: second })).path;
  }

  /** Checks that checkpoint `later` extends `earlier` (RFC 9162 §2.1.4.2) with a proof from the sink. */
  async checkConsistency(earlier: SignedCheckpoint, later: SignedCheckpoint): Promise<boolean> {
    const proof = await this.consistencyProof(earlier.tree_size, later.tree_size);
    return verifyConsistency(earlier.tree_size, later.tree_size, Buffer.from(earlier.root_hash, 'hex'), Buffer.from(later.root_hash, 'hex'), proof);
  }

  /** Every matching event, page by page (at most `limit`). */
  async *query(filter: QueryFilter, opts: { limit?: number; pageSize?: number } = {}): AsyncGenerator<StoredAuditEvent> {
    let token = '';
    let n = 0;
    do {
      const page = await this.call<{ events: StoredEventMsg[]; next_page_token: string }>('Query', { ...filter, page_size: opts.pageSize ?? 500, page_token: token });
      for (const e of page.events) {
        if (opts.limit !== undefined && n++ >= opts.limit) return;
        yield { index: Number(e.index), event: e.event };
      }
      token = page.next_page_token;
    } while (token);
  }

  /** Stored events from `fromIndex`; with `follow`, new ones as they are stored until `signal` aborts. */
  async *tail(fromIndex: number, opts: { follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<StoredAuditEvent> {
    const stream = (this.client as unknown as { Tail(req: unknown, md: grpc.Metadata): grpc.ClientReadableStream<StoredEventMsg> }).Tail(
      { from_index: fromIndex, follow: opts.follow ?? false },
      requestMetadata(),
    );
    const abort = () => stream.cancel();
    opts.signal?.addEventListener('abort', abort, { once: true });
    try {
      for await (const e of stream as AsyncIterable<StoredEventMsg>) yield { index: Number(e.index), event: e.event };
    } catch (e) {
      if ((e as grpc.ServiceError).code !== grpc.status.CANCELLED || !opts.signal?.aborted) throw e;
    } finally {
      opts.signal?.removeEventListener('abort', abort);
      stream.cancel();
    }
  }

  async hashValue(value: string): Promise<string> {
    return (await this.call<{ hash: string }>('HashValue', { value })).hash;
  }

  close(): void {
    this.client.close();
  }
}
