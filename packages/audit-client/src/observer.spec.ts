/** The audit observer's choices (what it records and logs) and request ids on audit events. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Logger } from '@keyshard/config';
import { runInCall, type CallOutcome } from '@keyshard/rpc';
import { completeEvent, type AuditEventInput } from './event.ts';
import { auditObserver } from './observer.ts';

function fakes() {
  const recorded: AuditEventInput[] = [];
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const at = (level: string) => (obj: Record<string, unknown>, msg: string) => void lines.push({ level, obj, msg });
  const log = { isLevelEnabled: () => true, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } as unknown as Logger;
  return { recorded, lines, log, audit: { record: async (e: AuditEventInput) => void recorded.push(e) } };
}

const outcome = (method: string, o: Partial<CallOutcome> = {}): CallOutcome => ({
  ctx: { principal: 'app', requestId: 'rid-1', method, deadline: Infinity, facts: {} },
  ok: true,
  code: 'OK',
  durationMs: 1.23,
  ...o,
});

describe('auditObserver', () => {
  it('records every outcome with its request id, and logs state-changing successes at info, others at debug', async () => {
    const f = fakes();
    const observe = auditObserver(f.audit, f.log, { infoMethods: new Set(['CreateKey']) });
    await observe(outcome('keys.CreateKey'));
    await observe(outcome('keys.Encrypt'));
    await observe(outcome('keys.Decrypt', { ok: false, code: 'PERMISSION_DENIED', message: 'no' }));
    assert.deepEqual(f.recorded.map((e) => [e.operation, e.result, e.request_id]), [
      ['keys.CreateKey', 'ok', 'rid-1'],
      ['keys.Encrypt', 'ok', 'rid-1'],
      ['keys.Decrypt', 'denied', 'rid-1'],
    ]);
    assert.deepEqual(f.lines.map((l) => [l.level, l.msg, l.obj.method, l.obj.request_id]), [
      ['info', 'request completed', 'keys.CreateKey', 'rid-1'],
      ['debug', 'request completed', 'keys.Encrypt', 'rid-1'],
      ['info', 'request refused', 'keys.Decrypt', 'rid-1'],
    ]);
  });

  it('neither records nor logs a call shed by a concurrency limit', async () => {
    const f = fakes();
    await auditObserver(f.audit, f.log)(outcome('keys.Encrypt', { ok: false, code: 'RESOURCE_EXHAUSTED', shed: true }));
    assert.deepEqual([f.recorded, f.lines], [[], []]);
  });
});

describe('completeEvent request ids', () => {
  const input = { principal: 'coordinator-1', operation: 'ceremony.unseal.created', result: 'ok' };

  it('takes the request id of the call it is recorded for, unless the event names one', async () => {
    assert.equal(completeEvent(input, 's').request_id, '', 'outside a call: none');
    await runInCall({ requestId: 'rid-7', method: 'ceremony.StartUnseal', principal: 'admin' }, async () => {
      await Promise.resolve();
      assert.equal(completeEvent(input, 's').request_id, 'rid-7');
      assert.equal(completeEvent({ ...input, request_id: 'own' }, 's').request_id, 'own');
    });
  });
});
