import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import { drained } from './backup-service.ts';

/** The little of a server stream `drained` uses. */
function fakeCall(state: { cancelled?: boolean; destroyed?: boolean } = {}) {
  return Object.assign(new EventEmitter(), { cancelled: false, destroyed: false, ...state }) as unknown as grpc.ServerWritableStream<unknown, unknown> & EventEmitter;
}

describe('drained (CreateBackup flow control)', () => {
  it('resolves when the stream drains, and leaves no listener behind', async () => {
    const call = fakeCall();
    const waiting = drained(call);
    call.emit('drain');
    await waiting;
    assert.equal(call.listenerCount('cancelled') + call.listenerCount('close') + call.listenerCount('drain'), 0);
  });

  for (const event of ['cancelled', 'close'])
    it(`throws FAILED_PRECONDITION when the stream emits '${event}' instead of draining`, async () => {
      const call = fakeCall();
      const waiting = drained(call);
      call.emit(event);
      await assert.rejects(waiting, (e: { code?: string }) => e.code === 'FAILED_PRECONDITION');
      assert.equal(call.listenerCount('cancelled') + call.listenerCount('close') + call.listenerCount('drain'), 0);
    });

  it('throws at once for a call already cancelled or destroyed', async () => {
    await assert.rejects(drained(fakeCall({ cancelled: true })), (e: { code?: string }) => e.code === 'FAILED_PRECONDITION');
    await assert.rejects(drained(fakeCall({ destroyed: true })), (e: { code?: string }) => e.code === 'FAILED_PRECONDITION');
  });
});
