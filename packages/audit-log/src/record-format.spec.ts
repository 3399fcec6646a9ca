import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { canonicalJson } from '@keyshard/crypto';
import { canonicalEventJson, checkRecord, encodeEntry, encodeRecord, encodeRecords, fastRecordCheck, fullRecordCheck } from './record-format.ts';
import { leafHash } from './merkle.ts';

const str = fc.string({ unit: 'binary', maxLength: 12 });
const auditEvent = fc.record({
  id: str, time: str, source: str, principal: str, operation: str, key_id: str, ceremony_id: str, result: str, code: str, request_id: str,
  details: fc.dictionary(str, str, { maxKeys: 5 }),
});

describe('record format', () => {
  it("the audit event fast path gives canonicalJson's exact bytes, and other shapes fall back to it", () => {
    fc.assert(fc.property(auditEvent, (e) => canonicalEventJson(e) === canonicalJson(e)), { numRuns: 300 });
    fc.assert(fc.property(fc.dictionary(str, fc.oneof(str, fc.integer(), fc.dictionary(str, str))), (e) => canonicalEventJson(e) === canonicalJson(e)), { numRuns: 300 });
  });

  it('encodeRecords writes exactly the encodeRecord lines, with the leaf of the canonical event; checkRecord accepts each', () => {
    fc.assert(
      fc.property(fc.array(auditEvent, { minLength: 1, maxLength: 5 }), fc.nat({ max: 2 ** 40 }), (raw, first) => {
        const events = raw.map((e, i) => ({ ...e, id: `${i}${e.id}` })); // a stored event has an id
        const entries = events.map(encodeEntry);
        const expected = events.map((e, i) => encodeRecord(first + i, leafHash(canonicalJson(e)), canonicalJson(e))).join('');
        const buf = encodeRecords(first, entries);
        assert.equal(buf.toString('utf8'), expected);
        entries.forEach((x, i) => assert.equal(x.leaf.toString('hex'), leafHash(canonicalJson(events[i]!)).toString('hex')));
        const lines = expected.split('\n').slice(0, -1);
        lines.forEach((l, i) => assert.ok(!('reason' in checkRecord(Buffer.from(`${l}\n`), first + i))));
      }),
      { numRuns: 200 },
    );
  });

  it('a record line round-trips through checkRecord; any other spelling of it does not', () => {
    const ev = { id: 'a', operation: 'keys.Encrypt', details: { b: '1', a: '2' } };
    const json = canonicalJson(ev);
    const line = Buffer.from(encodeRecord(4, leafHash(json), json));
    assert.deepEqual(checkRecord(line, 4), { event: JSON.parse(json), leaf: leafHash(json) });
    assert.match((checkRecord(line, 5) as { reason: string }).reason, /expected index 5, found 4/);
    const spaced = Buffer.from(line.toString().replace('"index":4,', '"index": 4,'));
    assert.match((checkRecord(spaced, 4) as { reason: string }).reason, /canonical form/);
  });

  it('the fast path accepts every line encodeRecord writes, and nothing the full check refuses', () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bits: fc.integer({ min: 1, max: 255 }) }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), byte: fc.constantFrom(0x20, 0x22, 0x5c, 0x30, 0x7d, 0xc3, 0xff) }),
      fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }),
    );
    fc.assert(
      fc.property(auditEvent, fc.nat({ max: 2 ** 40 }), fc.array(mutation, { maxLength: 2 }), fc.boolean(), (raw, index, mutations, otherIndex) => {
        const event = { ...raw, id: `x${raw.id}` };
        const json = canonicalJson(event);
        const line = Buffer.from(encodeRecord(index, leafHash(json), json));
        const fast = fastRecordCheck(line, index);
        assert.ok(fast, 'a canonical line takes the fast path');
        assert.deepEqual(fast, fullRecordCheck(line, index));
        let bad: Buffer = line;
        for (const m of mutations) {
          const at = m.at % bad.length;
          if (m.kind === 'flip') {
            bad = Buffer.from(bad);
            bad[at] = bad[at]! ^ m.bits;
          }
          else if (m.kind === 'insert') bad = Buffer.concat([bad.subarray(0, at), Buffer.from([m.byte]), bad.subarray(at)]);
          else bad = Buffer.concat([bad.subarray(0, at), bad.subarray(at + 1)]);
        }
        const expected = otherIndex ? index + 1 : index;
        const accepted = fastRecordCheck(bad, expected);
        const full = fullRecordCheck(bad, expected);
        if (accepted) assert.deepEqual(accepted, full, 'the fast path accepted a line the full check refuses or reads otherwise');
        assert.deepEqual(checkRecord(bad, expected), full);
      }),
      { numRuns: 3000 },
    );
  });
});
