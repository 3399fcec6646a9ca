/**
 * Request field limits (issue 17): every request type of every service loads with well-formed
 * `(keyshard.v1.field)` options, every string leaf (nested, repeated, map keys and values) has a
 * maximum, the documented maxima are what the protos say, and a broken limit is refused
 * INVALID_ARGUMENT FIELD_TOO_LONG / TOO_MANY_ENTRIES naming the path and limit, never the value.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { KeyshardError } from '@keyshard/errors';
import { DEFAULT_MAX_COUNT, DEFAULT_MAX_LENGTH, checkFieldLimits, fieldLimits, limitOf, loadProtoRoot, requestLimitCheck, requestTypes, type FieldLimit } from './field-limits.ts';
import { SERVICE_NAMES } from './proto.ts';

/** Every string leaf under `type`, as `path: limits` (maps: key and value), walking nested messages. */
function leaves(type: string, prefix = '', seen = new Set<string>()): string[] {
  if (seen.has(type)) return [];
  const out: string[] = [];
  for (const f of fieldLimits(type)) {
    const p = `${prefix}${f.name}`;
    if (f.maxKeyLength !== undefined) out.push(`${p}{key}<=${f.maxKeyLength}`);
    if (f.maxLength !== undefined) out.push(`${p}${f.map ? '{value}' : f.repeated ? '[]' : ''}<=${f.maxLength}`);
    if (f.messageType) out.push(...leaves(f.messageType, `${p}${f.map ? '{value}' : f.repeated ? '[]' : ''}.`, new Set([...seen, type])));
  }
  return out;
}

const refusal = (fn: () => void) => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof KeyshardError, String(e));
    return e;
  }
  assert.fail('not refused');
};

describe('field limits', () => {
  it('every request type of every service loads, and every string, repeated and map field in it is bounded', () => {
    let strings = 0;
    for (const service of SERVICE_NAMES) {
      for (const [method, type] of requestTypes(service)) {
        for (const leaf of leaves(type)) {
          strings++;
          assert.match(leaf, /<=[1-9]\d*$/, `${service}.${method} ${leaf}`);
        }
        const walk = (t: string, seen: Set<string>): void => {
          if (seen.has(t)) return;
          for (const f of fieldLimits(t)) {
            if (f.repeated || f.map) assert.ok(f.maxCount! > 0, `${service}.${method} ${t}.${f.name} has a max_count`);
            if (f.messageType) walk(f.messageType, new Set([...seen, t]));
          }
        };
        walk(type, new Set());
      }
    }
    assert.ok(strings > 100, `only ${strings} string leaves found: the walk is broken`);
  });

  it('the documented maxima (keys.proto, ceremony.proto, custodian.proto, audit.proto, README)', () => {
    const leafSet = (type: string) => new Set(leaves(type));
    assert.ok(leafSet('keyshard.v1.EncryptRequest').has(`key<=${DEFAULT_MAX_LENGTH}`));
    assert.ok(leafSet('keyshard.v1.EncryptRequest').has('context{key}<=1024'));
    assert.ok(leafSet('keyshard.v1.EncryptRequest').has('context{value}<=1024'));
    assert.ok(leafSet('keyshard.v1.CreateKeyRequest').has('description<=1024'));
    assert.ok(leafSet('keyshard.v1.CreateKeyRequest').has('labels{key}<=63'));
    assert.ok(leafSet('keyshard.v1.CreateKeyRequest').has('policy.grants{value}.principals[]<=128'));
    assert.ok(leafSet('keyshard.v1.ProposeRequest').has('ceremony.recipients[].public_key_pem<=16384'));
    assert.ok(leafSet('keyshard.v1.ProposeRequest').has('ceremony.parameters{value}<=16384'));
    assert.ok(leafSet('keyshard.v1.EnrollTransportKeyRequest').has('public_key_pem<=16384'));
    assert.ok(leafSet('keyshard.v1.EnrollTransportKeyRequest').has(`so_pin<=${DEFAULT_MAX_LENGTH}`));
    assert.ok(leafSet('keyshard.v1.ImportShareRequest').has('peers_json<=262144'));
    assert.ok(leafSet('keyshard.v1.HashValueRequest').has('value<=4096'));
    const count = (type: string, name: string) => fieldLimits(type).find((f) => f.name === name)?.maxCount;
    assert.equal(count('keyshard.v1.EncryptBatchRequest', 'items'), 1000);
    assert.equal(count('keyshard.v1.EncryptRequest', 'context'), 32);
    assert.equal(count('keyshard.v1.DecryptRequest', 'context'), 64);
    assert.equal(count('keyshard.v1.CreateKeyRequest', 'labels'), 64);
    assert.equal(count('keyshard.v1.PrincipalList', 'principals'), 64);
    assert.equal(count('keyshard.v1.InitRequest', 'custodians'), DEFAULT_MAX_COUNT);
  });

  it('a value at its limit passes; one character more is refused FIELD_TOO_LONG naming the field, not the value', () => {
    checkFieldLimits('keyshard.v1.GetKeyRequest', { key: 'k'.repeat(DEFAULT_MAX_LENGTH) });
    const secret = `s3cr3t-${'x'.repeat(DEFAULT_MAX_LENGTH)}`;
    const e = refusal(() => checkFieldLimits('keyshard.v1.GetKeyRequest', { key: secret }));
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.equal(e.reason, 'FIELD_TOO_LONG');
    assert.equal(e.message, `key is ${secret.length} characters long; at most ${DEFAULT_MAX_LENGTH}`);
    assert.deepEqual(e.metadata, { field: 'key', max_length: String(DEFAULT_MAX_LENGTH) });
  });

  it('nested, repeated and map paths: items[i].context key and value, map entries by position, counts', () => {
    const big = 'v'.repeat(1025);
    const batch = { items: [{ key: 'a', context: {} }, { key: 'b', context: { ok: 'x', [big]: 'y' } }] };
    let e = refusal(() => checkFieldLimits('keyshard.v1.EncryptBatchRequest', batch));
    assert.equal(e.reason, 'FIELD_TOO_LONG');
    assert.deepEqual(e.metadata, { field: 'items[1].context', max_length: '1024', part: 'key' });
    assert.ok(!e.message.includes('vvvv'), e.message);

    e = refusal(() => checkFieldLimits('keyshard.v1.EncryptRequest', { key: 'a', context: { tenant: big } }));
    assert.deepEqual(e.metadata, { field: 'context', max_length: '1024', part: 'value' });
    assert.equal(e.message, 'a value of context is 1025 characters long; at most 1024');

    e = refusal(() => checkFieldLimits('keyshard.v1.CreateKeyRequest', { name: 'n', labels: {}, policy: { grants: { encrypt: { principals: ['app'] }, decrypt: { principals: ['app', 'p'.repeat(129)] } } } }));
    assert.deepEqual(e.metadata, { field: 'policy.grants[#1].principals[1]', max_length: '128' });

    const context = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v']));
    e = refusal(() => checkFieldLimits('keyshard.v1.EncryptRequest', { key: 'a', context }));
    assert.equal(e.reason, 'TOO_MANY_ENTRIES');
    assert.deepEqual(e.metadata, { field: 'context', max_count: '32' });
    checkFieldLimits('keyshard.v1.DecryptRequest', { context }); // 64 allowed there

    e = refusal(() => checkFieldLimits('keyshard.v1.EncryptBatchRequest', { items: Array.from({ length: 1001 }, () => ({ key: 'a' })) }));
    assert.equal(e.message, 'items has 1001 entries; at most 1000');

    e = refusal(() => checkFieldLimits('keyshard.v1.ProposeRequest', { ceremony: { id: 'c', recipients: [{ coordinator_id: 'x'.repeat(257) }] }, vouch: null }));
    assert.deepEqual(e.metadata, { field: 'ceremony.recipients[0].coordinator_id', max_length: '256' });
  });

  it('requestLimitCheck by gRPC path: keyshard.v1 methods checked, other packages not, unknown methods an error', () => {
    const check = requestLimitCheck('/keyshard.v1.KeyService/GetKey')!;
    check({ key: 'short' });
    assert.throws(() => check({ key: 'x'.repeat(300) }), /key is 300 characters long/);
    assert.equal(requestLimitCheck('/grpc.health.v1.Health/Check'), undefined);
    assert.equal(requestLimitCheck('/keyshard.v1.CeremonyService/Seal'), undefined, 'an empty request has nothing to check');
    assert.throws(() => requestLimitCheck('/keyshard.v1.KeyService/Nope'), /not a method/);
  });

  it('a malformed or misplaced option fails the loading', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'field-limits-'));
    try {
      const header = 'syntax = "proto3";\npackage keyshard.v1;\nimport "google/protobuf/descriptor.proto";\n' +
        'message FieldLimits { uint32 max_length = 1; uint32 max_key_length = 2; uint32 max_count = 3; }\n' +
        'extend google.protobuf.FieldOptions { FieldLimits field = 50002; }\n';
      const cases: [string, RegExp][] = [
        ['int32 n = 1 [(keyshard.v1.field).max_length = 5];', /max_length on a field whose type is not string/],
        ['string s = 1 [(keyshard.v1.field).max_count = 5];', /max_count on a field that is neither repeated nor a map/],
        ['string s = 1 [(keyshard.v1.field).max_key_length = 5];', /max_key_length on a field that is not a map/],
        ['string s = 1 [(keyshard.v1.field).max_length = 0];', /not a positive integer/],
        ['map<string, bytes> m = 1 [(keyshard.v1.field).max_length = 5];', /values are not string/],
      ];
      for (const [i, [field, error]] of cases.entries()) {
        writeFileSync(path.join(dir, `t${i}.proto`), `${header}message T { ${field} }\n`);
        const type = loadProtoRoot(dir, [`t${i}.proto`]).lookupType('keyshard.v1.T');
        assert.throws(() => limitOf(type, type.fieldsArray[0]!), error, field);
      }
      writeFileSync(path.join(dir, 'ok.proto'), `${header}message T { map<string, string> m = 1 [(keyshard.v1.field) = { max_key_length: 7 max_length: 9 max_count: 3 }]; bytes b = 2; repeated bytes r = 3; }\n`);
      const type = loadProtoRoot(dir, ['ok.proto']).lookupType('keyshard.v1.T');
      const [m, b, r] = type.fieldsArray.map((f) => limitOf(type, f)) as [FieldLimit, FieldLimit, FieldLimit];
      assert.deepEqual([m.maxKeyLength, m.maxLength, m.maxCount], [7, 9, 3]);
      assert.deepEqual([b.maxLength, b.maxCount], [undefined, undefined], 'bytes: bounded by their own checks');
      assert.equal(r.maxCount, DEFAULT_MAX_COUNT);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
