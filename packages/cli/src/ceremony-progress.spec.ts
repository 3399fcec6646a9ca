/** Ceremony progress as the CLI prints it: clamped to the threshold, each refusal (with its reason) and denial once; an end as the SDK's typed error. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DeadlineExceededError, FailedPreconditionError, type Ceremony, type KeyshardClient } from '@keyshard/client';
import { ceremonyReporter, followCeremony, refusalLine, tally } from './ceremony-progress.ts';
import { errorLine } from './output.ts';

const ceremony = (over: Partial<Ceremony>): Ceremony => ({
  id: 'cer-1', operation: 'reshare', cluster_id: 'c', initiator: 'admin', created_at: '', expires_at: '', hash: '', state: 'CEREMONY_STATE_OPEN',
  threshold: 3, approved_by: [], failures: [], denied_by: [], error: '', error_reason: '', parameters: {}, recipients: [], nonce: '', ...over,
});
const wrongCluster = { custodian_id: 'custodian-4', reason: 'custodian custodian-4: ceremony cer-1 belongs to another cluster', error_reason: 'WRONG_CLUSTER' };

describe('ceremony progress', () => {
  it('never shows more approvals than the threshold', () => {
    assert.equal(tally(ceremony({ approved_by: ['a', 'b'] })), '2/3');
    assert.equal(tally(ceremony({ approved_by: ['a', 'b', 'c', 'd', 'e'] })), '3/3', 'reshare printed approvals 5/3');
  });

  it('prints the progress line when it changes, and each refusal (with its reason) and denial once, as it arrives', () => {
    const lines: string[] = [];
    const report = ceremonyReporter(undefined, (l) => lines.push(l));
    report(ceremony({}));
    report(ceremony({}));
    report(ceremony({ failures: [wrongCluster] }));
    report(ceremony({ approved_by: ['a'], failures: [wrongCluster], denied_by: ['custodian-5'] }));
    report(ceremony({ approved_by: ['a', 'b', 'c', 'd'], failures: [wrongCluster], denied_by: ['custodian-5'] }));
    assert.deepEqual(lines, [
      'approvals 0/3',
      '  refused by custodian-4: WRONG_CLUSTER: ceremony cer-1 belongs to another cluster',
      'approvals 1/3',
      '  denied by custodian-5',
      'approvals 3/3',
    ]);
  });

  it('a refusal recorded by an older coordinator (no reason) is printed with its words only', () => {
    assert.equal(refusalLine({ custodian_id: 'custodian-4', reason: 'belongs to another cluster', error_reason: '' }), '  refused by custodian-4: belongs to another cluster');
  });
});

describe('followCeremony', () => {
  /** FAKE client: getCeremony answers from a script, the last answer repeating. */
  const client = (...script: Ceremony[]) => ({ getCeremony: async () => (script.length > 1 ? script.shift()! : script[0]!) }) as unknown as KeyshardClient;
  const quiet = () => {};

  it('resolves with the completed ceremony', async () => {
    const done = ceremony({ state: 'CEREMONY_STATE_COMPLETED', approved_by: ['a', 'b', 'c'] });
    assert.equal(await followCeremony(client(done), ceremony({}), quiet), done);
  });

  it('a failed ceremony rejects with the SDK\'s typed error: its reason, the refusals in the metadata; --json shows them', async () => {
    const failed = ceremony({
      operation: 'unseal', state: 'CEREMONY_STATE_FAILED', error: 'only 1 valid shares can still be collected, 2 needed', error_reason: 'QUORUM_NOT_MET',
      failures: [{ custodian_id: 'custodian-2', reason: 'no transport key enrolled', error_reason: 'NOT_ENROLLED' }, { ...wrongCluster }],
    });
    const e = await followCeremony(client(failed), ceremony({}), quiet).then(() => assert.fail('resolved'), (x: unknown) => x);
    assert.ok(e instanceof FailedPreconditionError);
    assert.deepEqual([e.code, e.reason, e.metadata.failures], ['FAILED_PRECONDITION', 'QUORUM_NOT_MET', 'custodian-2=NOT_ENROLLED,custodian-4=WRONG_CLUSTER']);
    assert.equal(errorLine(e, false), 'keyshard: QUORUM_NOT_MET: unseal ceremony cer-1 failed: only 1 valid shares can still be collected, 2 needed');
    const json = JSON.parse(errorLine(e, true));
    assert.deepEqual([json.code, json.reason], ['FAILED_PRECONDITION', 'QUORUM_NOT_MET'], 'not {"code":"UNKNOWN","reason":"UNKNOWN"}');
  });

  it('an expired or cancelled ceremony rejects with CEREMONY_EXPIRED or CANCELLED', async () => {
    for (const [state, reason] of [['CEREMONY_STATE_EXPIRED', 'CEREMONY_EXPIRED'], ['CEREMONY_STATE_CANCELLED', 'CANCELLED']] as const)
      await assert.rejects(followCeremony(client(ceremony({ state, error_reason: reason })), ceremony({}), quiet), (e: unknown) => e instanceof FailedPreconditionError && e.reason === reason);
  });

  it('a ceremony still open after the timeout rejects with DeadlineExceededError', async () => {
    await assert.rejects(followCeremony(client(ceremony({})), ceremony({}), quiet, 0), (e: unknown) => e instanceof DeadlineExceededError && e.reason === 'DEADLINE_EXCEEDED');
  });
});
