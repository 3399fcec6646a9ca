/**
 * AuditService handlers: thin adapters between gRPC and the AuditLog. Authorization is by
 * certificate CN: `appenders` may Append (and GetCheckpoint), `readers` may read everything.
 * Events are normalized (event.ts) and their sensitive values replaced by HMACs
 * (@keyshard/audit-log sensitive.ts) before they are hashed and stored.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '@keyshard/config';
import type { Histogram } from '@keyshard/metrics';
import { KeyshardError, invalidArgument, permissionDenied } from '@keyshard/errors';
import { ALERT_OPERATION, toCheckpointMsg, type SensitiveFields } from '@keyshard/audit-log';
import { contextOf, keyshardProto, toServiceError, unaryService, type CallOutcome } from '@keyshard/rpc';
import type { AuditLog } from './audit-log.ts';
import { normalizeEvent, type RawEvent } from './event.ts';
import { queryLog, type QueryRequestMsg } from './query.ts';

interface AppendRequestMsg {
  events?: RawEvent[];
  batch?: string;
  known_tree_size?: string;
}

type Who = { principal: string; requestId: string; method: string };

export interface AuditServiceOptions {
  appenders: readonly string[];
  readers: readonly string[];
  sensitive: SensitiveFields;
  logger: Logger;
  /** Observes each Append batch's seconds from arrival to durability. */
  appendBatchSeconds?: Histogram;
}

const MAX_OUTSTANDING = 16; // unacknowledged batches per stream before we stop reading it
const MAX_HASH_INPUT = 4096;

/** A uint64 request field (a string under our loader options); 0 or absent means `dflt`. */
function sizeField(v: unknown, name: string, dflt: number): number {
  const n = Number(v ?? 0);
  if (!Number.isSafeInteger(n) || n < 0) throw invalidArgument(`${name} is out of range`);
  return n === 0 ? dflt : n;
}

export interface AuditServiceHandle {
  implementation: grpc.UntypedServiceImplementation;
  /** Stops taking new batches, acknowledges those already taken, then ends every stream. */
  drain(): Promise<void>;
}

export function createAuditService(log: AuditLog, opts: AuditServiceOptions): AuditServiceHandle {
  const appenders = new Set(opts.appenders);
  const readers = new Set(opts.readers);
  const logger = opts.logger;
  const streams = new Set<{ settled: () => Promise<void>; end: () => void }>();
  const tails = new Set<AbortController>();
  let draining = false;

  // Calls are logged, not audited: the sink does not audit itself into its own log.
  const logCall = (ctx: Who, e: unknown, started: number) => {
    const code = e === undefined ? 'OK' : e instanceof KeyshardError ? e.code : 'INTERNAL';
    const entry = { method: ctx.method, principal: ctx.principal, request_id: ctx.requestId, code, ms: Math.round(performance.now() - started) };
    if (e === undefined) logger.debug(entry, 'call');
    else if (code === 'INTERNAL') logger.error({ ...entry, err: e }, 'call failed');
    else logger.warn({ ...entry, reason: (e as Error).message }, 'call refused');
  };
  const observe = (o: CallOutcome) => logCall(o.ctx, o.error, performance.now() - o.durationMs);

  const { Append: _a, Tail: _t, ...unaryDefs } = keyshardProto().AuditService.service;
  const unary = unaryService(
    unaryDefs,
    {
      GetCheckpoint: async () => toCheckpointMsg(await log.freshCheckpoint()),
      GetInclusionProof: async (req: { index?: string; tree_size?: string }) => {
        const size = sizeField(req.tree_size, 'tree_size', log.size);
        const index = sizeField(req.index, 'index', 0);
        const path = log.inclusionProof(index, size);
        return { index: String(index), tree_size: String(size), path, leaf_hash: log.leafAt(index), root_hash: log.rootAt(size) };
      },
      GetConsistencyProof: async (req: { first_size?: string; second_size?: string }) => {
        const second = sizeField(req.second_size, 'second_size', log.size);
        const first = sizeField(req.first_size, 'first_size', 0);
        return { path: log.consistencyProof(first, second), first_size: String(first), second_size: String(second) };
      },
      Query: (req: QueryRequestMsg) => queryLog(log, req),
      HashValue: async (req: { value?: string }) => {
        const value = req.value ?? '';
        if (value.length > MAX_HASH_INPUT) throw invalidArgument(`value is longer than ${MAX_HASH_INPUT} characters`);
        return { hash: opts.sensitive.hash(value) };
      },
    },
    {
      name: 'audit',
      observer: observe,
      authorize: (ctx) => {
        const p = ctx.principal;
        const ok = ctx.method === 'audit.GetCheckpoint' ? readers.has(p) || appenders.has(p) : readers.has(p);
        if (!ok) throw permissionDenied(`${p} may not call ${ctx.method}`);
      },
    },
  );

  function Append(call: grpc.ServerDuplexStream<AppendRequestMsg, unknown>): void {
    const started = performance.now();
    let ctx: Who = { principal: 'unknown', requestId: '', method: 'audit.Append' };
    let finished = false;
    const finish = (e?: unknown) => {
      if (finished) return;
      finished = true;
      streams.delete(entry);
      logCall(ctx, e, started);
      if (call.cancelled) return;
      if (e === undefined) call.end();
      else call.emit('error', toServiceError(e));
    };
    let tail: Promise<void> = Promise.resolve();
    let outstanding = 0;
    const entry = { settled: () => tail, end: () => finish() };
    try {
      ctx = contextOf(call, 'audit.Append');
      if (!appenders.has(ctx.principal)) throw permissionDenied(`${ctx.principal} may not append audit events`);
      if (draining) throw new KeyshardError('UNAVAILABLE', 'audit sink is shutting down', { reason: 'AUDIT_UNAVAILABLE' });
    } catch (e) {
      finish(e);
      return;
    }
    streams.add(entry);
    // Batches are handled strictly in order, so acknowledgements come back in request order.
    call.on('data', (req: AppendRequestMsg) => {
      if (finished || draining) return; // unacknowledged: the producer rejects or resends it
      if (++outstanding >= MAX_OUTSTANDING) call.pause();
      const arrived = performance.now();
      tail = tail.then(async () => {
        try {
          if (finished) return;
          const events = (req.events ?? []).map((e) => opts.sensitive.apply(normalizeEvent(e, ctx.principal)));
          // Alerts are the sink's own word (alerts.ts): no appender may write one.
          if (events.some((e) => e.operation === ALERT_OPERATION)) throw permissionDenied(`${ALERT_OPERATION} events are written by the audit sink only`);
          const r = await log.append(events);
          opts.appendBatchSeconds?.observe((performance.now() - arrived) / 1000);
          if (!finished && !call.cancelled) {
            const cp = r.checkpoint;
            // The producer's last verified size: prove this checkpoint extends it. A size beyond
            // what was signed gets no proof (the producer refuses that acknowledgement).
            const known = Number(req.known_tree_size ?? 0);
            const proof = Number.isSafeInteger(known) && known > 0 && known < cp.tree_size ? log.consistencyProof(known, cp.tree_size) : [];
            call.write({
              batch: req.batch ?? '0',
              first_index: String(r.firstIndex),
              count: String(r.count),
              head_hash: cp.root_hash,
              tree_size: String(cp.tree_size),
              checkpoint: toCheckpointMsg(cp),
              consistency_proof: proof,
            });
          }
        } catch (e) {
          finish(e);
        } finally {
          if (--outstanding === MAX_OUTSTANDING - 1) call.resume();
        }
      });
    });
    call.on('end', () => void tail.then(() => finish()));
    call.on('cancelled', () => finish(new KeyshardError('UNAVAILABLE', 'cancelled by the client')));
  }

  /** Streams stored events from from_index; with `follow`, keeps sending new ones until cancelled. */
  function Tail(call: grpc.ServerWritableStream<{ from_index?: string; follow?: boolean }, unknown>): void {
    const started = performance.now();
    let ctx: Who = { principal: 'unknown', requestId: '', method: 'audit.Tail' };
    const stop = new AbortController();
    const run = async () => {
      ctx = contextOf(call, 'audit.Tail');
      if (!readers.has(ctx.principal)) throw permissionDenied(`${ctx.principal} may not call audit.Tail`);
      let next = sizeField(call.request.from_index, 'from_index', 0);
      call.on('cancelled', () => stop.abort());
      tails.add(stop);
      for (;;) {
        for await (const r of log.records(next)) {
          if (stop.signal.aborted) return;
          // Respect flow control: a slow reader slows its own stream, nobody else's.
          if (!call.write({ index: String(r.index), event: r.event })) await new Promise((res) => call.once('drain', res));
          next = r.index + 1;
        }
        if (!call.request.follow || stop.signal.aborted || draining) return;
        await log.waitForGrowth(next, stop.signal); // until record `next` exists
        if (stop.signal.aborted || draining) return;
      }
    };
    run().then(
      () => {
        tails.delete(stop);
        logCall(ctx, undefined, started);
        if (!call.cancelled) call.end();
      },
      (e) => {
        tails.delete(stop);
        logCall(ctx, e, started);
        if (!call.cancelled) call.emit('error', toServiceError(e));
      },
    );
  }

  return {
    implementation: { ...unary, Append, Tail },
    async drain() {
      draining = true;
      for (const t of tails) t.abort();
      const open = [...streams];
      await Promise.all(
        open.map(async (s) => {
          await s.settled();
          s.end();
        }),
      );
    },
  };
}
