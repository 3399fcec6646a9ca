/**
 * AuditService handlers: thin adapters between gRPC and the AuditLog. Authorization is by
 * certificate CN and the roles audit.proto gives each method: `appenders` (ROLE_AUDIT_APPENDER)
 * may Append (and GetCheckpoint), `readers` (ROLE_AUDITOR) may read everything.
 * An Append batch is stored whole or not at all. In order: its events are normalized (event.ts;
 * `source` must be the appender's CN), the batch must fit the appender's quota (quota.ts, else
 * RESOURCE_EXHAUSTED / AUDIT_QUOTA), every operation must be in the appender's scope
 * (@keyshard/audit-log appender-scope.ts, else PERMISSION_DENIED / AUDIT_SCOPE; `audit.*` is the
 * sink's own) and every `source` the appender's CN (the same refusal), refusals are counted and recorded (refusals.ts); then sensitive values are
 * replaced by HMACs (@keyshard/audit-log sensitive.ts) and the events hashed and stored.
 * AddCosignature is for coordinator-scope appenders only (the same AUDIT_SCOPE refusal, counted
 * and recorded), and bounded per caller by cosigned.ts (AUDIT_QUOTA, counted and recorded).
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '@keyshard/config';
import type { Histogram } from '@keyshard/metrics';
import { KeyshardError, invalidArgument, permissionDenied, quote } from '@keyshard/errors';
import { SINK_OPERATION_PREFIX, scopeAllows, toCheckpointMsg, type AppenderScope, type AuditEvent, type SensitiveFields } from '@keyshard/audit-log';
import { contextOf, holdsRole, keyshardProto, methodPolicy, roleAuthorizer, toServiceError, unaryService, type CallOutcome, type pb, type RoleMembers, type ServiceHandlers } from '@keyshard/rpc';
import type { SinkLog } from './replication/sink-log.ts';
import { copyEvent, eventBytes, forgedSource } from './event.ts';
import { queryLog } from './query.ts';
import type { AppenderQuotas } from './quota.ts';
import type { RefusalRecorder } from './refusals.ts';
import type { CosignedStore } from './cosigned.ts';

type Who = { principal: string; requestId: string; method: string };

export interface AuditServiceOptions {
  appenders: readonly { principal: string; scope: AppenderScope }[];
  readers: readonly string[];
  quotas: AppenderQuotas;
  refusals: RefusalRecorder;
  sensitive: SensitiveFields;
  logger: Logger;
  /** Why Append streams are refused at their start, if they are now (a replica that is not the leader: AUDIT_NOT_LEADER). */
  appendRefusal?: () => KeyshardError | undefined;
  /** The witnesses' published cosignatures (cosigned.ts). */
  cosigned: CosignedStore;
  /** Observes each Append batch's seconds from arrival to durability. */
  appendBatchSeconds?: Histogram;
}

/** The `tried_operation` of a refused AddCosignature (refusals.ts). */
const COSIGNATURE_OPERATION = 'AuditService.AddCosignature';
const MAX_OUTSTANDING = 16; // unacknowledged batches per stream before we stop reading it
const MAX_HASH_INPUT = 4096;

/** A uint64 request field (beyond 2^53 it decodes as a number that is not a safe integer); 0 means `dflt`. */
function sizeField(n: number, name: string, dflt: number): number {
  if (!Number.isSafeInteger(n) || n < 0) throw invalidArgument(`${name} is out of range`);
  return n === 0 ? dflt : n;
}

export interface AuditServiceHandle {
  implementation: grpc.UntypedServiceImplementation;
  /** Stops taking new batches, acknowledges those already taken, then ends every stream. */
  drain(): Promise<void>;
}

export function createAuditService(log: SinkLog, opts: AuditServiceOptions): AuditServiceHandle {
  const scopes = new Map(opts.appenders.map((a) => [a.principal, a.scope]));
  const roles: RoleMembers = { ROLE_AUDIT_APPENDER: new Set(scopes.keys()), ROLE_AUDITOR: new Set(opts.readers) };
  const may = (method: 'Append' | 'Tail', principal: string) => holdsRole(methodPolicy('AuditService', method), principal, roles);
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
  const handlers: Omit<ServiceHandlers<'AuditService'>, 'Append' | 'Tail'> = {
    GetCheckpoint: async () => toCheckpointMsg(await log.freshCheckpoint()),
    GetInclusionProof: async (req) => {
      const size = sizeField(req.tree_size, 'tree_size', log.size);
      const index = sizeField(req.index, 'index', 0);
      const path = log.inclusionProof(index, size);
      return { index, tree_size: size, path, leaf_hash: log.leafAt(index), root_hash: log.rootAt(size) };
    },
    GetConsistencyProof: async (req) => {
      const second = sizeField(req.second_size, 'second_size', log.size);
      const first = sizeField(req.first_size, 'first_size', 0);
      return { path: log.consistencyProof(first, second), first_size: first, second_size: second };
    },
    Query: (req) => queryLog(log, req),
    AddCosignature: async (req, ctx) => {
      // Witnesses are coordinator replicas: a custodian (or any other scope) publishes none.
      const scope = scopes.get(ctx.principal)!; // authorized for appenders only
      if (scope !== 'coordinator') {
        opts.refusals.refused({ kind: 'scope', principal: ctx.principal, scope, operation: COSIGNATURE_OPERATION, events: 0, bytes: 0 });
        throw permissionDenied(`${ctx.principal} (appender scope ${scope}) may not publish cosignatures: only coordinator replicas are witnesses`, { reason: 'AUDIT_SCOPE' });
      }
      try {
        await opts.cosigned.add(req, ctx.principal, log);
      } catch (e) {
        if (e instanceof KeyshardError && e.reason === 'AUDIT_QUOTA')
          opts.refusals.refused({ kind: 'quota', principal: ctx.principal, scope, operation: COSIGNATURE_OPERATION, limit: 'cosignatures', events: 0, bytes: 0 });
        throw e;
      }
      return {};
    },
    GetCosignedCheckpoints: async () => ({ checkpoints: opts.cosigned.latest() }),
    HashValue: async (req) => {
      if (req.value.length > MAX_HASH_INPUT) throw invalidArgument(`value is longer than ${MAX_HASH_INPUT} characters`);
      return { hash: opts.sensitive.hash(req.value) };
    },
  };
  const unary = unaryService(unaryDefs, handlers, {
    name: 'audit',
    observer: observe,
    authorize: roleAuthorizer('AuditService', roles, (ctx) => permissionDenied(`${ctx.principal} may not call ${ctx.method}`)),
  });

  /** Refuses (and counts and records) a batch over the appender's quota or with an operation outside its scope. */
  const admit = (principal: string, events: readonly AuditEvent[]) => {
    const scope = scopes.get(principal)!; // Append is authorized for appenders only
    let bytes = 0;
    for (const e of events) bytes += eventBytes(e);
    const first = events[0]?.operation ?? '';
    const over = opts.quotas.admit(principal, scope, events.length, bytes);
    if (over) {
      opts.refusals.refused({ kind: 'quota', principal, scope, operation: first, limit: over.limit, events: events.length, bytes });
      throw new KeyshardError('RESOURCE_EXHAUSTED', `${principal}: ${over.message}; nothing of the batch was stored, send it again later`, { reason: 'AUDIT_QUOTA' });
    }
    const forged = events.find((e) => e.source !== principal);
    if (forged) {
      opts.refusals.refused({ kind: 'scope', principal, scope, operation: forged.operation, claimedSource: forged.source, events: events.length, bytes });
      throw forgedSource(forged.source, principal);
    }
    const out = events.find((e) => !scopeAllows(scope, e.operation));
    if (out) {
      opts.refusals.refused({ kind: 'scope', principal, scope, operation: out.operation, events: events.length, bytes });
      throw permissionDenied(
        out.operation.startsWith(SINK_OPERATION_PREFIX)
          ? `${quote(out.operation)} events are written by the audit sink only; nothing of the batch was stored`
          : `${principal} (appender scope ${scope}) may not record ${quote(out.operation)}; nothing of the batch was stored`,
        { reason: 'AUDIT_SCOPE' },
      );
    }
  };

  const Append: pb.AuditServiceHandlers['Append'] = (call) => {
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
      if (!may('Append', ctx.principal)) throw permissionDenied(`${ctx.principal} may not append audit events`);
      if (draining) throw new KeyshardError('UNAVAILABLE', 'audit sink is shutting down', { reason: 'AUDIT_UNAVAILABLE' });
      const refusal = opts.appendRefusal?.();
      if (refusal) throw refusal;
    } catch (e) {
      finish(e);
      return;
    }
    streams.add(entry);
    // Batches are handled strictly in order, so acknowledgements come back in request order.
    call.on('data', (req: pb.AppendRequest__Output) => {
      if (finished || draining) return; // unacknowledged: the producer rejects or resends it
      if (++outstanding >= MAX_OUTSTANDING) call.pause();
      const arrived = performance.now();
      tail = tail.then(async () => {
        try {
          if (finished) return;
          const batch = sizeField(req.batch, 'batch', 0);
          const events = req.events.map((e) => copyEvent(e, ctx.principal)); // source: checked by admit
          admit(ctx.principal, events);
          for (const e of events) opts.sensitive.apply(e);
          const r = await log.append(events);
          opts.appendBatchSeconds?.observe((performance.now() - arrived) / 1000);
          if (!finished && !call.cancelled) {
            const cp = r.checkpoint;
            // The producer's last verified size: prove this checkpoint extends it. A size beyond
            // what was signed gets no proof (the producer refuses that acknowledgement).
            const known = req.known_tree_size;
            const proof = Number.isSafeInteger(known) && known > 0 && known < cp.tree_size ? log.consistencyProof(known, cp.tree_size) : [];
            call.write({
              batch,
              first_index: r.firstIndex,
              count: r.count,
              head_hash: cp.root_hash,
              tree_size: cp.tree_size,
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
  };

  /** Streams stored events from from_index; with `follow`, keeps sending new ones until cancelled. */
  const Tail: pb.AuditServiceHandlers['Tail'] = (call) => {
    const started = performance.now();
    let ctx: Who = { principal: 'unknown', requestId: '', method: 'audit.Tail' };
    const stop = new AbortController();
    const run = async () => {
      ctx = contextOf(call, 'audit.Tail');
      if (!may('Tail', ctx.principal)) throw permissionDenied(`${ctx.principal} may not call audit.Tail`);
      let next = sizeField(call.request.from_index, 'from_index', 0);
      call.on('cancelled', () => stop.abort());
      tails.add(stop);
      for (;;) {
        for await (const r of log.records(next)) {
          if (stop.signal.aborted) return;
          // Respect flow control: a slow reader slows its own stream, nobody else's.
          if (!call.write({ index: r.index, event: r.event })) await new Promise((res) => call.once('drain', res));
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
  };

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
