/**
 * Idempotent state changes: request tokens (keys.proto and ceremony.proto, "Idempotent state
 * changes"; after AWS's idempotency tokens — ClientToken, RFC-less but documented for EC2/KMS —
 * and Google AIP-155 request identification). The one place of the concept in the coordinator:
 * KeyService's state changes and CeremonyService's Init, StartUnseal and StartCeremony use it.
 *
 * A state-changing call may carry a `request_token`. Its record, at `request-tokens/<digest>`
 * (digest = SHA-256 of caller, method and token), holds the caller, method, token, a hash of the
 * request's other fields, when, and the outcome: the key record as the change left it, the alias
 * it made, a deletion, the ceremony it opened, or the cluster an Init made. The record is written
 * IN THE SAME etcd transaction as the change (key-store.ts, ceremony-store.ts and
 * cluster-store.ts ask `boundToken()` which token the running call carries, add `put()` to their
 * write and settle it with `settle()`): that transaction also requires the token to be
 * unrecorded, so of two attempts running at once one applies and the other fails its compare and
 * answers the winner's outcome; and a change whose answer was lost is found applied by its
 * repeat, never applied twice.
 *
 * Records carry a record MAC (record-integrity.ts), except those of changes a sealed replica
 * makes (Init, and opening an unseal or recover ceremony): no replica holds the MAC key then. The
 * caller's request says which a record must be (never the stored record), and such an unMAC'd
 * outcome only names what the replay then reads and checks again (the cluster, the ceremony).
 *
 * `RequestTokens.run` wraps one call: a recorded outcome is answered at once (parameters equal)
 * or refused FAILED_PRECONDITION REQUEST_TOKEN_REUSED (parameters differ); else the call runs
 * with the token bound (AsyncLocalStorage), and if it fails before its change consumed the
 * token, the record is read once more (a concurrent attempt may have recorded it: its outcome is
 * the answer). A refused call records nothing, and neither does one that wrote nothing.
 * Records are kept REQUEST_TOKEN_WINDOW_MS at least; the leader sweeps older ones (fenced).
 * `withRequestTokens` runs a service's tokened handlers (method-policy.ts `requestToken`) so.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { etcdCall, pagesOf, paths, type Namespace } from '@keyshard/store';
import { failedPrecondition, invalidArgument, quote, unavailable } from '@keyshard/errors';
import { methodPolicies, type CallContext, type ServiceName } from '@keyshard/rpc';
import type { RecordIntegrity } from '../cluster/record-integrity.ts';
import type { KeyRecord } from './key-record.ts';

/** How long a token's outcome is kept (and a repeat answered with it): 24 hours, as AWS's tokens. */
export const REQUEST_TOKEN_WINDOW_MS = 24 * 60 * 60 * 1000;
export const MAX_REQUEST_TOKEN_LENGTH = 128;
const TOKEN_PATTERN = /^[A-Za-z0-9_-]+$/;

/** What Init made (cluster.ts InitResult). */
export interface InitOutcome {
  clusterId: string;
  threshold: number;
  shares: number;
  custodianIds: string[];
  manifestFingerprint: string;
}

/**
 * What a change left: the key record as written, an alias made or repointed, a deletion, the
 * ceremony opened (its id and operation: a replay reads it again), or the cluster an Init made.
 */
export type TokenOutcome =
  | { key: KeyRecord }
  | { alias: { name: string; keyId: string } }
  | { deleted: true }
  | { ceremony: { id: string; operation: string } }
  | { init: InitOutcome };

export interface TokenRecord {
  principal: string;
  /** `<Service>.<Method>`. */
  method: string;
  token: string;
  /** SHA-256 (base64url) of the request's canonical JSON, request_token left out. */
  params: string;
  /** When the change applied (RFC 3339). */
  at: string;
  outcome: TokenOutcome;
}

/** The token a running call carries, until a write records it (consumed) or the call ends. */
export class TokenBinding {
  readonly path: string;
  consumed = false;
  ended = false;

  constructor(
    readonly principal: string,
    readonly method: string,
    readonly token: string,
    readonly params: string,
    /** Whether its record carries a record MAC (false: a change made while sealed; see above). */
    readonly macked = true,
  ) {
    this.path = paths.requestToken(createHash('sha256').update(principal).update('\0').update(method).update('\0').update(token).digest('base64url'));
  }

  /** The record of this call's change. */
  record(outcome: TokenOutcome, now = new Date()): TokenRecord {
    return { principal: this.principal, method: this.method, token: this.token, params: this.params, at: now.toISOString(), outcome };
  }

  /** The put that records `outcome` in the change's transaction (MAC'd unless `macked` is false). */
  put(outcome: TokenOutcome, integrity: Pick<RecordIntegrity, 'stamp'>): [string, string] {
    const r = this.record(outcome);
    return [this.path, this.macked ? integrity.stamp(this.path, r) : JSON.stringify(r)];
  }
}

const scope = new AsyncLocalStorage<TokenBinding>();

/** The token the running call carries and has not recorded yet (key-store.ts adds it to its write). */
export function boundToken(): TokenBinding | undefined {
  const b = scope.getStore();
  return b && !b.consumed && !b.ended ? b : undefined;
}

/**
 * After a write that carried token `t` (its put, and the compare that `t.path` was never
 * created): an applied write consumed `t`; one that did not apply while `t` is recorded now (a
 * concurrent attempt of the same call won) throws, so the call answers that attempt's outcome
 * (RequestTokens.run) instead of trying its change again.
 */
export async function settle(ns: Namespace, t: TokenBinding | undefined, applied: boolean): Promise<void> {
  if (!t) return;
  if (applied) t.consumed = true;
  else if ((await etcdCall('read request token', () => ns.get(t.path).exec())).kvs.length > 0)
    throw unavailable('a concurrent attempt of this call applied it first', { reason: 'CONTENDED' });
}

/** A request token as the caller sent it: '' (none) or 1 to 128 characters of [A-Za-z0-9_-]. */
export function validateRequestToken(token: unknown): string {
  if (token === undefined || token === null || token === '') return '';
  if (typeof token !== 'string' || token.length > MAX_REQUEST_TOKEN_LENGTH || !TOKEN_PATTERN.test(token))
    throw invalidArgument(`request_token must be 1 to ${MAX_REQUEST_TOKEN_LENGTH} characters of A-Z, a-z, 0-9, _ and -`);
  return token;
}

/** JSON with object keys sorted and bytes as {"$bytes": base64}: the same request always gives the same text. */
function canonical(v: unknown): string {
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return JSON.stringify({ $bytes: Buffer.from(v).toString('base64') });
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object')
    return `{${Object.keys(v)
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v ?? null);
}

/** The hash of a request's parameters: every field but request_token. */
export function paramsHash(request: Record<string, unknown>): string {
  const { request_token: _, ...rest } = request;
  return createHash('sha256').update(canonical(rest)).digest('base64url');
}

/** A leader's fence (leader-election.ts): its election key and the create revision it was elected with. */
export interface SweepFence {
  key: string;
  createRevision: string;
}

/** Expired records deleted per transaction (each with its own compare; etcd allows 128 operations). */
const SWEEP_BATCH = 64;
const SWEEP_PAGE = 1000;

export class RequestTokens {
  readonly #ns: Namespace;
  readonly #integrity: RecordIntegrity;
  readonly #windowMs: number;

  constructor(ns: Namespace, integrity: RecordIntegrity, windowMs = REQUEST_TOKEN_WINDOW_MS) {
    this.#ns = ns;
    this.#integrity = integrity;
    this.#windowMs = windowMs;
  }

  /**
   * Runs `execute` as the call `call` (no token: just runs it), or answers `replay` of the
   * outcome recorded for its token. `execute`'s state change records the token (key-store.ts).
   */
  async run<T>(
    call: { principal: string; method: string; request: Record<string, unknown>; macked?: boolean },
    execute: () => Promise<T>,
    replay: (r: TokenRecord) => Promise<T> | T,
  ): Promise<T> {
    const token = validateRequestToken(call.request.request_token);
    if (!token) return execute();
    const b = new TokenBinding(call.principal, call.method, token, paramsHash(call.request), call.macked ?? true);
    const prior = await this.recorded(b);
    if (prior) return replay(prior);
    try {
      return await scope.run(b, execute);
    } catch (e) {
      if (b.consumed) throw e;
      // A concurrent attempt with this token may have applied first (its change is why ours
      // failed): its outcome is the answer. Whatever else went wrong is the error.
      const now = await this.recorded(b).catch(() => undefined);
      if (now) return replay(now);
      throw e;
    } finally {
      b.ended = true;
    }
  }

  /** The outcome recorded for `b`'s token; FAILED_PRECONDITION REQUEST_TOKEN_REUSED if it was recorded for other parameters. */
  async recorded(b: TokenBinding): Promise<TokenRecord | undefined> {
    const kv = (await etcdCall('read request token', () => this.#ns.get(b.path).exec())).kvs[0];
    if (!kv) return undefined;
    const r = b.macked ? this.#integrity.open<TokenRecord>(b.path, kv.value) : plain(kv.value);
    if (!r) throw this.#integrity.refuse(b.path, 'not JSON', kv.value.toString());
    if (r.principal !== b.principal || r.method !== b.method || r.token !== b.token)
      throw this.#integrity.refuse(b.path, 'holds the token of another call', kv.value.toString());
    if (r.params !== b.params)
      throw failedPrecondition(`request_token ${quote(b.token)} was already used for a ${b.method.split('.')[1]} with other parameters; use a new token for a new change`, {
        reason: 'REQUEST_TOKEN_REUSED',
        metadata: { request_token: b.token },
      });
    return r;
  }

  /**
   * Deletes the records older than the window (at `now`), each only if unchanged since read and
   * only while `fence` holds (the leader's election key unchanged): a deposed leader deletes
   * nothing. A record whose time cannot be read is deleted as expired. Returns how many went.
   */
  async sweep(now: number, fence: SweepFence): Promise<number> {
    const ns = this.#ns;
    let deleted = 0;
    // Page by page: the records of a 24 h window outgrow one read (each holds a key record).
    for await (const page of pagesOf(ns, paths.requestTokensPrefix, SWEEP_PAGE, 'list request tokens')) {
      const expired = page.filter((kv) => {
        let at = Number.NaN;
        try {
          at = Date.parse((JSON.parse(kv.value.toString()) as { at?: string }).at ?? '');
        } catch {
          // not JSON: expired
        }
        return !(at + this.#windowMs > now);
      });
      for (let i = 0; i < expired.length; i += SWEEP_BATCH) {
        const batch = expired.slice(i, i + SWEEP_BATCH);
        const res = await etcdCall('sweep request tokens', () => {
          const cmp = ns.if(fence.key, 'Create', '==', fence.createRevision);
          for (const kv of batch) cmp.and(kv.key, 'Mod', '==', kv.modRevision);
          return cmp.then(...batch.map((kv) => ns.delete().key(kv.key))).commit();
        });
        if (!res.succeeded) return deleted; // fenced off, or a record changed: the next sweep looks again
        deleted += batch.length;
      }
    }
    return deleted;
  }
}

/** An unMAC'd record as stored (one with a MAC read so keeps it, unused); undefined if not a JSON object. */
function plain(raw: Buffer): TokenRecord | undefined {
  try {
    const r = JSON.parse(raw.toString()) as TokenRecord;
    return r && typeof r === 'object' && r.outcome && typeof r.outcome === 'object' ? r : undefined;
  } catch {
    return undefined;
  }
}

/** How a service's tokened handlers answer (withRequestTokens). */
export interface TokenedService<R> {
  /** A repeat's answer: the outcome its token recorded, audited as a replay (`replay=true`). */
  replay(method: string, r: TokenRecord, ctx: CallContext): Promise<R> | R;
  /** The first application's answer, noting its token for the audit record (replays link to it). */
  applied(method: string, result: R, token: string, ctx: CallContext): R;
  /** Whether the record of `method` called with `request` carries a record MAC (default: yes). */
  macked?(method: string, request: Record<string, unknown>): boolean;
}

/**
 * `handlers` of `service` with those of the methods whose request takes a `request_token`
 * (method-policy.ts) run through the token store (RequestTokens.run); the others as they are.
 */
export function withRequestTokens<H extends object, R>(service: ServiceName, tokens: RequestTokens | undefined, handlers: H, s: TokenedService<R>): H {
  if (!tokens) return handlers;
  const policies = methodPolicies(service);
  type Handler = (req: Record<string, unknown>, ctx: CallContext) => Promise<R>;
  return Object.fromEntries(
    Object.entries(handlers as Record<string, Handler>).map(([m, h]) => {
      if (!policies.get(m as never)?.requestToken) return [m, h];
      const tokened: Handler = (req, ctx) => {
        const token = typeof req.request_token === 'string' ? req.request_token : '';
        const call = { principal: ctx.principal, method: `${service}.${m}`, request: req, macked: s.macked?.(m, req) ?? true };
        return tokens.run(call, async () => (token ? s.applied(m, await h(req, ctx), token, ctx) : h(req, ctx)), (r) => s.replay(m, r, ctx));
      };
      return [m, tokened];
    }),
  ) as H;
}

