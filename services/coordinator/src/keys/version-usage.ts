/**
 * Per-version usage: how many messages each key version has encrypted, and when it was last
 * used (what an operator needs to know before retiring or destroying it).
 *
 * Encryption count — NIST SP 800-38D §8.3: with random 96-bit IVs a GCM key must not be used
 * for more than 2^32 invocations (the same bound is applied to ChaCha20-Poly1305's random
 * 96-bit nonces, RFC 8439). Every replica reserves encryptions in blocks from the version's
 * counter in etcd (`usage/<key>/<version>`, a compare-and-swap) and encrypts only within what
 * it holds. A crash wastes at most the rest of a block, so the stored count is always an upper
 * bound of what was really encrypted. Once a version's count reaches `rotateAt` it is rotated
 * (a compare-and-swap on the key's primary version: once, whichever replica sees it first);
 * no version ever reserves past `limit` — an encryption that finds its version exhausted waits
 * for the rotation and uses the new primary version.
 *
 * Last use (any operation) is kept in memory and written to the same record every
 * `flushSeconds`, so it is exact to within that interval and costs no etcd write per call.
 * Records are read from etcd when a key's metadata is asked for (`ofKey`), not cached: a
 * replica's memory holds only the versions it uses, whatever the number of keys.
 * Records are stored through usage-store.ts, with a record MAC: one that fails its check is never
 * used (reservations on that version fail with the integrity error). Written only while
 * unsealed: last-use times noted before a seal are written at the first flush after the next unseal.
 */
import type { Namespace } from '@keyshard/store';
import { unavailable } from '@keyshard/errors';
import type { Logger } from '@keyshard/config';
import type { AuditRecorder } from '@keyshard/audit-client';
import { forEachConcurrent } from '../concurrency.ts';
import type { RecordIntegrity } from '../cluster/record-integrity.ts';
import type { Keyring } from './keyring.ts';
import type { UsageRecord } from './key-record.ts';
import { UsageStore } from './usage-store.ts';

export interface VersionUsageOptions {
  /** Hard bound of encryptions per version (SP 800-38D §8.3: at most 2^32). */
  limit: number;
  /** Count at which the version is rotated: well before `limit`. */
  rotateAt: number;
  /** Encryptions a replica reserves at a time. */
  reserveBlock: number;
  /** How often last-use times are written to etcd. */
  flushSeconds: number;
}

/** Rotates `keyId` if `version` is still its primary. */
export type RotateForUsage = (keyId: string, version: number, encryptions: number) => Promise<void>;

/**
 * The rotation at the usage bound, by `principal` (the replica): like scheduled rotations,
 * audited before it runs, so it fails closed if the sink cannot record it.
 */
export function rotateAtUsageBound(keyring: Keyring, audit: AuditRecorder, principal: string, log: Logger): RotateForUsage {
  return async (keyId, version, encryptions) => {
    await audit.record({
      operation: 'keys.rotation.usage', principal, key_id: keyId, result: 'ok',
      details: { version: String(version), encryptions: String(encryptions) },
    });
    const r = await keyring.rotate(await keyring.resolve(keyId), { ifPrimary: version });
    if (r) log.info({ keyId, from: version, to: r.primaryVersion, encryptions }, 'rotated at the usage bound');
  };
}

interface Slot {
  keyId: string;
  version: number;
  remaining: number; // reserved by this replica, not used yet
  reserving: Promise<boolean> | undefined;
  lastUsed: number; // ms since epoch, 0 if not used by this replica
  flushedLastUse: number;
}

const EMPTY: UsageRecord = { encryptions: 0, lastUsedAt: '' };

export class VersionUsage {
  #store: UsageStore;
  #opts: VersionUsageOptions;
  #rotate: RotateForUsage;
  #log: Logger;
  #slots = new Map<string, Slot>();
  #rotations = new Map<string, Promise<void>>(); // `${keyId}#${version}` -> rotation this replica started
  #timer: NodeJS.Timeout | undefined;

  constructor(ns: Namespace, integrity: RecordIntegrity, opts: VersionUsageOptions, rotate: RotateForUsage, log: Logger) {
    if (!(opts.rotateAt > 0 && opts.rotateAt < opts.limit && opts.limit <= 2 ** 32)) throw new Error('usage bounds: need 0 < rotateAt < limit <= 2^32');
    this.#store = new UsageStore(ns, integrity);
    this.#opts = opts;
    this.#rotate = rotate;
    this.#log = log;
  }

  /** Starts the last-use flush. */
  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.flush().catch((e: Error) => this.#log.warn({ err: e.message }, 'last-use flush failed')), this.#opts.flushSeconds * 1000);
    this.#timer.unref();
  }

  #slot(keyId: string, version: number): Slot {
    const id = `${keyId}#${version}`; // hot path: cheaper than the padded record key
    let s = this.#slots.get(id);
    if (!s) {
      s = { keyId, version, remaining: 0, reserving: undefined, lastUsed: 0, flushedLastUse: 0 };
      this.#slots.set(id, s);
    }
    return s;
  }

  /** Records a use of the version (any operation) for its last-use time. */
  used(keyId: string, version: number): void {
    this.#slot(keyId, version).lastUsed = Date.now();
  }

  /**
   * Counts one encryption with `version`. Returns undefined when counted from this replica's
   * reservation (the hot path: no promise, no etcd). Otherwise a promise: true once counted,
   * false if the version is exhausted and has been rotated — the caller must use the new
   * primary version instead.
   */
  encryption(keyId: string, version: number): Promise<boolean> | undefined {
    const s = this.#slot(keyId, version);
    if (s.remaining > 0) {
      s.remaining--;
      s.lastUsed = Date.now();
      // Reserve the next block ahead, so encryptions rarely wait for etcd.
      if (s.remaining === Math.floor(this.#opts.reserveBlock / 4) && !s.reserving) void this.#reserve(s).catch(() => {});
      return undefined;
    }
    return this.#take(s);
  }

  async #take(s: Slot): Promise<boolean> {
    for (;;) {
      if (!(await this.#reserve(s))) {
        await this.#rotation(s.keyId, s.version);
        return false;
      }
      if (s.remaining > 0) {
        s.remaining--;
        s.lastUsed = Date.now();
        return true;
      }
    }
  }

  /** One reservation at a time per slot; false if the version has nothing left to reserve. */
  #reserve(s: Slot): Promise<boolean> {
    s.reserving ??= this.#reserveOnce(s).finally(() => (s.reserving = undefined));
    return s.reserving;
  }

  async #reserveOnce(s: Slot): Promise<boolean> {
    let grant = 0;
    let exhaustedAt: number | undefined;
    const next = await this.#store.change(s.keyId, s.version, 10, (cur) => {
      grant = Math.min(this.#opts.reserveBlock, this.#opts.limit - cur.encryptions);
      if (grant > 0) return { ...cur, encryptions: cur.encryptions + grant };
      exhaustedAt = cur.encryptions;
      return undefined;
    });
    if (exhaustedAt !== undefined) {
      void this.#rotation(s.keyId, s.version, exhaustedAt).catch(() => {});
      return false;
    }
    if (!next) throw unavailable('the usage counter of this key version is contended; try again', { reason: 'CONTENDED' });
    s.remaining += grant;
    if (next.encryptions >= this.#opts.rotateAt) void this.#rotation(s.keyId, s.version, next.encryptions).catch(() => {});
    return true;
  }

  /** Starts (once per version on this replica) or joins the rotation away from `version`. */
  #rotation(keyId: string, version: number, encryptions = 0): Promise<void> {
    const id = `${keyId}#${version}`;
    let r = this.#rotations.get(id);
    if (!r) {
      r = this.#rotate(keyId, version, encryptions).catch((e: Error) => {
        this.#rotations.delete(id); // let a later reservation try again
        this.#log.warn({ keyId, version, err: e.message }, 'rotation at the usage bound failed');
        throw e;
      });
      this.#rotations.set(id, r);
    }
    return r;
  }

  /**
   * What is known of each of a key's `versions`: its stored record, read from etcd (one range
   * read per key), merged with this replica's unflushed last use.
   */
  async ofKey(keyId: string, versions: number[]): Promise<Map<number, UsageRecord>> {
    const byVersion = await this.#store.ofKey(keyId);
    const out = new Map<number, UsageRecord>();
    for (const version of versions) {
      const r = byVersion.get(version) ?? EMPTY;
      const local = this.#slots.get(`${keyId}#${version}`)?.lastUsed ?? 0;
      out.set(version, local === 0 || (r.lastUsedAt && Date.parse(r.lastUsedAt) >= local) ? r : { ...r, lastUsedAt: new Date(local).toISOString() });
    }
    return out;
  }

  /** Writes last-use times that moved since the last flush (a compare-and-swap each, keeping the later time). */
  async flush(): Promise<void> {
    if (!this.#store.writable) return; // sealed: written after the next unseal
    const due = [...this.#slots.values()].filter((s) => s.lastUsed > s.flushedLastUse);
    await forEachConcurrent(due, 32, (s) => this.#flushOne(s));
  }

  async #flushOne(s: Slot): Promise<void> {
    const at = s.lastUsed;
    await this.#store.change(s.keyId, s.version, 5, (cur) => (cur.lastUsedAt && Date.parse(cur.lastUsedAt) >= at ? undefined : { ...cur, lastUsedAt: new Date(at).toISOString() }));
    s.flushedLastUse = Math.max(s.flushedLastUse, at);
  }

  /** Writes what is left and stops the flush timer. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush().catch(() => {});
  }
}
