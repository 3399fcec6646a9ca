import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { Cluster } from '../cluster/cluster.ts';
import { Seal } from '../cluster/seal.ts';
import type { KeyRecord } from './key-record.ts';
import type { KeyStore } from './key-store.ts';
import { VersionMaterial } from './version-material.ts';

const openSeal = () => {
  const seal = new Seal();
  seal.open(randomBytes(32), new Map([[1, randomBytes(32)]]), seal.generation, randomBytes(32));
  return seal;
};

describe('VersionMaterial and the seal', () => {
  it('sealing zeroizes every cached version, however many (200,000: spread into one call, they overflowed the stack and stayed in memory)', async () => {
    const seal = openSeal();
    // Small labelled fakes: the cluster record wrapVersion needs, and a store this path never reads.
    const cluster = { requireInitialized: () => ({ record: { clusterId: 'c_test', kekEpoch: 1 } }) } as unknown as Cluster;
    const material = new VersionMaterial(cluster, seal, {} as KeyStore);
    const key = { id: 'k_test', name: 'test', type: 'aes256-gcm' } as KeyRecord;
    const sample: Buffer[] = [];
    for (let n = 1; n <= 200_000; n++) {
      const p = material.pending();
      p.make(key, n);
      p.keep();
      if (n % 25_000 === 0) sample.push(await material.of(key, n));
    }
    assert.ok(sample.every((b) => b.some((x) => x !== 0)));
    seal.seal();
    assert.ok(sample.every((b) => b.every((x) => x === 0)), 'every version zeroized');
    assert.equal(seal.sealed, true);
  });

  it('a seal listener that throws does not keep the later ones from running; its error comes after', () => {
    const seal = openSeal();
    const ran: string[] = [];
    seal.onSeal(() => {
      ran.push('first');
      throw new Error('listener failed');
    });
    seal.onSeal(() => ran.push('second'));
    assert.throws(() => seal.seal(), /listener failed/);
    assert.deepEqual(ran, ['first', 'second']);
    assert.equal(seal.sealed, true);
  });
});
