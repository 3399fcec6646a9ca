/**
 * The read side of the audit sink, for auditors (CLI, tests): checkpoints, cosigned checkpoints,
 * proofs, Query, Tail, HashValue (and the witnesses' AddCosignature, the one write). Needs a certificate whose CN is one of the sink's `readers`.
 * Proofs are returned verified: a reader never has to trust the sink's own arithmetic.
 */
import * as grpc from '@grpc/grpc-js';
import { AUDIT_SINK_ID, expectServer, keyshardProto, makeClient, requestMetadata, unaryCall, type pb, type TlsMaterial, type UnaryMethod, type UnaryRequest, type UnaryResponse } from '@keyshard/rpc';
import { fromCheckpointMsg, fromCosignedMsg, toCosignedMsg, verifyConsistency, verifyInclusion, type AuditEvent, type CosignedCheckpoint, type SignedCheckpoint } from '@keyshard/audit-log';

export interface StoredAuditEvent {
  index: number;
  event: AuditEvent;
}

export type QueryFilter = Pick<pb.QueryRequest, 'from_time' | 'to_time' | 'principal' | 'key_id' | 'operation' | 'result'>;

type Client = pb.AuditServiceClient;

function stored(e: pb.StoredEvent__Output): StoredAuditEvent {
  if (!e.event) throw new Error(`the sink sent stored event ${e.index} without its event`);
  return { index: e.index, event: e.event };
}

export class AuditReader {
  private readonly client: Client;

  /**
   * `channelOptions`: e.g. a short reconnect backoff for a long-lived reader that must notice the sink is back.
   * `serverId`: the sink's certificate CN (default `audit-sink`); any other server is refused.
   */
  constructor(opts: { address: string; tls: TlsMaterial; timeoutMs?: number; channelOptions?: grpc.ChannelOptions; serverId?: string }) {
    this.client = makeClient(keyshardProto().AuditService, opts.address, opts.tls, opts.channelOptions, expectServer('the audit sink', opts.serverId ?? AUDIT_SINK_ID));
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  private readonly timeoutMs: number;

  private call<M extends UnaryMethod<Client>>(method: M, req: UnaryRequest<Client, M>): Promise<UnaryResponse<Client, M>> {
    return unaryCall(this.client, method, req, { timeoutMs: this.timeoutMs });
  }

  async checkpoint(): Promise<SignedCheckpoint> {
    return fromCheckpointMsg(await this.call('GetCheckpoint', {}));
  }

  /** An inclusion proof for `index` in the tree of `treeSize` (default: current), checked before it is returned. */
  async inclusionProof(index: number, treeSize = 0): Promise<{ treeSize: number; leafHash: Buffer; rootHash: Buffer; path: Buffer[] }> {
    const r = await this.call('GetInclusionProof', { index, tree_size: treeSize });
    const size = r.tree_size;
    if (!verifyInclusion(index, size, r.leaf_hash, r.path, r.root_hash)) throw new Error(`the sink's inclusion proof for ${index} in ${size} does not verify`);
    return { treeSize: size, leafHash: r.leaf_hash, rootHash: r.root_hash, path: r.path };
  }

  /** PROOF(first, D[second]) as the sink computes it (RFC 6962 §2.1.2); check it with verifyConsistency. */
  async consistencyProof(first: number, second: number): Promise<Buffer[]> {
    return (await this.call('GetConsistencyProof', { first_size: first, second_size: second })).path;
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
      const page = await this.call('Query', { ...filter, page_size: opts.pageSize ?? 500, page_token: token });
      for (const e of page.events) {
        if (opts.limit !== undefined && n++ >= opts.limit) return;
        yield stored(e);
      }
      token = page.next_page_token;
    } while (token);
  }

  /** Stored events from `fromIndex`; with `follow`, new ones as they are stored until `signal` aborts. */
  async *tail(fromIndex: number, opts: { follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<StoredAuditEvent> {
    const stream = this.client.Tail({ from_index: fromIndex, follow: opts.follow ?? false }, requestMetadata());
    const abort = () => stream.cancel();
    opts.signal?.addEventListener('abort', abort, { once: true });
    try {
      for await (const e of stream as AsyncIterable<pb.StoredEvent__Output>) yield stored(e);
    } catch (e) {
      if ((e as grpc.ServiceError).code !== grpc.status.CANCELLED || !opts.signal?.aborted) throw e;
    } finally {
      opts.signal?.removeEventListener('abort', abort);
      stream.cancel();
    }
  }

  /** The latest cosigned checkpoint each witness published (not verified here: verifyCosignedCheckpoint with the trusted keys). */
  async cosignedCheckpoints(): Promise<CosignedCheckpoint[]> {
    return (await this.call('GetCosignedCheckpoints', {})).checkpoints.map(fromCosignedMsg);
  }

  /** A witness publishes its cosigned checkpoint (appender certificates only; the caller's own witness name). */
  async addCosignature(c: CosignedCheckpoint): Promise<void> {
    await this.call('AddCosignature', toCosignedMsg(c));
  }

  async hashValue(value: string): Promise<string> {
    return (await this.call('HashValue', { value })).hash;
  }

  close(): void {
    this.client.close();
  }
}
