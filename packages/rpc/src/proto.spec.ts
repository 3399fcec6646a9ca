/**
 * The generated types (npm run gen:proto) describe what the runtime codec produces: messages
 * encoded and decoded through keyshardProto()'s own method definitions, with LOADER_OPTIONS,
 * come out as their `__Output` types say — snake_case fields, enums as names, uint64 as numbers,
 * absent messages null, absent scalars, lists and maps filled with defaults. Each assignment to
 * a generated type below is checked by the type check; the asserts check the values.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { keyshardProto, LOADER_OPTIONS, type pb } from './proto.ts';

/** A message through the wire as a client sends it and a server receives it, and back. */
function roundTrip<Req, ReqOut, Res, ResOut>(m: { requestSerialize(v: Req): Buffer; requestDeserialize(b: Buffer): ReqOut; responseSerialize(v: Res): Buffer; responseDeserialize(b: Buffer): ResOut }) {
  return { request: (v: Req): ReqOut => m.requestDeserialize(m.requestSerialize(v)), response: (v: Res): ResOut => m.responseDeserialize(m.responseSerialize(v)) };
}

describe('generated types and the runtime codec', () => {
  it('uint64 is a number both ways (longs: Number); a value beyond 2^53 decodes to a number that is not a safe integer', () => {
    assert.equal(LOADER_OPTIONS.longs, Number);
    const m = roundTrip(keyshardProto().KeyService.service.SetRotationPolicy);
    const req: pb.SetRotationPolicyRequest__Output = m.request({ key: 'k', rotation: { period_seconds: 86_400 } });
    assert.equal(req.rotation?.period_seconds, 86_400);
    const huge = m.request({ key: 'k', rotation: { period_seconds: '18446744073709551615' } });
    assert.equal(typeof huge.rotation?.period_seconds, 'number');
    assert.equal(Number.isSafeInteger(huge.rotation?.period_seconds), false);
    const over = m.request({ key: 'k', rotation: { period_seconds: '9007199254740993' } }); // 2^53 + 1
    assert.equal(Number.isSafeInteger(over.rotation?.period_seconds), false);
  });

  it('a Key comes out with every field, enums as names, versions and counters as numbers', () => {
    const m = roundTrip(keyshardProto().KeyService.service.GetKey);
    const key: pb.Key__Output = m.response({ id: 'k_1', state: 'KEY_STATE_DISABLED', versions: [{ version: 1, encryptions: 42 }] });
    assert.equal(key.state, 'KEY_STATE_DISABLED');
    const state: pb.KeyState__Output = key.state;
    assert.ok(['KEY_STATE_ENABLED', 'KEY_STATE_DISABLED'].includes(state));
    assert.deepEqual(key.versions, [{ version: 1, created_at: '', last_used_at: '', encryptions: 42 }]);
    assert.deepEqual([key.name, key.labels, key.primary_version, key.rotation, key.policy], ['', {}, 0, null, null]);
    // An unset enum is its zero name.
    assert.equal(m.response({}).state, 'KEY_STATE_UNSPECIFIED');
  });

  it('requests decode with defaults: bytes as Buffer, maps as objects, absent nested messages null', () => {
    const enc = roundTrip(keyshardProto().KeyService.service.Encrypt).request({ key: 'k', plaintext: Buffer.from('hi') });
    const typed: pb.EncryptRequest__Output = enc;
    assert.ok(Buffer.isBuffer(typed.plaintext));
    assert.deepEqual(typed.context, {});
    const propose: pb.ProposeRequest__Output = roundTrip(keyshardProto().CustodianService.service.ProposeCeremony).request({});
    assert.deepEqual([propose.ceremony, propose.vouch], [null, null]);
  });

  it('a streamed AppendResponse carries numbers for its sizes, and a Ceremony its state name', () => {
    const append = roundTrip(keyshardProto().AuditService.service.Append).response({ batch: 7, first_index: 3, count: 2, tree_size: 5 });
    const ack: pb.AppendResponse__Output = append;
    assert.deepEqual([ack.batch, ack.first_index, ack.count, ack.tree_size, ack.checkpoint, ack.consistency_proof], [7, 3, 2, 5, null, []]);
    const c: pb.Ceremony__Output = roundTrip(keyshardProto().CeremonyService.service.GetCeremony).response({ id: 'c', state: 'CEREMONY_STATE_OPEN', threshold: 2 });
    assert.deepEqual([c.state, c.threshold, c.approved_by, c.parameters], ['CEREMONY_STATE_OPEN', 2, [], {}]);
  });
});
