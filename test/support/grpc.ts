/** Small helpers for integration tests: gRPC status assertions and raw clients. */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';

export async function rejectsWith(p: Promise<unknown>, code: keyof typeof grpc.status, message?: RegExp): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (e) {
    const err = e as grpc.ServiceError;
    assert.equal(grpc.status[err.code], code, `expected ${code}, got ${grpc.status[err.code]}: ${err.details}`);
    if (message) assert.match(err.details, message);
    return err;
  }
  assert.fail(`expected ${code}, but the call succeeded`);
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
