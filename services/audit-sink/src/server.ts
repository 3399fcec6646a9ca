/**
 * AuditService handlers: thin adapters between gRPC and the ChainLog. Authorization is by
 * certificate CN: `appenders` may Append (and GetCheckpoint), `readers` may read.
 * An event's `source` must be the appender's own identity (empty = filled in), so one
 * component cannot write events in another's name.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '@keyshard/config';
import { KeyshardError, invalidArgument, permissionDenied } from '@keyshard/errors';
import { contextOf, keyshardProto, toServiceError, unaryService, type CallOutcome } from '@keyshard/rpc';
import type { ChainLog } from './chain-log.ts';

/** AuditEvent exactly as in audit.proto (keepCase): what is hashed and stored. */
export interface StoredAuditEvent {
  id: string;
  time: string;
  source: string;
  principal: string;
  operation: string;
  key_id: string;
  ceremony_id: string;
  result: string;
  code: string;
  request_id: string;
  details: Record<string, string>;
}

type RawEvent = Partial<Record<keyof StoredAuditEvent, unknown>>;

interface AppendRequestMsg {
  events?: RawEvent[];
  batch?: string;
}

interface QueryRequestMsg {
  from_time: string;
  to_time: string;
  principal: string;
  key_id: string;
  operation: string;
  result: string;
  page_size: number;
  page_token: string;
}

type Who = { principal: string; requestId: string; method: string };

export interface AuditServiceOptions {
  appenders: readonly string[];
  readers: readonly string[];
  logger: Logger;
}

const STRING_FIELDS = ['id', 'time', 'source', 'principal', 'operation', 'key_id', 'ceremony_id', 'result', 'code', 'request_id'] as const;
// Bounds keep one producer from bloating the log; real events are far smaller.
const MAX_ID = 128;
const MAX_FIELD = 4096;
const MAX_DETAILS = 64;
const MAX_OUTSTANDING = 16; // unacknowledged batches per stream before we stop reading it
const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;

/** Copies exactly the proto fields, so every producer's events hash the same way. */
export function normalizeEvent(raw: RawEvent | undefined, caller: string): StoredAuditEvent {
  const ev = {} as StoredAuditEvent;
  for (const f of STRING_FIELDS) {
    const v = raw?.[f] ?? '';
    if (typeof v !== 'string' || v.length > MAX_FIELD) throw invalidArgument(`audit event field ${f} is invalid`);
    ev[f] = v;
  }
  if (!ev.id || ev.id.length > MAX_ID) throw invalidArgument('audit event needs an id of 1..128 characters');
  if (!ev.operation) throw invalidArgument('audit event needs an operation');
  if (ev.source === '') ev.source = caller;
  else if (ev.source !== caller) throw permissionDenied(`event source ${ev.source} does not match the caller's identity ${caller}`);
  const details = raw?.details ?? {};
  if (typeof details !== 'object' || details === null || Array.isArray(details)) throw invalidArgument('audit event details are invalid');
  const entries = Object.entries(details as Record<string, unknown>);
  if (entries.length > MAX_DETAILS) throw invalidArgument(`audit event has more than ${MAX_DETAILS} details`);
  ev.details = {};
  for (const [k, v] of entries) {
    if (typeof v !== 'string' || k.length > MAX_FIELD || v.length > MAX_FIELD) throw invalidArgument(`audit event detail ${k.slice(0, 64)} is invalid`);
    ev.details[k] = v;
  }
  return ev;
}

export interface AuditServiceHandle {
  implementation: grpc.UntypedServiceImplementation;
  /** Stops taking new batches, acknowledges those already taken, then ends every Append stream. */
  drain(): Promise<void>;
}

export function createAuditService(chain: ChainLog, opts: AuditServiceOptions): AuditServiceHandle {
  const appenders = new Set(opts.appenders);
  const readers = new Set(opts.readers);
  const log = opts.logger;
  const streams = new Set<{ settled: () => Promise<void>; end: () => void }>();
  let draining = false;

  // Calls are logged, not audited: the sink does not audit itself into its own log.
  const logCall = (ctx: Who, e: unknown, started: number) => {
    const code = e === undefined ? 'OK' : e instanceof KeyshardError ? e.code : 'INTERNAL';
    const entry = { method: ctx.method, principal: ctx.principal, request_id: ctx.requestId, code, ms: Math.round(performance.now() - started) };
    if (e === undefined) log.debug(entry, 'call');
    else if (code === 'INTERNAL') log.error({ ...entry, err: e }, 'call failed');
    else log.warn({ ...entry, reason: (e as Error).message }, 'call refused');
  };
  const observe = (o: CallOutcome) => logCall(o.ctx, o.error, performance.now() - o.durationMs);

  const { Append: _a, Tail: _t, ...unaryDefs } = keyshardProto().AuditService.service;
  const unary = unaryService(
    unaryDefs,
    {
      GetCheckpoint: async () => ({
        tree_size: String(chain.size),
        root_hash: chain.headHash,
        time: new Date().toISOString(),
        key_id: '', // unsigned until the Merkle log brings signed checkpoints
        signature: Buffer.alloc(0),
      }),
      Query: (req: QueryRequestMsg) => query(chain, req),
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
      if (draining) throw new KeyshardError('UNAVAILABLE', 'audit sink is shutting down');
    } catch (e) {
      finish(e);
      return;
    }
    streams.add(entry);
    // Batches are handled strictly in order, so acknowledgements come back in request order.
    call.on('data', (req: AppendRequestMsg) => {
      if (finished || draining) return; // unacknowledged: the producer rejects or resends it
      if (++outstanding >= MAX_OUTSTANDING) call.pause();
      tail = tail.then(async () => {
        try {
          if (finished) return;
          const events = (req.events ?? []).map((e) => normalizeEvent(e, ctx.principal));
          const r = await chain.append(events);
          if (!finished && !call.cancelled) {
            call.write({ batch: req.batch ?? '0', first_index: String(r.firstIndex), count: String(r.count), head_hash: r.headHash });
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

  function Tail(call: grpc.ServerWritableStream<unknown, unknown>): void {
    try {
      const ctx = contextOf(call, 'audit.Tail');
      if (!readers.has(ctx.principal)) throw permissionDenied(`${ctx.principal} may not call audit.Tail`);
      throw new KeyshardError('UNIMPLEMENTED', 'audit.Tail is not implemented in this version');
    } catch (e) {
      call.emit('error', toServiceError(e));
    }
  }

  return {
    implementation: { ...unary, Append, Tail },
    async drain() {
      draining = true;
      const open = [...streams];
      await Promise.all(open.map(async (s) => {
        await s.settled();
        s.end();
      }));
    },
  };
}

async function query(chain: ChainLog, req: QueryRequestMsg) {
  const pageSize = req.page_size > 0 ? Math.min(req.page_size, MAX_PAGE) : DEFAULT_PAGE;
  const from = parseTime(req.from_time, 'from_time');
  const to = parseTime(req.to_time, 'to_time');
  const start = req.page_token ? decodeToken(req.page_token) : { index: 0, offset: 0 };
  const matches = (ev: Partial<StoredAuditEvent>) => {
    if (req.principal && ev.principal !== req.principal) return false;
    if (req.key_id && ev.key_id !== req.key_id) return false;
    if (req.operation && ev.operation !== req.operation) return false;
    if (req.result && ev.result !== req.result) return false;
    if (from !== undefined || to !== undefined) {
      const t = Date.parse(ev.time ?? '');
      if (Number.isNaN(t) || (from !== undefined && t < from) || (to !== undefined && t >= to)) return false;
    }
    return true;
  };
  const events: { index: string; event: unknown }[] = [];
  let next = '';
  // A linear scan is fine at this size; the Merkle log will bring an index.
  for await (const r of chain.records(start.offset, start.index)) {
    if (events.length === pageSize) {
      next = encodeToken(r.index, r.offset);
      break;
    }
    if (matches(r.event as Partial<StoredAuditEvent>)) events.push({ index: String(r.index), event: r.event });
  }
  return { events, next_page_token: next };
}

function parseTime(s: string, field: string): number | undefined {
  if (!s) return undefined;
  const t = Date.parse(s);
  if (Number.isNaN(t)) throw invalidArgument(`${field} is not an RFC 3339 time`);
  return t;
}

// Page tokens carry the byte offset so a page does not rescan the log from the start;
// ChainLog.records checks that the offset is the start of the record with that index.
function encodeToken(index: number, offset: number): string {
  return Buffer.from(`${index}.${offset}`).toString('base64url');
}

function decodeToken(token: string): { index: number; offset: number } {
  const m = /^(\d{1,15})\.(\d{1,15})$/.exec(Buffer.from(token, 'base64url').toString('utf8'));
  if (!m) throw invalidArgument('invalid page_token');
  return { index: Number(m[1]), offset: Number(m[2]) };
}
