import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLogger } from '@keyshard/config';
import { KeyshardError } from '@keyshard/errors';
import { AuditSpool } from './spool.ts';
import type { AuditClient } from './client.ts';
import type { AuditEvent } from './event.ts';

const log = createLogger('spool-test', 'silent');
const root = mkdtempSync(path.join(tmpdir(), 'ks-spool-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** An in-memory stand-in for the sink's client: stores events once by id, can be switched off. */
class FakeSink {
  events: AuditEvent[] = [];
  up = true;
  async record(e: AuditEvent): Promise<void> {
    if (!this.up) throw new KeyshardError('UNAVAILABLE', 'audit sink unavailable: down');
    if (!this.events.some((x) => x.id === e.id)) this.events.push(e);
  }
  async recordAll(events: AuditEvent[]): Promise<void> {
    for (const e of events) await this.record(e);
  }
  asClient(): AuditClient {
    return this as unknown as AuditClient;
  }
}

const ev = (i: number) => ({ principal: 'p', operation: 'keys.Encrypt', result: 'ok' as const, request_id: `r${i}` });
const until = async (cond: () => boolean) => {
  for (let i = 0; i < 300 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), 'condition not reached');
};

describe('AuditSpool', () => {
  it('acknowledges after a durable write and ships in order', async () => {
    const dir = path.join(root, 'a');
    const sink = new FakeSink();
    const spool = await AuditSpool.open({ dir, source: 'coordinator-1', shipDelayMs: 5 }, sink.asClient(), log);
    await Promise.all(Array.from({ length: 50 }, (_, i) => spool.record(ev(i))));
    const lines = readFileSync(path.join(dir, 'spool.log'), 'utf8').trim().split('\n');
    assert.equal(lines.length, 50, 'every acknowledged event is on disk');
    await until(() => sink.events.length === 50);
    assert.deepEqual(sink.events.map((e) => e.request_id), Array.from({ length: 50 }, (_, i) => `r${i}`));
    assert.ok(sink.events.every((e) => e.source === 'coordinator-1' && e.id && e.time));
    await spool.close();
  });

  it('with several groups written at once, the file and the sink keep the order of acknowledgement', async () => {
    const dir = path.join(root, 'multi');
    const sink = new FakeSink();
    sink.up = false; // everything stays in the file until the end
    const spool = await AuditSpool.open({ dir, source: 'c', shipDelayMs: 5 }, sink.asClient(), log);
    const acked: string[] = [];
    const all: Promise<void>[] = [];
    for (let burst = 0; burst < 40; burst++) {
      // bursts in separate turns of the event loop: separate groups, several in flight at once
      for (let i = 0; i < 5; i++) all.push(spool.record(ev(burst * 5 + i)).then(() => void acked.push(`r${burst * 5 + i}`)));
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all(all);
    const expected = Array.from({ length: 200 }, (_, i) => `r${i}`);
    assert.deepEqual(acked, expected, 'acknowledged in the order recorded');
    const lines = readFileSync(path.join(dir, 'spool.log'), 'utf8').trim().split('\n');
    assert.deepEqual(lines.map((l) => (JSON.parse(l) as AuditEvent).request_id), expected, 'no hole, no reordering on disk');
    sink.up = true;
    await until(() => sink.events.length === 200);
    assert.deepEqual(sink.events.map((e) => e.request_id), expected);
    await spool.close();
  });

  it('keeps accepting while the sink is down, refuses when full, drains when it is back', async () => {
    const sink = new FakeSink();
    sink.up = false;
    const spool = await AuditSpool.open({ dir: path.join(root, 'b'), source: 'c', maxPending: 20, shipDelayMs: 5 }, sink.asClient(), log);
    for (let i = 0; i < 20; i++) await spool.record(ev(i));
    await assert.rejects(spool.record(ev(99)), (e: KeyshardError) => e.code === 'UNAVAILABLE' && /spool is full/.test(e.message));
    sink.up = true;
    await until(() => sink.events.length === 20);
    assert.equal(spool.pending, 0);
    await spool.record(ev(100));
    await spool.close();
  });

  it('after a crash: ships what was not shipped, drops a torn tail, never stores twice', async () => {
    const dir = path.join(root, 'c');
    const sink = new FakeSink();
    sink.up = false;
    const first = await AuditSpool.open({ dir, source: 'c', shipDelayMs: 5 }, sink.asClient(), log);
    for (let i = 0; i < 5; i++) await first.record(ev(i));
    // "crash": abandon the instance and leave half a line behind, as a kill mid-write would.
    appendFileSync(path.join(dir, 'spool.log'), '{"id":"torn","oper');
    sink.up = true;
    const second = await AuditSpool.open({ dir, source: 'c', shipDelayMs: 5 }, sink.asClient(), log);
    await until(() => sink.events.length === 5);
    assert.deepEqual(sink.events.map((e) => e.request_id), ['r0', 'r1', 'r2', 'r3', 'r4']);
    assert.ok(!readFileSync(path.join(dir, 'spool.log'), 'utf8').includes('torn'));
    await second.record(ev(5));
    await until(() => sink.events.length === 6);
    await second.close();
    await first.close(0);
    const third = await AuditSpool.open({ dir, source: 'c', shipDelayMs: 5 }, sink.asClient(), log);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(sink.events.length, 6, 're-shipping after restart stores nothing twice');
    await third.close();
  });

  it('drops the shipped head of its file while events keep waiting to be shipped (steady load), losing and repeating none', async () => {
    const dir = path.join(root, 'd');
    const sink = new FakeSink();
    const slow = { recordAll: async (events: AuditEvent[]) => (await new Promise((r) => setTimeout(r, 3)), sink.recordAll(events)) };
    const spool = await AuditSpool.open({ dir, source: 'c', compactBytes: 2_000, shipDelayMs: 1 }, slow as unknown as AuditClient, log);
    const file = path.join(dir, 'spool.log');
    // Beyond what waits to be shipped, the file holds compactBytes of shipped events and at most
    // about one shipping batch more (shipped since the last compaction); before, it shrank only
    // at a moment when nothing waited, which steady load never gives: it held nearly all 800.
    let worst = 0; // the largest excess of the file over what waited in it, in lines
    let allShipped = 0;
    let line = 0;
    await Promise.all(
      [0, 1, 2, 3].map(async (w) => {
        for (let i = w; i < 800; i += 4) {
          await spool.record(ev(i));
          line ||= Buffer.byteLength(readFileSync(file, 'utf8').split('\n')[0]!) + 1;
          worst = Math.max(worst, (statSync(file).size - 2_000) / line - spool.pending);
          if (spool.pending === 0) allShipped++;
        }
      }),
    );
    await until(() => spool.pending === 0);
    assert.ok(800 * line > 50 * 2_000, `${800 * line} bytes were spooled in all`);
    assert.ok(worst <= 100, `the file held ${worst.toFixed(1)} lines more than compactBytes and what waited (${allShipped} moments had nothing waiting)`);
    assert.equal(sink.events.length, 800);
    assert.deepEqual(new Set(sink.events.map((e) => e.request_id)).size, 800);
    await spool.close();
    // Opened again: everything was shipped, nothing is shipped twice.
    const again = new FakeSink();
    const reopened = await AuditSpool.open({ dir, source: 'c', compactBytes: 2_000, shipDelayMs: 1 }, again.asClient(), log);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(again.events.length, 0);
    await reopened.record(ev(800));
    await until(() => again.events.length === 1);
    await reopened.close();
  });

  it('after a crash right after compacting, ships what waited in the kept tail', async () => {
    const dir = path.join(root, 'e');
    const sink = new FakeSink();
    const spool = await AuditSpool.open({ dir, source: 'c', compactBytes: 1_000, shipDelayMs: 1 }, sink.asClient(), log);
    for (let i = 0; i < 20; i++) await spool.record(ev(i));
    await until(() => spool.pending === 0);
    sink.up = false; // events from now on wait in the spool
    for (let i = 20; i < 30; i++) await spool.record(ev(i)); // the first of these compacts: the tail is all unshipped
    // "Crash": no close; a new spool over the same files ships the ten that waited, in order.
    const after = new FakeSink();
    const reopened = await AuditSpool.open({ dir, source: 'c', compactBytes: 1_000, shipDelayMs: 1 }, after.asClient(), log);
    await until(() => after.events.length >= 10);
    assert.deepEqual(after.events.map((e) => e.request_id).filter((r) => Number(r.slice(1)) >= 20), Array.from({ length: 10 }, (_, i) => `r${20 + i}`));
    await reopened.close();
    await spool.close(0);
  });

  it('a saved position that is not on a line boundary (an older file with a newer offset) ships from the start instead of failing to open', async () => {
    const dir = path.join(root, 'f');
    const first = new FakeSink();
    first.up = false;
    const spool = await AuditSpool.open({ dir, source: 'c', shipDelayMs: 1 }, first.asClient(), log);
    for (let i = 0; i < 3; i++) await spool.record(ev(i));
    await spool.close(0);
    writeFileSync(path.join(dir, 'spool.offset'), '7'); // inside the first line
    const sink = new FakeSink();
    const reopened = await AuditSpool.open({ dir, source: 'c', shipDelayMs: 1 }, sink.asClient(), log);
    await until(() => sink.events.length === 3);
    assert.deepEqual(sink.events.map((e) => e.request_id), ['r0', 'r1', 'r2']);
    await reopened.close();
  });
});
