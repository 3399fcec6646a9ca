import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ALERT_OPERATION, APPEND_REFUSED_OPERATION, APPENDER_SCOPES, SCOPE_OPERATION_PREFIXES, SINK_OPERATIONS, isAppenderScope, scopeAllows } from './index.ts';

describe('appender scopes', () => {
  it('a coordinator records key, ceremony, backup, restore, cluster, integrity and witness events, nothing of a custodian or the sink', () => {
    for (const op of [
      'keys.Encrypt', 'keys.Decrypt', 'keys.CreateKey.requested', 'keys.rotation.usage', 'keys.rotation.scheduled',
      'ceremony.StartCeremony', 'ceremony.destroy-key.completed', 'ceremony.join.vouch_refused', 'backup.CreateBackup', 'backup.scheduled',
      'restore.completed', 'cluster.seal_epoch.raised', 'cluster.seal_notice.sent', 'integrity.record_refused', 'witness.cosigned',
    ]) assert.equal(scopeAllows('coordinator', op), true, op);
    for (const op of ['custodian.ProposeCeremony', 'custodian.ReleaseShares.requested', ALERT_OPERATION, APPEND_REFUSED_OPERATION, 'audit.anything', 'keys', 'keys.', 'Keys.Decrypt', 'admin.Decrypt', '', 'x.keys.Decrypt']) {
      assert.equal(scopeAllows('coordinator', op), false, op);
    }
  });

  it('a custodian records only custodian events: not `keys.Decrypt` by admin, not a ceremony step, not the sink\'s', () => {
    for (const op of ['custodian.ProposeCeremony', 'custodian.ProposeCeremony.requested', 'custodian.GetStatus']) assert.equal(scopeAllows('custodian', op), true, op);
    for (const op of ['keys.Decrypt', 'ceremony.unseal.completed', 'integrity.record_refused', 'witness.cosigned', ALERT_OPERATION, APPEND_REFUSED_OPERATION, 'custodian.', 'custodian', 'custodians.X']) {
      assert.equal(scopeAllows('custodian', op), false, op);
    }
  });

  it('no prefix of one scope overlaps another scope\'s or the sink\'s, and every prefix ends with a dot', () => {
    const all = APPENDER_SCOPES.flatMap((s) => SCOPE_OPERATION_PREFIXES[s].map((p) => [s, p] as const));
    for (const [s, p] of all) {
      assert.match(p, /^[a-z]+\.$/, p);
      assert.ok(!'audit.'.startsWith(p) && !p.startsWith('audit.'), p);
      for (const [t, q] of all) if (s !== t) assert.ok(!p.startsWith(q) && !q.startsWith(p), `${s} ${p} / ${t} ${q}`);
    }
    for (const op of SINK_OPERATIONS) for (const s of APPENDER_SCOPES) assert.equal(scopeAllows(s, op), false, `${s} ${op}`);
  });

  it('isAppenderScope names exactly the scopes', () => {
    assert.deepEqual([...APPENDER_SCOPES], ['coordinator', 'custodian']);
    assert.equal(isAppenderScope('custodian'), true);
    for (const v of ['sink', 'Coordinator', '', undefined, 1]) assert.equal(isAppenderScope(v), false, String(v));
  });
});
