/**
 * The replicated audit log as a test sees it on disk: each replica's records (its segment files,
 * concatenated in order) and the checks the fault and crash suites make after a replica fault —
 * the replicas agree byte for byte once caught up, and every acknowledged event is in every
 * live replica's log; which witnesses a replica holds cosignatures of.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { readCosignedLog } from '@keyshard/audit-log';
import type { DevCluster } from '@keyshard/devcluster';
import { sleep } from './load.ts';

/** One replica's records as stored: its segments concatenated, cut after the last complete line. */
export function logBytes(auditDir: string): Buffer {
  const d = path.join(auditDir, 'segments');
  if (!existsSync(d)) return Buffer.alloc(0);
  const all = Buffer.concat(
    readdirSync(d)
      .sort()
      .map((f) => readFileSync(path.join(d, f))),
  );
  return all.subarray(0, all.lastIndexOf(0x0a) + 1);
}

/** How many bytes one replica's segments hold (cheap: no reading), to wait on before comparing. */
export function logSize(auditDir: string): number {
  const d = path.join(auditDir, 'segments');
  if (!existsSync(d)) return 0;
  return readdirSync(d).reduce((n, f) => n + statSync(path.join(d, f)).size, 0);
}

export interface StoredEvent {
  operation: string;
  result: string;
  key_id?: string;
  time: string;
}

/** The events of a log's records; with `pick`, only those whose line passes it (a cheap text test made before parsing). */
export function eventsOf(bytes: Buffer, pick: (line: string) => boolean = () => true): StoredEvent[] {
  return bytes
    .toString('utf8')
    .split('\n')
    .filter((l) => l && pick(l))
    .map((l) => (JSON.parse(l) as { event: StoredEvent }).event);
}

/** How many records a log holds. */
export function recordCount(bytes: Buffer): number {
  let n = 0;
  for (let i = bytes.indexOf(0x0a); i >= 0; i = bytes.indexOf(0x0a, i + 1)) n += 1;
  return n;
}

/**
 * Waits until every replica in `ids` holds at least the records the longest of them held when
 * called, then checks that each one's log starts with exactly those bytes: the logs are the same
 * records in the same order, and a replica that was down, stopped or cut off has caught up.
 * Resolves with that common prefix; rejects naming the replica that diverged or never caught up.
 */
export async function replicasAgree(cluster: DevCluster, ids = cluster.auditSinkIds, timeoutMs = 60_000): Promise<Buffer> {
  const dirs = ids.map((id) => cluster.layout.auditDirOf(id));
  const longest = dirs.reduce((a, b) => (logSize(b) > logSize(a) ? b : a));
  const ref = Buffer.from(logBytes(longest));
  const deadline = Date.now() + timeoutMs;
  for (const [i, id] of ids.entries()) {
    // Wait on sizes (cheap), then read to compare; a shorter exact prefix (a record being written
    // when the size was taken) is waited on too.
    for (;;) {
      if (logSize(dirs[i]!) >= ref.length) {
        const b = logBytes(dirs[i]!);
        const n = Math.min(b.length, ref.length);
        if (!b.subarray(0, n).equals(ref.subarray(0, n))) {
          const at = firstDifference(b, ref);
          throw new Error(`audit replica ${id}'s log differs from the longest one at byte ${at} (record ${recordCount(ref.subarray(0, at)) + 1})`);
        }
        if (b.length >= ref.length) break;
      }
      if (Date.now() > deadline) throw new Error(`audit replica ${id} holds ${logSize(dirs[i]!)} of the ${ref.length} bytes the others held ${timeoutMs / 1000} s ago: it did not catch up`);
      await sleep(200);
    }
  }
  return ref;
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/**
 * Of `keyIds` (keys whose CreateKey was acknowledged), those without a `keys.CreateKey` ok event
 * in the log of some replica of `ids`, with the replica: [] when every replica has every one.
 * Waits up to `timeoutMs` for followers that trail the leader by a heartbeat.
 */
export async function createEventsMissing(cluster: DevCluster, keyIds: string[], ids = cluster.auditSinkIds, timeoutMs = 30_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const missing = ids.flatMap((id) => {
      const logged = new Set(
        eventsOf(logBytes(cluster.layout.auditDirOf(id)), (l) => l.includes('"operation":"keys.CreateKey"'))
          .filter((e) => e.operation === 'keys.CreateKey' && e.result === 'ok')
          .map((e) => e.key_id),
      );
      return keyIds.filter((k) => !logged.has(k)).map((k) => `${k} not in ${id}'s log`);
    });
    if (missing.length === 0 || Date.now() > deadline) return missing;
    await sleep(300);
  }
}

/**
 * The witnesses (names, e.g. keyshard.dev/witness/coordinator) with a cosignature line in a
 * replica's cosigned.log, whatever checkpoint it is of: what `keyshard audit verify`'s witness
 * quorum can count at most. Read as published, unverified (verify checks the signatures).
 */
export function cosignersOf(auditDir: string): string[] {
  const names = readCosignedLog(path.join(auditDir, 'cosigned.log')).items.flatMap((c) => c.cosignatures.map((line) => line.replace(/^\u2014 /, '').split(' ')[0]!));
  return [...new Set(names)].sort();
}
