import { describe, it } from 'node:test';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { Counter, Registry } from '@keyshard/metrics';
import { SensitiveFields, type AuditEvent } from '@keyshard/audit-log';
import { parseConfig, type Logger } from '@keyshard/config';
import { auditSinkConfigSchema, quotasSchema } from './config.ts';
import { AppenderQuotas, TokenBucket } from './quota.ts';
import { RefusalRecorder } from './refusals.ts';

describe('TokenBucket', () => {
  it('starts full, refills at its rate up to its capacity, and never below what was taken', () => {
    const b = new TokenBucket(100, 500, 0); // 100/s, 500 at most
    assert.equal(b.level(0), 500);
    b.take(500);
    assert.equal(b.level(0), 0);
    assert.equal(b.level(1000), 100); // one second: 100 tokens
    assert.equal(b.level(500), 100, 'time going backwards refills nothing');
    assert.equal(b.level(60_000), 500, 'capped at the capacity');
  });
});

describe('AppenderQuotas', () => {
  const quotas = (over: Record<string, unknown> = {}) =>
    parseConfig(quotasSchema, { custodian: { eventsPerSecond: 10, burstEvents: 20, bytesPerSecond: 1000, burstBytes: 4096 }, maxBatchEvents: 15, maxBatchBytes: 4096, ...over });

  it('admits a burst, refuses past it by events, refills with time; each appender has its own buckets', () => {
    let now = 0;
    const q = new AppenderQuotas(quotas(), () => now);
    assert.equal(q.admit('custodian-1', 'custodian', 15, 100), undefined);
    assert.equal(q.admit('custodian-1', 'custodian', 5, 100), undefined);
    const r = q.admit('custodian-1', 'custodian', 1, 10);
    assert.equal(r?.limit, 'events');
    assert.match(r!.message, /10 events\/s \(burst 20\) for a custodian/);
    assert.equal(q.admit('custodian-2', 'custodian', 15, 100), undefined, 'another appender: its own bucket');
    now = 500; // half a second: 5 events
    assert.equal(q.admit('custodian-1', 'custodian', 6, 10)?.limit, 'events');
    assert.equal(q.admit('custodian-1', 'custodian', 5, 10), undefined);
  });

  it('refuses by bytes; a refused batch costs nothing (all or nothing)', () => {
    const now = 0;
    const q = new AppenderQuotas(quotas(), () => now);
    assert.equal(q.admit('c', 'custodian', 2, 3500), undefined);
    assert.equal(q.admit('c', 'custodian', 2, 1000)?.limit, 'bytes');
    // The refused batch took no event tokens: 18 events are left.
    assert.equal(q.admit('c', 'custodian', 15, 500), undefined);
    assert.equal(q.admit('c', 'custodian', 3, 0), undefined);
    assert.equal(q.admit('c', 'custodian', 1, 0)?.limit, 'events');
  });

  it('refuses a batch over maxBatchEvents or maxBatchBytes whatever the buckets hold; the config keeps every bucket able to take the largest batch', () => {
    const q = new AppenderQuotas(quotas(), () => 0);
    assert.match(q.admit('c', 'custodian', 16, 1)!.message, /batch of 16 events is over the sink's limit of 15/);
    assert.match(q.admit('k', 'coordinator', 1, 4097)!.message, /batch of 4097 bytes is over the sink's limit of 4096/);
    assert.equal(q.admit('k', 'coordinator', 15, 4096), undefined, 'the coordinator defaults are far larger');
    assert.throws(() => quotas({ maxBatchEvents: 21 }), /custodian\.burstEvents: must be at least maxBatchEvents \(21\)/);
    assert.throws(() => quotas({ maxBatchBytes: 5000 }), /custodian\.burstBytes: must be at least maxBatchBytes \(5000\)/);
  });

  it('defaults: a coordinator far above a custodian; batches of MAX_APPEND_BATCH fit both', () => {
    const d = parseConfig(quotasSchema, {});
    assert.ok(d.coordinator.eventsPerSecond >= 50 * d.custodian.eventsPerSecond);
    assert.ok(d.coordinator.burstEvents >= d.maxBatchEvents && d.custodian.burstEvents >= d.maxBatchEvents);
    assert.ok(d.coordinator.burstBytes >= d.maxBatchBytes && d.custodian.burstBytes >= d.maxBatchBytes);
    assert.equal(d.maxBatchEvents, 1000);
  });
});

describe('README', () => {
  it("the sink config example in the audit section shows the defaults of quotas", () => {
    const readme = readFileSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../README.md'), 'utf8');
    const block = /```json\n("appenders": \[[\s\S]*?)\n```/.exec(readme);
    assert.ok(block, 'the README has the example');
    const example = JSON.parse(`{${block[1]}}`) as { quotas: unknown; appenders: unknown };
    assert.deepEqual(example.quotas, parseConfig(quotasSchema, {}));
  });
});

describe('sink config: appenders', () => {
  const base = {
    listen: '127.0.0.1:0', dataDir: '/tmp/x', tls: { ca: 'a', cert: 'b', key: 'c' }, readers: ['auditor'], checkpointKeyFile: 'k', hmacKeyFile: 'h',
  };
  it('takes each appender with its scope', () => {
    const cfg = parseConfig(auditSinkConfigSchema, { ...base, appenders: [{ principal: 'coordinator-1', scope: 'coordinator' }, { principal: 'custodian-1', scope: 'custodian' }] });
    assert.deepEqual(cfg.appenders.map((a) => a.scope), ['coordinator', 'custodian']);
  });
  it('refuses the old flat list with a message saying what to write, a scope it does not know, and an appender listed twice', () => {
    assert.throws(
      () => parseConfig(auditSinkConfigSchema, { ...base, appenders: ['coordinator-1'] }),
      (e: Error) => /appenders\.0: a bare name \("coordinator-1"\) is not accepted any more: write \{ "principal": "coordinator-1", "scope": "coordinator" \| "custodian" \}/.test(e.message),
    );
    assert.throws(() => parseConfig(auditSinkConfigSchema, { ...base, appenders: [{ principal: 'x', scope: 'sink' }] }), /appenders\.0\.scope/);
    assert.throws(
      () => parseConfig(auditSinkConfigSchema, { ...base, appenders: [{ principal: 'x', scope: 'custodian' }, { principal: 'x', scope: 'coordinator' }] }),
      /"x" is listed more than once/,
    );
  });
});

describe('RefusalRecorder', () => {
  const harness = (windowSeconds = 60) => {
    let now = 0;
    const registry = new Registry();
    const refusalsTotal = new Counter({ name: 'keyshard_audit_append_refusals_total', help: 'h', labelNames: ['reason'] as const, registers: [registry] });
    const warns: Record<string, unknown>[] = [];
    const logger = { warn: (o: Record<string, unknown>) => void warns.push(o), error: () => {}, info: () => {}, debug: () => {} } as unknown as Logger;
    const appended: AuditEvent[] = [];
    const r = new RefusalRecorder({
      identity: 'audit-sink', append: async (e) => void appended.push(...e), sensitive: new SensitiveFields(Buffer.alloc(32, 1)), logger, refusalsTotal, windowSeconds, now: () => now,
    });
    return { r, registry, warns, appended, at: (t: number) => (now = t) };
  };
  const scope = { kind: 'scope', principal: 'custodian-1', scope: 'custodian', operation: 'keys.Decrypt', events: 1, bytes: 300 } as const;
  const quota = { kind: 'quota', principal: 'custodian-1', scope: 'custodian', operation: 'custodian.X', limit: 'bytes', events: 100, bytes: 410_000 } as const;

  it('counts and logs every refusal; records one event per appender, kind (and operation) and window, with what it suppressed', async () => {
    const h = harness();
    h.r.refused(scope);
    h.r.refused(scope);
    h.r.refused({ ...scope, operation: 'ceremony.unseal.completed' }); // another operation: its own record
    for (let i = 0; i < 50; i++) h.r.refused(quota);
    assert.match(await h.registry.metrics(), /^keyshard_audit_append_refusals_total\{reason="scope"\} 3$/m);
    assert.match(await h.registry.metrics(), /^keyshard_audit_append_refusals_total\{reason="quota"\} 50$/m);
    assert.equal(h.warns.length, 53);
    assert.deepEqual(h.appended.map((e) => [e.details.reason, e.details.tried_operation, e.details.suppressed]), [
      ['AUDIT_SCOPE', 'keys.Decrypt', '0'],
      ['AUDIT_SCOPE', 'ceremony.unseal.completed', '0'],
      ['AUDIT_QUOTA', 'custodian.X', '0'],
    ]);
    const [e] = h.appended;
    assert.deepEqual({ ...e!, id: '', time: '' }, {
      id: '', time: '', source: 'audit-sink', principal: 'custodian-1', operation: 'audit.append_refused', key_id: '', ceremony_id: '', result: 'denied',
      code: 'PERMISSION_DENIED', request_id: '', details: { reason: 'AUDIT_SCOPE', scope: 'custodian', tried_operation: 'keys.Decrypt', events: '1', bytes: '300', suppressed: '0', window_seconds: '60' },
    });
    assert.equal(h.appended[2]!.code, 'RESOURCE_EXHAUSTED');
    assert.equal(h.appended[2]!.details.limit, 'bytes');

    h.at(60_000); // the next window: recorded again, saying how many were not
    h.r.refused(quota);
    h.r.refused(scope);
    assert.deepEqual(h.appended.slice(3).map((e) => [e.details.reason, e.details.suppressed]), [['AUDIT_QUOTA', '49'], ['AUDIT_SCOPE', '1']]);
  });

  it('clips the operation tried; never copies the refused events', () => {
    const h = harness();
    h.r.refused({ ...scope, operation: `keys.${'x'.repeat(5000)}` });
    const d = h.appended[0]!.details;
    assert.equal(d.tried_operation!.length, 129);
    assert.deepEqual(Object.keys(d).sort(), ['bytes', 'events', 'reason', 'scope', 'suppressed', 'tried_operation', 'window_seconds']);
  });
});
