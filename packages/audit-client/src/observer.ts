/**
 * An `@keyshard/rpc` Observer that audits every call outcome and makes the reply wait until
 * the sink has it durably: if the event cannot be recorded, the caller gets the audit error
 * (UNAVAILABLE) instead of the result — fail closed. Denials are audited too.
 */
import type { Logger } from '@keyshard/config';
import type { CallOutcome, Observer } from '@keyshard/rpc';
import type { AuditEventInput } from './index.ts';

/** What the observer needs of an AuditClient (a small fake in unit tests). */
export interface AuditRecorder {
  record(event: AuditEventInput): Promise<void>;
}

export function resultOf(o: CallOutcome): 'ok' | 'denied' | 'error' {
  if (o.ok) return 'ok';
  return o.code === 'PERMISSION_DENIED' || o.code === 'UNAUTHENTICATED' ? 'denied' : 'error';
}

export function auditObserver(audit: AuditRecorder, log: Logger): Observer {
  return async (o) => {
    if (!o.ok) {
      // Messages of KeyshardErrors are caller-safe by contract; unknown errors are not logged verbatim to callers.
      const line = { method: o.ctx.method, code: o.code, principal: o.ctx.principal, request_id: o.ctx.requestId };
      if (o.code === 'INTERNAL') log.error({ ...line, err: (o.error as Error)?.message }, 'request failed');
      else log.info({ ...line, reason: o.message }, 'request refused');
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
