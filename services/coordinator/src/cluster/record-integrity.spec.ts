/** RecordIntegrity: stamping and checking under the seal's record MAC key, and reporting (integrityReporter). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { isKeyshardError } from '@keyshard/errors';
import { RecordIntegrity, integrityReporter, type IntegrityViolation } from './record-integrity.ts';
import { quietLog } from './test-support.ts';
import { Seal } from './seal.ts';

function unsealed(macKey = randomBytes(32)) {
  const seal = new Seal();
  seal.open(randomBytes(32), new Map([[1, randomBytes(32)]]), seal.generation, Buffer.from(macKey));
  const reports: IntegrityViolation[] = [];
  return { seal, reports, integrity: new RecordIntegrity(seal, (v) => reports.push(v)) };
}

const code = (e: unknown) => (isKeyshardError(e) ? e.code : String(e));

test('a stamped record opens at its own path, without its mac; nothing is reported', () => {
  const { integrity, reports } = unsealed();
  const body = integrity.stamp('keys/k_1', { id: 'k_1', policy: { decrypt: ['admin'] } });
  assert.match((JSON.parse(body) as { mac: string }).mac, /^[0-9a-f]{64}$/);
  assert.deepEqual(integrity.open('keys/k_1', body), { id: 'k_1', policy: { decrypt: ['admin'] } });
  assert.deepEqual(integrity.open('keys/k_1', Buffer.from(body)), { id: 'k_1', policy: { decrypt: ['admin'] } });
  assert.deepEqual(reports, []);
});

test('an altered, moved, unMAC\'d or unparsable record is refused with the integrity error and reported once per stored value', () => {
  const { integrity, reports } = unsealed();
  const body = integrity.stamp('keys/k_1', { id: 'k_1', policy: { decrypt: ['admin'] } });
  const granted = body.replace('["admin"]', '["admin","app"]');
  for (let i = 0; i < 3; i++)
    assert.throws(() => integrity.open('keys/k_1', granted), (e) => code(e) === 'FAILED_PRECONDITION' && /record keys\/k_1 failed its integrity check \(altered outside keyshard\?\)/.test((e as Error).message));
  assert.equal(integrity.check('keys/k_2', body), undefined, 'moved to another key');
  assert.equal(integrity.check('keys/k_1', JSON.stringify({ id: 'k_1', policy: {} })), undefined, 'no MAC');
  assert.equal(integrity.check('keys/k_1', '{not json'), undefined);
  assert.deepEqual(reports, [
    { path: 'keys/k_1', reason: 'MAC mismatch' },
    { path: 'keys/k_2', reason: 'MAC mismatch' },
    { path: 'keys/k_1', reason: 'no MAC' },
    { path: 'keys/k_1', reason: 'not JSON' },
  ]);
});

test('another cluster\'s key (another record MAC key) does not verify', () => {
  const a = unsealed();
  const b = unsealed();
  assert.equal(b.integrity.check('seal-epoch', a.integrity.stamp('seal-epoch', { epoch: 2 })), undefined);
});

test('sealed: nothing is stamped or checked (the key is gone); a detached stamper made before the seal still stamps until closed', () => {
  const macKey = randomBytes(32);
  const { seal, integrity } = unsealed(macKey);
  const stamper = integrity.detachedStamper();
  const expected = integrity.stamp('seal-epoch', { epoch: 3 });
  seal.seal();
  assert.equal(integrity.available, false);
  assert.throws(() => integrity.stamp('seal-epoch', { epoch: 3 }), /sealed/);
  assert.throws(() => integrity.check('seal-epoch', expected), /sealed/);
  assert.equal(stamper.stamp('seal-epoch', { epoch: 3 }), expected);
  stamper.close();
  assert.notEqual(stamper.stamp('seal-epoch', { epoch: 3 }), expected, 'closed: its key copy is zeroized');
});

test('a refused record is counted and audited as integrity.record_refused, naming the key or ceremony it belongs to; a failed audit does not throw', async () => {
  const counted: string[] = [];
  const audited: { key_id?: string; ceremony_id?: string; operation: string; details?: Record<string, string> }[] = [];
  let sinkDown = false;
  const audit = { record: async (e: (typeof audited)[number]) => (sinkDown ? Promise.reject(new Error('sink down')) : void audited.push(e)) };
  const report = integrityReporter({ principal: 'coordinator-1', log: quietLog, audit, count: (p) => counted.push(p) });
  report({ path: 'keys/k_1', reason: 'MAC mismatch' });
  report({ path: 'ceremonies/c_1', reason: 'no MAC' });
  sinkDown = true;
  report({ path: 'seal-epoch', reason: 'not JSON' });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(counted, ['keys/k_1', 'ceremonies/c_1', 'seal-epoch']);
  assert.deepEqual(
    audited.map((e) => [e.operation, e.key_id, e.ceremony_id, e.details?.reason]),
    [['integrity.record_refused', 'k_1', '', 'MAC mismatch'], ['integrity.record_refused', '', 'c_1', 'no MAC']],
  );
});
