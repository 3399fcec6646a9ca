/**
 * Diagnostics for test/bench/encrypt.ts: a PROTOTYPE of a pipelined audit client, to measure
 * a suggested change to @keyshard/audit-client without touching it. Same contract for callers
 * (record() resolves once the sink acknowledged the event durably; same event shape and sink
 * protocol), but instead of at most ONE Append batch in flight it keeps up to `maxInFlight`,
 * and it cuts a batch once per event-loop turn (setImmediate) so that the calls handled in one
 * turn share a batch. The sink acknowledges a stream's batches in order (it already allows 16
 * outstanding per stream) and group-commits concurrent appends in one fdatasync.
 *
 * Not production code: no per-event timeout (only a per-batch one) and no event validation.
 */
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { KeyshardError } from '@keyshard/errors';
import { keyshardProto, makeClient, type TlsMaterial } from '@keyshard/rpc';
import type { AuditEvent, AuditEventInput, AuditRecorder } from '@keyshard/audit-client';

interface Pending {
  event: AuditEvent;
  resolve: () => void;
  reject: (e: Error) => void;
}

type AppendStream = grpc.ClientDuplexStream<{ events: AuditEvent[]; batch: string }, { batch: string }>;

export class PipelinedAuditClient implements AuditRecorder {
  #client: grpc.Client;
  #stream: AppendStream | undefined;
  #queue: Pending[] = [];
  #inFlight: { batch: string; items: Pending[]; timer: NodeJS.Timeout }[] = [];
  #seq = 0;
  #scheduled = false;

  constructor(
    private readonly opts: {
      address: string;
      tls: TlsMaterial;
      source: string;
      maxInFlight: number;
      /** 'turn' (default): cut a batch once per event-loop turn; 'sync': pump inside record(), like AuditClient. */
      cut?: 'turn' | 'sync';
      maxBatch?: number;
      timeoutMs?: number;
    },
  ) {
    this.#client = makeClient(keyshardProto().AuditService, opts.address, opts.tls, {
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    });
  }

  /** Append batches sent so far. */
  get batches(): number {
    return this.#seq;
  }

  record(input: AuditEventInput): Promise<void> {
    const event: AuditEvent = {
      key_id: '',
      ceremony_id: '',
      code: '',
      request_id: '',
      ...input,
      id: input.id || randomUUID(),
      time: input.time || new Date().toISOString(),
      source: input.source || this.opts.source,
      details: { ...input.details },
    };
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ event, resolve, reject });
      if (this.opts.cut === 'sync') this.#pump();
      else if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => {
          this.#scheduled = false;
          this.#pump();
        });
      }
    });
  }

  #pump(): void {
    while (this.#inFlight.length < this.opts.maxInFlight && this.#queue.length > 0) {
      const stream = this.#stream ?? this.#connect();
      const items = this.#queue.splice(0, this.opts.maxBatch ?? 1000);
      const batch = String(++this.#seq);
      const timer = setTimeout(() => this.#fail(stream, new KeyshardError('UNAVAILABLE', 'audit batch not acknowledged')), this.opts.timeoutMs ?? 2000);
      this.#inFlight.push({ batch, items, timer });
      stream.write({ events: items.map((p) => p.event), batch });
    }
  }

  #connect(): AppendStream {
    const s = (this.#client as unknown as { Append(): AppendStream }).Append();
    this.#stream = s;
    s.on('data', (res: { batch: string }) => {
      if (this.#stream !== s) return;
      const f = this.#inFlight.shift();
      if (!f || f.batch !== res.batch) {
        this.#fail(s, new KeyshardError('UNAVAILABLE', `unexpected acknowledgement for batch ${res.batch}`));
        return;
      }
      clearTimeout(f.timer);
      for (const p of f.items) p.resolve();
      this.#pump();
    });
    s.on('error', (e: grpc.ServiceError) => this.#fail(s, new KeyshardError('UNAVAILABLE', `audit sink: ${e.details || e.message}`)));
    s.on('end', () => this.#fail(s, new KeyshardError('UNAVAILABLE', 'stream ended by the sink')));
    return s;
  }

  #fail(s: AppendStream, err: Error): void {
    if (this.#stream !== s) return;
    this.#stream = undefined;
    s.cancel();
    for (const f of this.#inFlight.splice(0)) {
      clearTimeout(f.timer);
      for (const p of f.items) p.reject(err);
    }
    for (const p of this.#queue.splice(0)) p.reject(err);
  }

  async close(): Promise<void> {
    while (this.#inFlight.length > 0 || this.#queue.length > 0) await new Promise((r) => setTimeout(r, 10));
    this.#stream?.end();
    this.#client.close();
  }
}
