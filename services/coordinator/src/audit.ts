/**
 * Turns every call outcome into an audit event and waits until the sink has made it durable
 * before the caller gets its answer. If the sink cannot record the call, the caller gets
 * UNAVAILABLE instead of the result: ceremonies, admin operations and (until the durable
 * spool of the audit issue) crypto operations all fail closed.
 */
import type { CallOutcome, Observer } from '@keyshard/rpc';
import type { Logger } from '@keyshard/config';
import type { AuditEventInput } from '@keyshard/audit-client';

/** What domain modules need of the audit client (a small fake in unit tests). */
export interface AuditRecorder {
  record(event: AuditEventInput): Promise<void>;
}

export function resultOf(o: CallOutcome): 'ok' | 'denied' | 'error' {
  if (o.ok) return 'ok';
  return o.code === 'PERMISSION_DENIED' || o.code === 'UNAUTHENTICATED' ? 'denied' : 'error';
}

export function auditObserver(audit: AuditRecorder, log: Logger): Observer {
  return async (o) => {
    const event: AuditEventInput = {
      operation: o.ctx.method,
      result: resultOf(o),
      principal: o.ctx.principal,
      key_id: o.ctx.facts.keyId ?? '',
      ceremony_id: o.ctx.facts.ceremonyId ?? '',
      code: o.ok ? '' : o.code,
      request_id: o.ctx.requestId,
      details: o.ctx.facts.details ?? {},
    };
    if (!o.ok) {
      const line = { method: o.ctx.method, code: o.code, principal: o.ctx.principal, requestId: o.ctx.requestId };
      if (o.code === 'INTERNAL') log.error({ ...line, err: (o.error as Error)?.message }, 'request failed');
      else log.info(line, 'request refused');
    }
    await audit.record(event);
  };
}
