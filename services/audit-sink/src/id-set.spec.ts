import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ID_SET_GENERATION, IdSet } from './id-set.ts';

describe('IdSet', () => {
  it('fills no generation beyond what one JavaScript Set can hold (2^24)', () => {
    // The limit this class exists for: a plain Set refuses its 2^24+1-th entry (the sink's id
    // Set did, after 16.7 M events: appends failed and the log could not be opened again).
    const plain = new Set<number>();
    assert.throws(() => {
      for (let i = 0; i <= 2 ** 24; i++) plain.add(i);
    }, /maximum size/);
    assert.equal(plain.size, 2 ** 24);
    plain.clear();
    assert.ok(ID_SET_GENERATION < 2 ** 24);
    // One generation filled to the brim, then the next: every id still known exactly.
    const ids = new IdSet(1000);
    for (let i = 0; i < 2500; i++) assert.equal(ids.add(`e${i}`), true);
    for (let i = 0; i < 2500; i += 97) assert.equal(ids.add(`e${i}`), false, `e${i} is known`);
    assert.equal(ids.size, 2500);
  });

  it('add answers whether the id was new, across generations; delete gives an id back', () => {
    const ids = new IdSet(3);
    for (const id of ['a', 'b', 'c', 'd', 'e', 'f', 'g']) assert.equal(ids.add(id), true);
    for (const id of ['a', 'c', 'd', 'g']) assert.equal(ids.add(id), false, id);
    assert.equal(ids.size, 7);
    ids.delete('b');
    ids.delete('g');
    assert.equal(ids.size, 5);
    assert.equal(ids.has('b'), false);
    assert.equal(ids.add('b'), true);
    assert.equal(ids.add('g'), true);
    assert.equal(ids.add('b'), false);
  });
});
