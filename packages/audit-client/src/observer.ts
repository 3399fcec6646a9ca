/**
 * An `@keyshard/rpc` Observer that audits every call outcome and makes the reply wait until
 * the sink has it durably: if the event cannot be recorded, the caller gets the audit error
 * (UNAVAILABLE) instead of the result — fail closed. Denials are audited too. Calls shed by a
 * concurrency limit did nothing and are not audited: recording each one would turn overload
 * into audit load (they are counted in metrics instead).
 */
import type { Logger } from '@keyshard/config';
import { reasonOf } from '@keyshard/errors';
import type { CallContext, CallOutcome, Observer } from '@keyshard/rpc';
import type { AuditEventInput } from './event.ts';

/** What the observer needs of an AuditClient (a small fake in unit tests). */
export interface AuditRecorder {
  record(event: AuditEventInput): Promise<void>;
}

export function resultOf(o: CallOutcome): 'ok' | 'denied' | 'error' {
  if (o.ok) return 'ok';
  return o.code === 'PERMISSION_DENIED' || o.code === 'UNAUTHENTICATED' ? 'denied' : 'error';
}

export interface AuditObserverOptions {
  /**
   * Methods (names without the service, as for auditIntent) whose successful calls are logged
   * at info: the state-changing ones. Other successes are logged at debug (crypto calls and
   * polling reads are many); refusals and errors always at info or error.
   */
  infoMethods?: ReadonlySet<string>;
}

export function auditObserver(audit: AuditRecorder, log: Logger, opts: AuditObserverOptions = {}): Observer {
  return async (o) => {
    if (o.shed) return;
    if (o.ok) {
      const level = opts.infoMethods?.has(o.ctx.method.slice(o.ctx.method.indexOf('.') + 1)) ? 'info' : 'debug';
      if (log.isLevelEnabled(level)) log[level]({ method: o.ctx.method, principal: o.ctx.principal, request_id: o.ctx.requestId, durationMs: Math.round(o.durationMs * 10) / 10 }, 'request completed');
    } else {
      // Messages of KeyshardErrors are caller-safe by contract; unknown errors are not logged verbatim to callers.
      const line = { method: o.ctx.method, code: o.code, principal: o.ctx.principal, request_id: o.ctx.requestId };
      // Unknown errors' messages could carry anything: log their kind, never their text.
      if (o.code === 'INTERNAL') log.error({ ...line, error: (o.error as Error)?.name, errorCode: (o.error as { code?: unknown })?.code }, 'request failed');
      else log.info({ ...line, reason: reasonOf(o.error), message: o.message }, 'request refused');
    }
    await audit.record({
      operation: o.ctx.method,
      result: resultOf(o),
      principal: o.ctx.principal,
      key_id: o.ctx.facts?.keyId ?? '',
      ceremony_id: o.ctx.facts?.ceremonyId ?? '',
      code: o.ok ? '' : o.code,
      request_id: o.ctx.requestId,
      details: o.ctx.facts?.details ?? {},
    });
  };
}

/**
 * Records the intent of a state-changing call before it runs (`unaryService`'s `before`):
 * if the sink cannot record it, the call is refused and nothing changes — fail closed for
 * ceremonies, admin and destructive operations. The outcome is recorded by the observer.
 */
export function auditIntent(audit: AuditRecorder, methods: ReadonlySet<string>) {
  return (ctx: CallContext): Promise<void> | undefined => {
    const name = ctx.method.slice(ctx.method.indexOf('.') + 1);
    if (!methods.has(name)) return undefined; // nothing to wait for: no extra promise on hot paths
    return audit.record({ operation: `${ctx.method}.requested`, result: 'ok', principal: ctx.principal, request_id: ctx.requestId });
  };
}
