/** etcd reachability for health: a fake clock and a probe the test answers (no etcd, no timers). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EtcdReachability } from './etcd-reachability.ts';

function harness() {
  let now = 0;
  let answer: 'ok' | 'fail' | 'hang' = 'ok';
  let probes = 0;
  const hanging: (() => void)[] = [];
  const r = new EtcdReachability(
    () => {
      probes += 1;
      if (answer === 'ok') return Promise.resolve();
      if (answer === 'fail') return Promise.reject(new Error('etcd unavailable'));
      return new Promise<void>((_resolve, reject) => hanging.push(() => reject(new Error('deadline exceeded'))));
    },
    { intervalMs: 1_000, unreachableAfterMs: 3_000, now: () => now },
  );
  const changes: boolean[] = [];
  r.onChange((v) => changes.push(v));
  /** One tick a second for `seconds`; a hanging probe is left hanging. */
  const run = async (seconds: number) => {
    for (let i = 0; i < seconds; i++) {
      now += 1_000;
      const t = r.tick();
      if (answer !== 'hang') await t;
    }
  };
  return {
    r,
    changes,
    probes: () => probes,
    set: (a: typeof answer) => (answer = a),
    run,
    release: () => hanging.splice(0).forEach((f) => f()),
    /** After an outage: etcd answers again, and one tick later it is reachable, each change told once. */
    async recovers() {
      answer = 'ok';
      await run(1);
      assert.equal(r.reachable, true);
      assert.deepEqual(changes, [false, true]);
    },
  };
}

describe('EtcdReachability', () => {
  it('stays reachable through failures shorter than unreachableAfterMs', async () => {
    const h = harness();
    await h.run(3);
    h.set('fail');
    await h.run(3); // silent for exactly 3 s: not yet
    assert.equal(h.r.reachable, true);
    h.set('ok');
    await h.run(1);
    assert.equal(h.r.reachable, true);
    assert.deepEqual(h.changes, []);
  });

  it('goes unreachable once no probe succeeded for longer than unreachableAfterMs, and back at the first success', async () => {
    const h = harness();
    await h.run(2);
    h.set('fail');
    await h.run(4);
    assert.equal(h.r.reachable, false);
    assert.deepEqual(h.changes, [false]);
    await h.run(10);
    assert.deepEqual(h.changes, [false], 'told once, not per failure');
    await h.recovers();
  });

  it('a hanging probe is not doubled, and etcd is judged unreachable while it hangs', async () => {
    const h = harness();
    await h.run(1);
    assert.equal(h.probes(), 1);
    h.set('hang');
    await h.run(5);
    assert.equal(h.probes(), 2, 'one probe in flight; the ticks behind it start none');
    assert.equal(h.r.reachable, false);
    h.release();
    await new Promise((r) => setImmediate(r));
    await h.recovers();
  });

  it('refuses an interval longer than the unreachable bound', () => {
    assert.throws(() => new EtcdReachability(async () => {}, { intervalMs: 5_000, unreachableAfterMs: 1_000 }), RangeError);
    assert.throws(() => new EtcdReachability(async () => {}, { intervalMs: 0, unreachableAfterMs: 1_000 }), RangeError);
  });
});
