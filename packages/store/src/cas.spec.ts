import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Namespace } from 'etcd3';
import { CreateBatcher } from './cas.ts';

type Txn = { success: { request_txn: { compare: { key: Buffer }[]; success: { request_put: { key: Buffer; value: Buffer } }[] } }[] };

/** A namespace whose etcd applies every nested create (no conflicts), one transaction a tick. */
function fakeNs() {
  const txns: Txn[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const ns = {
    prefix: Buffer.from('/p/'),
    kv: {
      txn: async (req: Txn) => {
        txns.push(req);
        maxInFlight = Math.max(maxInFlight, ++inFlight);
        await new Promise((r) => setTimeout(r, 5));
        inFlight--;
        return { header: { revision: String(txns.length) }, responses: req.success.map(() => ({ response_txn: { succeeded: true, responses: [] } })) };
      },
    },
  } as unknown as Namespace;
  return { ns, txns, maxInFlight: () => maxInFlight };
}

const create = (name: string, value = 'v') => ({ guard: `names/${name}`, puts: [[`names/${name}`, `id-${name}`], [`keys/id-${name}`, value]] as [string, string][], witnesses: 1 });
const putKeys = (t: Txn) => t.success.flatMap((n) => n.request_txn.success.map((p) => p.request_put.key.toString()));

test('concurrent creates share transactions, at most two on their way, each with its own outcome', async () => {
  const { ns, txns, maxInFlight } = fakeNs();
  const batcher = new CreateBatcher(ns, 'test');
  const results = await Promise.all(Array.from({ length: 100 }, (_, i) => batcher.create(create(`k${i}`))));
  assert.ok(results.every((r) => r.outcome === 'applied'));
  assert.ok(txns.length < 10, `100 creates in ${txns.length} transactions`);
  assert.ok(maxInFlight() <= 2);
  assert.equal(txns.flatMap(putKeys).length, 200, 'every put sent once');
  assert.ok(putKeys(txns[0]!).every((k) => k.startsWith('/p/')), 'keys carry the namespace prefix');
  assert.equal(txns[0]!.success[0]!.request_txn.compare[0]!.key.toString(), '/p/names/k0');
});

test('creates that put the same key never share a transaction', async () => {
  const { ns, txns } = fakeNs();
  const batcher = new CreateBatcher(ns, 'test');
  await Promise.all([...Array.from({ length: 10 }, () => batcher.create(create('same'))), batcher.create(create('other'))]);
  for (const t of txns) {
    const keys = putKeys(t);
    assert.equal(new Set(keys).size, keys.length, 'a transaction puts each key once');
  }
});

test('a batch stays within its byte and count limits; a create alone may exceed the byte limit', async () => {
  const { ns, txns } = fakeNs();
  const batcher = new CreateBatcher(ns, 'test', { maxBatch: 8, maxBatchBytes: 10_000 });
  const big = 'é'.repeat(2_000); // 4,000 bytes of UTF-8
  await Promise.all([
    ...Array.from({ length: 30 }, (_, i) => batcher.create(create(`big${i}`, big))),
    ...Array.from({ length: 30 }, (_, i) => batcher.create(create(`small${i}`))),
    batcher.create(create('huge', 'x'.repeat(20_000))),
  ]);
  for (const t of txns) {
    assert.ok(t.success.length <= 8);
    const bytes = t.success.flatMap((n) => n.request_txn.success.map((p) => p.request_put.key.length + p.request_put.value.length)).reduce((a, b) => a + b, 0);
    assert.ok(t.success.length === 1 || bytes <= 10_000, `${t.success.length} creates, ${bytes} bytes`);
  }
  assert.equal(txns.flatMap(putKeys).length, 122);
});
