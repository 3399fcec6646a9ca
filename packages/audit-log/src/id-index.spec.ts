import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ID_INDEX_GENERATION, IdIndex } from './id-index.ts';

describe('IdIndex', () => {
  it('fills no generation beyond what one JavaScript Map can hold (2^24)', () => {
    // The limit this class exists for: a plain Map refuses its 2^24+1-th entry (the sink's id
    // Set did after 16.7 M events: appends failed and the log could not be opened again; the
    // verifier's id Map did on such a log).
    const plain = new Map<number, number>();
    assert.throws(() => {
      for (let i = 0; i <= 2 ** 24; i++) plain.set(i, i);
    }, /maximum size/);
    assert.equal(plain.size, 2 ** 24);
    plain.clear();
    assert.ok(ID_INDEX_GENERATION < 2 ** 24);
    // Generations filled to the brim, then the next: every id still known, with its index.
    const ids = new IdIndex(1000);
    for (let i = 0; i < 2500; i++) assert.equal(ids.add(`e${i}`, i), true);
    for (let i = 0; i < 2500; i += 97) {
      assert.equal(ids.add(`e${i}`, 9999), false, `e${i} is known`);
      assert.equal(ids.indexOf(`e${i}`), i);
    }
    assert.equal(ids.size, 2500);
  });

  it('add answers whether the id was new, across generations; delete forgets an id', () => {
    const ids = new IdIndex(3);
    ['a', 'b', 'c', 'd', 'e', 'f', 'g'].forEach((id, i) => assert.equal(ids.add(id, i), true));
    for (const id of ['a', 'c', 'd', 'g']) assert.equal(ids.add(id, 100), false, id);
    assert.equal(ids.indexOf('d'), 3);
    assert.equal(ids.size, 7);
    ids.delete('b');
    ids.delete('g');
    assert.equal(ids.size, 5);
    assert.equal(ids.has('b'), false);
    assert.equal(ids.add('b', 7), true);
    assert.equal(ids.indexOf('b'), 7);
    assert.equal(ids.add('g', 8), true);
    assert.equal(ids.add('b', 9), false);
  });
});
