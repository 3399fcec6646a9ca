/** The etcd retry backoff: delays, reset, rate-limited reports, and a loop that stops when told. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff, retryWithBackoff, type Failure } from './backoff.ts';

const fixed = (r: number) => () => r;

describe('Backoff', () => {
  it('waits between half the cap and the cap; the cap doubles from initialMs up to maxMs', () => {
    const low = new Backoff({ initialMs: 100, maxMs: 5_000, random: fixed(0) });
    const high = new Backoff({ initialMs: 100, maxMs: 5_000, random: fixed(1) });
    const caps = [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000];
    for (const cap of caps) {
      assert.equal(low.failed().delayMs, cap / 2);
      assert.equal(high.failed().delayMs, cap);
    }
    const random = new Backoff({ random: Math.random });
    for (let i = 0; i < 200; i++) {
      const { delayMs, failures } = random.failed();
      const cap = Math.min(5_000, 100 * 2 ** Math.min(failures - 1, 30));
      assert.ok(delayMs >= cap / 2 && delayMs <= cap, `${delayMs} within [${cap / 2}, ${cap}]`);
    }
    assert.equal(random.failed().delayMs <= 5_000, true, 'no overflow after many failures');
  });

  it('a success resets the streak: the next failure waits like the first', () => {
    const b = new Backoff({ random: fixed(1) });
    for (let i = 0; i < 5; i++) b.failed();
    assert.equal(b.failures, 5);
    assert.equal(b.succeeded(), 5);
    assert.equal(b.failures, 0);
    assert.deepEqual(b.failed(), { failures: 1, delayMs: 100, report: true });
    assert.equal(b.succeeded(), 1);
    assert.equal(b.succeeded(), 0, 'a success after a success ends no streak');
  });

  it('reports a streak when it starts, then at most once per reportEveryMs', () => {
    let now = 0;
    const b = new Backoff({ reportEveryMs: 30_000, now: () => now });
    const reported: number[] = [];
    for (let i = 0; i < 1_000; i++) {
      now += 100; // an attempt every 100 ms for 100 s
      if (b.failed().report) reported.push(now);
    }
    assert.deepEqual(reported, [100, 30_100, 60_100, 90_100]);
    b.succeeded();
    assert.equal(b.failed().report, true, 'a new streak is reported at once');
  });

  it('refuses nonsensical bounds', () => {
    assert.throws(() => new Backoff({ initialMs: 0 }), RangeError);
    assert.throws(() => new Backoff({ initialMs: 200, maxMs: 100 }), RangeError);
    assert.throws(() => new Backoff({ reportEveryMs: -1 }), RangeError);
  });
});

describe('retryWithBackoff', () => {
  it('retries after the backoff delay until the attempt succeeds, reporting the streak once and its end once', async () => {
    const waits: number[] = [];
    const reports: Failure[] = [];
    const recovered: number[] = [];
    let calls = 0;
    const value = await retryWithBackoff(
      async () => {
        calls += 1;
        if (calls <= 5) throw new Error('etcd unavailable');
        return 'registered';
      },
      {
        backoff: { random: fixed(1) },
        sleep: async (ms) => void waits.push(ms),
        onFailure: (_e, f) => reports.push(f),
        onRecovered: (n) => recovered.push(n),
      },
    );
    assert.equal(value, 'registered');
    assert.equal(calls, 6);
    assert.deepEqual(waits, [100, 200, 400, 800, 1_600]);
    assert.deepEqual(reports.map((f) => f.failures), [1], 'one report for the streak');
    assert.deepEqual(recovered, [5]);
  });

  it('a shared Backoff carries the streak across loops until a success resets it', async () => {
    const backoff = new Backoff({ random: fixed(1) });
    const waits: number[] = [];
    const sleep = async (ms: number) => void waits.push(ms);
    let n = 0;
    await retryWithBackoff(async () => (n++ < 2 ? Promise.reject(new Error('down')) : 'ok'), { backoff, sleep });
    assert.equal(backoff.failures, 0);
    n = 0;
    await retryWithBackoff(async () => (n++ < 1 ? Promise.reject(new Error('down')) : 'ok'), { backoff, sleep });
    assert.deepEqual(waits, [100, 200, 100]);
  });

  it('an attempt that fails at once (an open circuit breaker) is retried a few times a second, not thousands', async () => {
    const stop = new AbortController();
    let calls = 0;
    const loop = retryWithBackoff(
      async () => {
        calls += 1;
        throw new Error('Breaker is open');
      },
      { signal: stop.signal },
    );
    await new Promise((r) => setTimeout(r, 1_000));
    stop.abort();
    assert.equal(await loop, undefined);
    // Real timers on a loaded machine: delays of 50–100, 100–200, 200–400, 400–800 ms fit at most 5 attempts in 1 s.
    assert.ok(calls >= 2 && calls <= 6, `${calls} attempts in 1 s`);
  });

  it('stops at once when aborted during a wait, and calls nothing more', async () => {
    const stop = new AbortController();
    let calls = 0;
    const t0 = performance.now();
    const loop = retryWithBackoff(
      async () => {
        calls += 1;
        throw new Error('down');
      },
      { signal: stop.signal, backoff: { initialMs: 60_000, maxMs: 60_000 } },
    );
    setTimeout(() => stop.abort(), 50);
    assert.equal(await loop, undefined);
    assert.equal(calls, 1);
    assert.ok(performance.now() - t0 < 5_000, `stopped after ${Math.round(performance.now() - t0)} ms, not the 30–60 s wait`);
  });

  it('aborted during an attempt: ends when the attempt settles, without waiting or reporting', async () => {
    const stop = new AbortController();
    const reports: Failure[] = [];
    let slept = false;
    let calls = 0;
    const value = await retryWithBackoff(
      async () => {
        calls += 1;
        stop.abort();
        throw new Error('cancelled by the shutdown');
      },
      { signal: stop.signal, sleep: async () => void (slept = true), onFailure: (_e, f) => reports.push(f) },
    );
    assert.equal(value, undefined);
    assert.equal(calls, 1);
    assert.equal(slept, false);
    assert.deepEqual(reports, []);
    assert.equal(await retryWithBackoff(async () => 'never', { signal: stop.signal }), undefined, 'already aborted: no attempt');
  });
});
