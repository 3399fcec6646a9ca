/**
 * Small helpers for integration tests: gRPC status assertions, and the two ways a test waits
 * instead of sleeping a fixed time: `waitFor` a condition (with a deadline that names it), or,
 * for something that must NOT happen, `observeFor` a bounded time that names what was watched.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { reasonOfStatus } from '@keyshard/rpc';

/** A refused call as tests look at it: status name, reason (status details), message. */
export interface Refusal {
  code: string;
  reason: string;
  message: string;
}

/** The refusal `e` is: the SDK's KeyshardError (code a name) or a raw grpc-js status error (code a number). */
export function refusalOf(e: unknown): Refusal {
  const err = e as { code?: unknown; reason?: unknown; details?: unknown; message?: unknown; metadata?: grpc.Metadata };
  if (typeof err.code === 'string' && typeof err.reason === 'string') return { code: err.code, reason: err.reason, message: String(err.message) };
  if (typeof err.code === 'number') return { code: grpc.status[err.code] ?? String(err.code), reason: reasonOfStatus(err as { code: number }), message: String(err.details ?? err.message) };
  throw e; // not a refusal: the test failed otherwise
}

/** Asserts `p` is refused with status `code`, and `expected`: its reason (a string) or words of its message (a RegExp). */
export async function rejectsWith(p: Promise<unknown>, code: keyof typeof grpc.status, expected?: RegExp | string): Promise<Refusal> {
  try {
    await p;
  } catch (e) {
    const r = refusalOf(e);
    assert.equal(r.code, code, `expected ${code}, got ${r.code} (${r.reason}): ${r.message}`);
    if (typeof expected === 'string') assert.equal(r.reason, expected, `expected reason ${expected}, got ${r.reason}: ${r.message}`);
    else if (expected) assert.match(r.message, expected);
    return r;
  }
  assert.fail(`expected ${code}, but the call succeeded`);
}

/** Polls `fn` (a throw counts as not yet) until it returns a value; fails after `timeoutMs` naming `what`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Waits until the wall clock is past `time` (an RFC 3339 time a server stated, e.g. when a waiting period ends). */
export function waitUntilPast(what: string, time: string, timeoutMs = 20_000): Promise<true> {
  const at = Date.parse(time);
  assert.ok(Number.isFinite(at), `${what}: not a time: ${JSON.stringify(time)}`);
  return waitFor(`${what} (${time})`, async () => (Date.now() >= at ? true : undefined), timeoutMs);
}

/**
 * A bounded observation, for a test that checks something does NOT happen: runs `check` (it
 * throws, e.g. an assertion, once the thing has happened) at once, every `everyMs`, and a last
 * time when `forMs` have passed, so the last check is at least as late as a sleep of `forMs`
 * followed by the same check. `what` says what was watched and why that long; a failure names
 * it and how far into the window it was seen.
 */
export async function observeFor(what: string, forMs: number, check: () => unknown, everyMs = 200): Promise<void> {
  const start = Date.now();
  for (;;) {
    const now = Date.now();
    try {
      await check();
    } catch (e) {
      throw new Error(`${what}: failed ${now - start} ms into the ${forMs} ms watched: ${(e as Error)?.message ?? e}`, { cause: e });
    }
    if (now - start >= forMs) return;
    await new Promise((r) => setTimeout(r, Math.min(everyMs, start + forMs - now)));
  }
}
