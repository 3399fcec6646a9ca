/**
 * Test-only: an in-process fake audit sink — a real grpc server implementing AuditService.Append
 * over mutual TLS with whatever certificate it is given — that keeps an RFC 6962 tree of what
 * it was sent and signs real checkpoints, so an honest fake passes the AuditClient's checks.
 * `lie` makes it misbehave the ways a compromised sink would (bad signature, rolled-back or
 * forked tree, missing consistency proof) to test that producers refuse it. Exported as
 * `@keyshard/audit-client/testing`, never from the package index.
 */
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { KeyshardError } from '@keyshard/errors';
import { keyshardProto, serverCredentials, toServiceError, type pb, type TlsMaterial } from '@keyshard/rpc';
import { MerkleTree, keyIdOf, leafHash, signCheckpoint, toCheckpointMsg, type AuditEvent } from '@keyshard/audit-log';

export type Lie = 'none' | 'bad-signature' | 'other-key' | 'rollback' | 'fork' | 'no-proof' | 'silent' | 'fail' | 'quota';

export class FakeAuditSink {
  lie: Lie = 'none';
  delayMs = 5;
  batches: number[] = [];
  events: AuditEvent[] = [];
  streams = 0;
  inFlight = 0;
  maxInFlight = 0;
  /** Batches acknowledged, and the known_tree_size each one came with. */
  knownSizes: number[] = [];
  readonly server = new grpc.Server();
  readonly tree = new MerkleTree();
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly keyId: string;
  readonly #otherKey = generateKeyPairSync('ed25519').privateKey;
  #address = '';

  /** `signingKey`: sign with this key (e.g. the real sink's, stolen) instead of a fresh one. */
  constructor(opts: { signingKey?: KeyObject } = {}) {
    if (opts.signingKey) {
      this.privateKey = opts.signingKey;
      this.publicKey = createPublicKey(opts.signingKey);
    } else {
      ({ privateKey: this.privateKey, publicKey: this.publicKey } = generateKeyPairSync('ed25519'));
    }
    this.keyId = keyIdOf(this.publicKey);
    const implementation: Pick<pb.AuditServiceHandlers, 'Append'> = {
      Append: (call) => {
        this.streams += 1;
        call.on('data', (req) => this.#onBatch(call, req));
        call.on('end', () => call.end());
        call.on('error', () => {});
      },
    };
    this.server.addService(keyshardProto().AuditService.service, implementation);
  }

  /** The sink's public keys by id, as a producer is configured with them. */
  get keys(): Map<string, KeyObject> {
    return new Map([[this.keyId, this.publicKey]]);
  }

  get address(): string {
    return this.#address;
  }

  /** Listens with `tls` (any certificate: the test decides whom the fake pretends to be) on `address`. */
  async listen(tls: TlsMaterial, address = '127.0.0.1:0'): Promise<string> {
    const port = await new Promise<number>((res, rej) => this.server.bindAsync(address, serverCredentials(tls), (e, p) => (e ? rej(e) : res(p))));
    this.#address = `127.0.0.1:${port}`;
    return this.#address;
  }

  close(): void {
    this.server.forceShutdown();
  }

  #onBatch(call: grpc.ServerDuplexStream<pb.AppendRequest__Output, pb.AppendResponse>, req: pb.AppendRequest__Output): void {
    if (this.lie === 'fail') {
      call.emit('error', { code: grpc.status.INTERNAL, details: 'disk on fire' });
      return;
    }
    if (this.lie === 'quota') {
      // As the real sink refuses a producer over its quota (services/audit-sink quota.ts).
      call.emit('error', toServiceError(new KeyshardError('RESOURCE_EXHAUSTED', 'coordinator-1: over the audit quota', { reason: 'AUDIT_QUOTA' })));
      return;
    }
    if (this.lie === 'silent') return;
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    this.batches.push(req.events.length);
    this.events.push(...req.events);
    const first = this.tree.size;
    for (const e of req.events) this.tree.appendLeafHash(leafHash(JSON.stringify(e)));
    const known = req.known_tree_size;
    this.knownSizes.push(known);
    setTimeout(() => {
      this.inFlight -= 1;
      call.write(this.#ack(req.batch, first, req.events.length, known));
    }, this.delayMs);
  }

  #ack(batch: number, first: number, count: number, known: number): pb.AppendResponse {
    let size = this.tree.size;
    let root = this.tree.root();
    let key = this.privateKey;
    let keyId = this.keyId;
    let proof = known > 0 && known < size ? this.tree.consistencyProof(known, size) : [];
    if (this.lie === 'rollback') {
      // Signs an older, smaller tree (as a sink restored from an old copy would), still covering nothing new.
      size = Math.max(0, known - 1);
      root = this.tree.root(size);
      first = 0;
      count = 0;
      proof = [];
    } else if (this.lie === 'fork') {
      // Another history of the same length: the root of a tree whose first leaf differs.
      const other = new MerkleTree();
      other.appendLeafHash(leafHash('forged'));
      for (let i = 1; i < size; i++) other.appendLeafHash(this.tree.leaf(i));
      root = other.root();
      proof = known > 0 && known < size ? other.consistencyProof(known, size) : [];
    } else if (this.lie === 'no-proof') {
      proof = [];
    } else if (this.lie === 'other-key') {
      // Its own key, labelled as such: a server holding the sink's TLS key but not its checkpoint key.
      key = this.#otherKey;
      keyId = keyIdOf(createPublicKey(this.#otherKey));
    }
    const cp = signCheckpoint(key, keyId, size, root);
    if (this.lie === 'bad-signature') cp.signature = Buffer.alloc(64, 7).toString('base64');
    return { batch, first_index: first, count, head_hash: cp.root_hash, tree_size: size, checkpoint: toCheckpointMsg(cp), consistency_proof: proof };
  }
}
