import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { parseConfig, type Logger } from '@keyshard/config';
import { Counter, Registry } from '@keyshard/metrics';
import { ALERT_OPERATION, type AuditEvent } from '@keyshard/audit-log';
import { AlertEngine, SlidingCount, alertReporter, type Alert } from './alerts.ts';
import { AuditLog } from './audit-log.ts';
import { signerFromKey } from './checkpoint-store.ts';
import { alertRulesSchema, type AlertRules } from './config.ts';

const T0 = Date.parse('2030-01-01T00:00:00.000Z');

/** A fake clock and an engine fed through it; events carry the clock's time unless told. */
function harness(overrides: Record<string, unknown> = {}) {
  const clock = { now: T0 };
  const alerts: Alert[] = [];
  const rules: AlertRules = parseConfig(alertRulesSchema, overrides);
  const engine = new AlertEngine(rules, (a) => alerts.push(a), () => clock.now);
  let index = 0;
  const feed = (e: Partial<AuditEvent>) =>
    engine.observe([{ index: index++, event: { id: `e${index}`, time: new Date(clock.now).toISOString(), source: 'coordinator-1', result: 'ok', code: '', details: {}, ...e } }]);
  const deny = (principal: string, code = 'PERMISSION_DENIED') => feed({ principal, operation: 'keys.Decrypt', result: 'denied', code });
  const advance = (ms: number) => (clock.now += ms);
  return { clock, alerts, engine, feed, deny, advance, rules };
}

describe('alert rules config', () => {
  it('has the documented defaults', () => {
    const r = parseConfig(alertRulesSchema, undefined);
    assert.deepEqual(r.denials, { enabled: true, threshold: 5, windowSeconds: 60 });
    assert.deepEqual({ ...r.decryptSpike, operations: undefined }, { enabled: true, operations: undefined, windowSeconds: 10, baselineSeconds: 300, factor: 5, minRatePerSecond: 20 });
    assert.ok(r.destroy.operations.includes('ceremony.destroy-cluster.completed'));
    assert.equal(r.maxPrincipals, 10_000);
  });

  it('refuses nonsense with a message naming the field', () => {
    assert.throws(() => parseConfig(alertRulesSchema, { denials: { threshold: 0 } }), /denials\.threshold/);
    assert.throws(() => parseConfig(alertRulesSchema, { decryptSpike: { windowSeconds: 60, baselineSeconds: 90 } }), /at least twice windowSeconds/);
    assert.throws(() => parseConfig(alertRulesSchema, { denial: {} }), /Unrecognized key/);
  });
});

describe('SlidingCount', () => {
  it('counts what is within the window and forgets the rest', () => {
    const c = new SlidingCount(10_000, 10);
    c.add(T0);
    c.add(T0 + 4_000, 2);
    assert.equal(c.total(T0 + 5_000), 3);
    assert.equal(c.total(T0 + 10_500), 2, 'the first second has left the window');
    assert.equal(c.total(T0 + 15_000), 0);
    c.add(T0 + 100_000);
    assert.equal(c.total(T0 + 100_000), 1, 'a slot reused after a lap starts from zero');
  });
});

describe('denials rule', () => {
  it('fires once at the threshold, for that principal, with the counts', () => {
    const h = harness();
    for (let i = 0; i < 4; i++) {
      h.deny('mallory');
      h.advance(1_000);
    }
    assert.equal(h.alerts.length, 0, 'four denials are below the threshold of five');
    h.deny('mallory');
    assert.equal(h.alerts.length, 1);
    const a = h.alerts[0]!;
    assert.equal(a.rule, 'denials');
    assert.equal(a.subject, 'mallory');
    assert.equal(a.triggerIndex, 4);
    assert.deepEqual(a.facts, { count: '5', threshold: '5', window_seconds: '60', last_operation: 'keys.Decrypt', last_code: 'PERMISSION_DENIED' });
    assert.match(a.summary, /5 denied calls by mallory within 60 s/);
  });

  it('raises no second alert for the same principal within the window, and one again after it', () => {
    const h = harness();
    for (let i = 0; i < 5; i++) h.deny('mallory');
    assert.equal(h.alerts.length, 1);
    for (let i = 0; i < 30; i++) {
      h.advance(1_000);
      h.deny('mallory');
    }
    assert.equal(h.alerts.length, 1, 'an ongoing attempt is one alert per window, not a storm');
    h.advance(31_000);
    h.deny('mallory');
    assert.equal(h.alerts.length, 2, 'still denied a window later: alerted again');
    assert.ok(Number(h.alerts[1]!.facts.count) >= 5);
  });

  it('counts each principal on its own, and only PERMISSION_DENIED / UNAUTHENTICATED', () => {
    const h = harness();
    for (let i = 0; i < 4; i++) {
      h.deny('mallory');
      h.deny('trudy', 'UNAUTHENTICATED');
      h.feed({ principal: 'eve', operation: 'keys.Decrypt', result: 'error', code: 'FAILED_PRECONDITION' });
      // A custodian refusing a ceremony is a decision, not an authorization failure.
      h.feed({ principal: 'custodian-1', operation: 'ceremony.destroy-key.denied', result: 'denied', code: '' });
    }
    h.feed({ principal: 'custodian-1', operation: 'ceremony.destroy-key.denied', result: 'denied', code: '' });
    assert.equal(h.alerts.length, 0);
    h.deny('trudy', 'UNAUTHENTICATED');
    assert.deepEqual(h.alerts.map((a) => a.subject), ['trudy']);
  });

  it('does not fire for denials spread wider than the window', () => {
    const h = harness();
    for (let i = 0; i < 20; i++) {
      h.deny('slow');
      h.advance(20_000); // at most 3 in any 60 s
    }
    assert.equal(h.alerts.length, 0);
  });

  it('follows its configuration: threshold, window, off', () => {
    const h = harness({ denials: { threshold: 2, windowSeconds: 5 } });
    h.deny('a');
    h.advance(6_000);
    h.deny('a');
    assert.equal(h.alerts.length, 0, 'two denials 6 s apart are not two within 5 s');
    h.deny('a');
    assert.equal(h.alerts.length, 1);
    const off = harness({ denials: { enabled: false } });
    for (let i = 0; i < 50; i++) off.deny('a');
    assert.equal(off.alerts.length, 0);
  });

  it('does not count backlog: denials delivered long after they happened', () => {
    const h = harness();
    const old = new Date(T0 - 10 * 60_000).toISOString();
    for (let i = 0; i < 10; i++) h.feed({ principal: 'mallory', operation: 'keys.Decrypt', result: 'denied', code: 'PERMISSION_DENIED', time: old });
    assert.equal(h.alerts.length, 0);
  });

  it('tracks at most maxPrincipals principals', () => {
    const h = harness({ maxPrincipals: 3 });
    for (let i = 0; i < 1000; i++) h.deny(`p${i}`);
    assert.equal(h.engine.trackedPrincipals, 3);
    for (let i = 0; i < 5; i++) h.deny('p999');
    assert.equal(h.alerts.length, 1, 'the most recent principals keep their counts');
  });
});

describe('refusals rule', () => {
  it('fires once for each refused ceremony at a custodian and each refused vouch, never for successes', () => {
    const h = harness();
    h.feed({ principal: 'coordinator-2', operation: 'custodian.ProposeCeremony', ceremony_id: 'cer-1', details: { operation: 'join' } }); // released: no alert
    h.feed({ principal: 'coordinator-2', operation: 'custodian.ProposeCeremony', ceremony_id: 'cer-2', result: 'error', code: 'FAILED_PRECONDITION', details: { operation: 'join' } });
    h.feed({ principal: 'coordinator-1', operation: 'ceremony.join.vouch_refused', ceremony_id: 'cer-3', result: 'denied', code: 'FAILED_PRECONDITION' });
    assert.deepEqual(
      h.alerts.map((a) => [a.rule, a.facts.trigger_operation, a.facts.code, a.subject, a.ceremonyId]),
      [
        ['refusals', 'custodian.ProposeCeremony', 'FAILED_PRECONDITION', 'coordinator-2', 'cer-2'],
        ['refusals', 'ceremony.join.vouch_refused', 'FAILED_PRECONDITION', 'coordinator-1', 'cer-3'],
      ],
    );
    assert.equal(h.alerts[0]!.summary, 'custodian.ProposeCeremony refused by coordinator-2 (ceremony cer-2)');
    const off = harness({ refusals: { enabled: false } });
    off.feed({ principal: 'coordinator-2', operation: 'custodian.ProposeCeremony', result: 'error', code: 'FAILED_PRECONDITION' });
    assert.equal(off.alerts.length, 0);
  });
});

describe('integrity rule', () => {
  it('fires for each record a coordinator refused by its integrity check, whatever the result, naming the record', () => {
    const h = harness();
    h.feed({ principal: 'coordinator-1', source: 'coordinator-1', operation: 'integrity.record_refused', result: 'error', code: 'FAILED_PRECONDITION', key_id: 'k_1', details: { record: 'keys/k_1', reason: 'MAC mismatch' } });
    h.feed({ principal: 'coordinator-2', source: 'coordinator-2', operation: 'integrity.record_refused', result: 'error', code: 'FAILED_PRECONDITION', details: { record: 'seal-epoch', reason: 'no MAC' } });
    h.feed({ principal: 'admin', operation: 'keys.UpdateKey', result: 'error', code: 'FAILED_PRECONDITION' });
    assert.deepEqual(
      h.alerts.map((a) => [a.rule, a.subject, a.keyId, a.facts.record, a.facts.reason]),
      [
        ['integrity', 'coordinator-1', 'k_1', 'keys/k_1', 'MAC mismatch'],
        ['integrity', 'coordinator-2', '', 'seal-epoch', 'no MAC'],
      ],
    );
    assert.match(h.alerts[0]!.summary, /coordinator-1 refused record keys\/k_1/);
  });

  it('can be turned off', () => {
    const h = harness({ integrity: { enabled: false, operations: ['integrity.record_refused'] } });
    h.feed({ principal: 'coordinator-1', operation: 'integrity.record_refused', result: 'error', details: { record: 'keys/k_1' } });
    assert.equal(h.alerts.length, 0);
  });
});

describe('destroy rule', () => {
  it('fires for each destroy ceremony opened or completed and each scheduled destruction', () => {
    const h = harness();
    h.feed({ principal: 'admin', operation: 'keys.ScheduleKeyDestruction', key_id: 'k_1' });
    h.feed({ principal: 'admin', operation: 'ceremony.destroy-key.created', ceremony_id: 'c_1', details: { key_id: 'k_1', key_name: 'payments' } });
    h.feed({ principal: 'custodian-1', operation: 'ceremony.destroy-key.approved', ceremony_id: 'c_1' });
    h.feed({ principal: 'admin', operation: 'ceremony.destroy-key.executing', ceremony_id: 'c_1' });
    h.feed({ principal: 'admin', operation: 'ceremony.destroy-key.completed', ceremony_id: 'c_1', details: { key_id: 'k_1', revision: '9' } });
    h.feed({ principal: 'admin', operation: 'ceremony.destroy-cluster.created', ceremony_id: 'c_2' });
    assert.deepEqual(
      h.alerts.map((a) => [a.rule, a.facts.trigger_operation, a.subject, a.keyId, a.ceremonyId]),
      [
        ['destroy', 'keys.ScheduleKeyDestruction', 'admin', 'k_1', ''],
        ['destroy', 'ceremony.destroy-key.created', 'admin', 'k_1', 'c_1'],
        ['destroy', 'ceremony.destroy-key.completed', 'admin', 'k_1', 'c_1'],
        ['destroy', 'ceremony.destroy-cluster.created', 'admin', '', 'c_2'],
      ],
    );
    assert.equal(h.alerts[2]!.summary, 'ceremony.destroy-key.completed by admin (key k_1)');
  });

  it('ignores refused and failed attempts (the denials rule sees those), and can be turned off', () => {
    const h = harness();
    h.feed({ principal: 'app', operation: 'keys.ScheduleKeyDestruction', result: 'denied', code: 'PERMISSION_DENIED' });
    h.feed({ principal: 'admin', operation: 'ceremony.destroy-key.failed', result: 'error' });
    h.feed({ principal: 'admin', operation: 'ceremony.reshare.completed' });
    assert.equal(h.alerts.length, 0);
    const off = harness({ destroy: { enabled: false } });
    off.feed({ principal: 'admin', operation: 'ceremony.destroy-cluster.completed' });
    assert.equal(off.alerts.length, 0);
  });

  it('fires for a destroy even when it is delivered late', () => {
    const h = harness();
    h.feed({ principal: 'admin', operation: 'ceremony.destroy-cluster.completed', time: new Date(T0 - 3_600_000).toISOString() });
    assert.equal(h.alerts.length, 1);
  });
});

describe('decryptSpike rule', () => {
  /** `perSecond` decrypts a second for `seconds`, spread evenly. */
  const traffic = (h: ReturnType<typeof harness>, perSecond: number, seconds: number, operation = 'keys.Decrypt') => {
    for (let s = 0; s < seconds; s++) {
      for (let i = 0; i < perSecond; i++) h.feed({ principal: 'app', operation });
      h.advance(1_000);
    }
  };

  it('fires once when the rate jumps past factor × baseline, re-arms when it falls back', () => {
    const h = harness();
    traffic(h, 10, 310); // a steady 10/s baseline
    assert.equal(h.alerts.length, 0);
    traffic(h, 100, 5); // 10× the baseline: fires when the 10 s rate passes 5 × ~10/s
    assert.equal(h.alerts.length, 1);
    const a = h.alerts[0]!;
    assert.equal(a.rule, 'decryptSpike');
    assert.ok(Number(a.facts.rate_per_second) > 5 * Number(a.facts.baseline_per_second), JSON.stringify(a.facts));
    assert.ok(Number(a.facts.rate_per_second) >= 20);
    traffic(h, 100, 5);
    assert.equal(h.alerts.length, 1, 'the same spike alerts once');
    traffic(h, 10, 60); // back to normal: re-armed
    assert.equal(h.alerts.length, 1);
    traffic(h, 150, 10);
    assert.equal(h.alerts.length, 2, 'a new spike alerts again');
  });

  it('does not fire below the factor, below the minimum rate, or before a whole baseline was seen', () => {
    const steady = harness();
    traffic(steady, 20, 310);
    traffic(steady, 60, 20); // 3× < 5×
    assert.equal(steady.alerts.length, 0);

    const quiet = harness();
    for (let s = 0; s < 310; s += 10) {
      quiet.feed({ principal: 'app', operation: 'keys.Decrypt' }); // 0.1/s
      quiet.advance(10_000);
    }
    traffic(quiet, 10, 15); // 100× the baseline but only 10/s < minRatePerSecond 20
    assert.equal(quiet.alerts.length, 0);

    const starting = harness();
    traffic(starting, 200, 60); // right after start-up: no baseline yet
    assert.equal(starting.alerts.length, 0);
  });

  it('counts a DecryptBatch event as its items, and only the configured operations', () => {
    const h = harness();
    traffic(h, 2, 310);
    for (let s = 0; s < 10; s++) {
      h.feed({ principal: 'app', operation: 'keys.DecryptBatch', details: { items: '50', failed: '0' } });
      h.feed({ principal: 'app', operation: 'keys.Encrypt' });
      h.advance(1_000);
    }
    // Ten events in ten seconds would be 1/s; counted as their items they pass 20/s by the fourth.
    assert.equal(h.alerts.length, 1);
    assert.ok(Number(h.alerts[0]!.facts.count) >= 200, JSON.stringify(h.alerts[0]!.facts));

    const encrypts = harness();
    traffic(encrypts, 2, 310);
    traffic(encrypts, 200, 10, 'keys.Encrypt');
    assert.equal(encrypts.alerts.length, 0);
  });
});

describe('alert events', () => {
  it('are never themselves counted', () => {
    const h = harness({ denials: { threshold: 1 } });
    h.feed({ principal: 'audit-sink', operation: ALERT_OPERATION, result: 'denied', code: 'PERMISSION_DENIED' });
    assert.equal(h.alerts.length, 0);
  });
});

describe('alertReporter', () => {
  const fakeLogger = () => {
    const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
    const at = (level: string) => (obj: Record<string, unknown>, msg: string) => void lines.push({ level, obj, msg });
    return { lines, logger: { warn: at('warn'), error: at('error'), info: at('info'), debug: at('debug') } as unknown as Logger };
  };
  const alert: Alert = {
    rule: 'denials', summary: '5 denied calls by mallory within 60 s', subject: 'mallory', keyId: '', ceremonyId: '', triggerIndex: 41,
    facts: { count: '5', threshold: '5', window_seconds: '60', last_operation: 'keys.Decrypt', last_code: 'PERMISSION_DENIED' },
  };

  it('counts the alert, logs it at warn and appends an audit.alert event of the sink', async () => {
    const registry = new Registry();
    const alertsTotal = new Counter({ name: 'keyshard_audit_alerts_total', help: 'h', labelNames: ['rule'] as const, registers: [registry] });
    const { lines, logger } = fakeLogger();
    const appended: AuditEvent[][] = [];
    const report = alertReporter({ identity: 'audit-sink', append: async (e) => void appended.push(e), logger, alertsTotal, now: () => T0 });
    report(alert);
    assert.match(await registry.metrics(), /^keyshard_audit_alerts_total\{rule="denials"\} 1$/m);
    assert.deepEqual(lines.map((l) => [l.level, l.msg, l.obj.rule, l.obj.subject, l.obj.count]), [['warn', 'audit alert', 'denials', 'mallory', '5']]);
    assert.equal(appended.length, 1);
    const ev = appended[0]![0]!;
    assert.deepEqual({ ...ev, id: undefined }, {
      id: undefined, time: '2030-01-01T00:00:00.000Z', source: 'audit-sink', principal: 'audit-sink', operation: 'audit.alert', key_id: '', ceremony_id: '',
      result: 'ok', code: '', request_id: '',
      details: { rule: 'denials', summary: alert.summary, subject: 'mallory', trigger_index: '41', ...alert.facts },
    });
    assert.match(ev.id, /^[0-9a-f-]{36}$/);
  });

  it('logs an append that fails; the metric and log line stand', async () => {
    const registry = new Registry();
    const alertsTotal = new Counter({ name: 'keyshard_audit_alerts_total', help: 'h', labelNames: ['rule'] as const, registers: [registry] });
    const { lines, logger } = fakeLogger();
    alertReporter({ identity: 'audit-sink', append: () => Promise.reject(new Error('audit log is closed')), logger, alertsTotal })(alert);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(lines.map((l) => [l.level, l.msg]), [['warn', 'audit alert'], ['error', 'alert event could not be appended']]);
  });
});

describe('alerts through a real AuditLog', () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('the alert event is appended to the Merkle log, after the events that caused it, and causes no further alert', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'alerts-'));
    dirs.push(dir);
    const { logger } = fakeLoggerSilent();
    const alertsTotal = new Counter({ name: 'keyshard_audit_alerts_total', help: 'h', labelNames: ['rule'] as const, registers: [] });
    let log: AuditLog | undefined;
    const engine = new AlertEngine(parseConfig(alertRulesSchema, { denials: { threshold: 3 } }), alertReporter({ identity: 'audit-sink', append: (e) => log!.append(e), logger, alertsTotal }));
    log = await AuditLog.open(dir, { signer: signerFromKey(generateKeyPairSync('ed25519').privateKey), onCommitted: (r) => engine.observe(r) });
    const denial = (i: number) => ({
      id: `d${i}`, time: new Date().toISOString(), source: 'coordinator-1', principal: 'mallory', operation: 'keys.Decrypt', key_id: 'k_1', ceremony_id: '',
      result: 'denied', code: 'PERMISSION_DENIED', request_id: '', details: {},
    });
    await log.append([denial(0), denial(1), denial(2)]);
    await log.append([denial(2)]); // a resent duplicate is neither stored nor counted again
    while (log.size < 4) await log.waitForGrowth(log.size);
    await new Promise((r) => setTimeout(r, 50));
    const records = [];
    for await (const r of log.records()) records.push(r);
    await log.close();
    assert.deepEqual(records.map((r) => r.event.operation), ['keys.Decrypt', 'keys.Decrypt', 'keys.Decrypt', 'audit.alert']);
    const ev = records[3]!.event as unknown as AuditEvent;
    assert.equal(ev.principal, 'audit-sink');
    assert.equal(ev.details.subject, 'mallory');
    assert.equal(ev.details.trigger_index, '2');
  });
});

function fakeLoggerSilent() {
  const noop = () => {};
  return { logger: { warn: noop, error: noop, info: noop, debug: noop } as unknown as Logger };
}
