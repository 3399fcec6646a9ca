/** Ceremony progress as the CLI prints it: clamped to the threshold, each refusal and denial once. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Ceremony } from '@keyshard/client';
import { ceremonyReporter, tally } from './ceremony-progress.ts';

const ceremony = (over: Partial<Ceremony>): Ceremony => ({
  id: 'cer-1', operation: 'reshare', cluster_id: 'c', initiator: 'admin', created_at: '', expires_at: '', hash: '', state: 'CEREMONY_STATE_OPEN',
  threshold: 3, approved_by: [], failures: [], denied_by: [], error: '', parameters: {}, recipients: [], nonce: '', ...over,
});

describe('ceremony progress', () => {
  it('never shows more approvals than the threshold', () => {
    assert.equal(tally(ceremony({ approved_by: ['a', 'b'] })), '2/3');
    assert.equal(tally(ceremony({ approved_by: ['a', 'b', 'c', 'd', 'e'] })), '3/3', 'reshare printed approvals 5/3');
  });

  it('prints the progress line when it changes, and each refusal and denial once, as it arrives', () => {
    const lines: string[] = [];
    const report = ceremonyReporter(undefined, (l) => lines.push(l));
    report(ceremony({}));
    report(ceremony({}));
    report(ceremony({ failures: [{ custodian_id: 'custodian-4', reason: 'belongs to another cluster' }] }));
    report(ceremony({ approved_by: ['a'], failures: [{ custodian_id: 'custodian-4', reason: 'belongs to another cluster' }], denied_by: ['custodian-5'] }));
    report(ceremony({ approved_by: ['a', 'b', 'c', 'd'], failures: [{ custodian_id: 'custodian-4', reason: 'belongs to another cluster' }], denied_by: ['custodian-5'] }));
    assert.deepEqual(lines, [
      'approvals 0/3',
      '  refused by custodian-4: belongs to another cluster',
      'approvals 1/3',
      '  denied by custodian-5',
      'approvals 3/3',
    ]);
  });
});
