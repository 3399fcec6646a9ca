import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KeyshardError } from '@keyshard/errors';
import { BlockWorker } from './block-worker.ts';

const MODULE = new URL('./block-worker.spec-worker.ts', import.meta.url).href;

async function* blocks(n: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < n; i++) yield Buffer.from(`block ${i};`);
}

describe('BlockWorker', () => {
  it('streams blocks both ways in order, with progress and a result', async () => {
    const progress: number[] = [];
    const w = new BlockWorker<number>(MODULE, { mode: 'echo' }, 'test', (n) => progress.push(n));
    try {
      const back: string[] = [];
      const reading = (async () => {
        for await (const b of w.received()) back.push(b.toString());
      })();
      await w.send(blocks(50));
      await reading;
      const total = await w.result;
      const expected = Array.from({ length: 50 }, (_, i) => `BLOCK ${i};`);
      assert.deepEqual(back, expected);
      assert.equal(total, expected.join('').length);
      assert.equal(progress.at(-1), total);
    } finally {
      await w.close();
    }
  });

  it('passes a KeyshardError on with its code and message', async () => {
    const w = new BlockWorker(MODULE, { mode: 'refuse' }, 'test');
    try {
      await assert.rejects(w.result, (e: KeyshardError) => e.code === 'FAILED_PRECONDITION' && e.message === 'refused on purpose');
    } finally {
      await w.close();
    }
  });

  it('turns any other error into INTERNAL without its message', async () => {
    const w = new BlockWorker(MODULE, { mode: 'crash' }, 'test');
    try {
      await assert.rejects(w.result, (e: KeyshardError) => e.code === 'INTERNAL' && !e.message.includes('secret'));
    } finally {
      await w.close();
    }
  });

  it('stops a worker that goes over its heap cap, and says so', { timeout: 60_000 }, async () => {
    const w = new BlockWorker(MODULE, { mode: 'hoard' }, 'test');
    try {
      await assert.rejects(w.result, (e: KeyshardError) => e.code === 'INTERNAL' && /memory bound/.test(e.message));
    } finally {
      await w.close();
    }
  });

  it('a sender blocked on a worker that failed gets the failure, not a hang', async () => {
    const w = new BlockWorker(MODULE, { mode: 'refuse' }, 'test');
    try {
      await assert.rejects(w.send(blocks(1000)), (e: KeyshardError) => e.code === 'FAILED_PRECONDITION');
    } finally {
      await w.close();
    }
  });
});
