/**
 * The ceremony aggregate in etcd: ceremony records, the one-open-ceremony-per-kind locks, and
 * the vouches unsealed replicas leave for join ceremonies. Nothing else in the coordinator
 * reads or writes these keys (@keyshard/store `paths`: ceremonies/, ceremony-lock/, join-vouches/).
 *
 *   ceremonies/<id>               the ceremony; approval ceremonies carry a record MAC
 *   ceremony-lock/<kind>          id of the open ceremony of that kind: `unseal`, `join-<replica>`,
 *                                 or the approval operation's name
 *   join-vouches/<id>/<replica>   an unsealed replica's vouch for join <id> (join-voucher.ts)
 *
 * Invariants: a record MAC is required on every read that acts on an approval ceremony
 * (reshare, destroy-key, …; record-integrity.ts); share-releasing ones (unseal, join, recover)
 * are written by sealed replicas, which hold no MAC key: they are bound by the ceremony hash
 * the custodians sign instead. Progress is written only by compare-and-swap on an OPEN record
 * whose bound fields still hash to what the custodians saw; a record changed underneath is
 * never written over. Which of the two a read expects comes from the caller's own knowledge of
 * the ceremony (its lock or its in-memory copy), never from the stored operation field.
 * A start carrying a request token (keys/request-tokens.ts) records it with the ceremony's id in
 * the creating transaction, which then also requires the token unrecorded: a repeated start
 * answers that ceremony and never opens a second one.
 */
import { ceremonyHash, RELEASING_OPERATIONS, type Ceremony } from '@keyshard/crypto';
import { KeyshardError } from '@keyshard/errors';
import { etcdCall, paths, type Namespace } from '@keyshard/store';
import { integrityError, type RecordIntegrity } from '../cluster/record-integrity.ts';
import { boundToken, settle } from '../keys/request-tokens.ts';

/** A vouch as stored (join-voucher.ts writes it; the joiner reads it). */
export interface StoredVouch {
  voucher: string;
  seal_epoch: number;
  not_after: string;
  signature: string; // base64
}

/** The lock a ceremony holds while open: one unseal, one join per replica, one of each approval operation. */
export function lockOf(c: Pick<Ceremony, 'operation' | 'initiator'>): string {
  return c.operation === 'join' ? `join-${c.initiator}` : c.operation;
}

/** Whether records of `operation` carry a record MAC (approval ceremonies do; share-releasing ones cannot). */
export const macked = (operation: string): boolean => !RELEASING_OPERATIONS.has(operation);

export const MISMATCH = 'the stored ceremony no longer matches what the custodians approved; nothing was done';

/** True when `stored` still states what the custodians were shown for `c`. */
export const matches = (stored: Ceremony, c: Ceremony): boolean => ceremonyHash(stored) === c.hash && stored.hash === c.hash;

/** Where a run records the ceremony (CeremonyStore below for etcd; a restore keeps it in the call). */
export interface CeremonyRecords {
  /** The ceremony as recorded now (checked), or undefined if it is gone. */
  current(c: Ceremony): Promise<Ceremony | undefined>;
  progress(c: Ceremony): Promise<void>;
  final(c: Ceremony): Promise<void>;
}

export class CeremonyStore implements CeremonyRecords {
  readonly #ns: Namespace;
  readonly #integrity: RecordIntegrity;

  constructor(ns: Namespace, integrity: RecordIntegrity) {
    this.#ns = ns;
    this.#integrity = integrity;
  }

  /**
   * The record of ceremony `id` as the caller expects it — `operation` is the operation it knows
   * the ceremony to be (or 'approval' for any approval ceremony): MAC verified (the integrity
   * error if it fails) unless a share-releasing one.
   */
  async read(id: string, operation: string): Promise<Ceremony | undefined> {
    const raw = await this.#raw(id);
    if (raw === undefined) return undefined;
    return macked(operation) ? this.#integrity.open<Ceremony>(paths.ceremony(id), raw) : (JSON.parse(raw) as Ceremony);
  }

  /** The record of `c` as the runner checks it (CeremonyRecords). */
  current(c: Ceremony): Promise<Ceremony | undefined> {
    return this.read(c.id, c.operation);
  }

  /** Like read, but a record that fails its check (reported) reads as undefined. */
  async peek(id: string, operation: string): Promise<Ceremony | undefined> {
    const raw = await this.#raw(id);
    if (raw === undefined) return undefined;
    if (!macked(operation)) return JSON.parse(raw) as Ceremony;
    return this.#integrity.check<Ceremony>(paths.ceremony(id), raw);
  }

  /**
   * A stored ceremony as shown to an operator: an open approval ceremony is checked when this
   * replica can (unsealed), the integrity error if it fails (reported); finished ones are history.
   */
  async show(id: string): Promise<Ceremony | undefined> {
    const raw = await this.#raw(id);
    if (raw === undefined) return undefined;
    const c = this.#shown(raw);
    if (!c) throw integrityError(paths.ceremony(id));
    return c;
  }

  /** Every stored ceremony as shown (see show; one that fails its check is left out), newest first; only open ones unless `includeFinished`. */
  async list(includeFinished: boolean): Promise<Ceremony[]> {
    const all = await etcdCall('list ceremonies', () => this.#ns.getAll().prefix(paths.ceremoniesPrefix).strings());
    return Object.values(all)
      .map((raw) => this.#shown(raw))
      .filter((c): c is Ceremony => c !== undefined && (includeFinished || c.state === 'CEREMONY_STATE_OPEN'))
      .sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  }

  /** Calls `onPut` with every ceremony written from now on (unparseable records skipped). */
  async watch(onPut: (c: Ceremony) => void): Promise<void> {
    const watcher = await etcdCall('watch ceremonies', () => this.#ns.watch().prefix(paths.ceremoniesPrefix).create());
    watcher.on('put', (kv) => {
      let c: Ceremony;
      try {
        c = JSON.parse(kv.value.toString()) as Ceremony;
      } catch {
        return;
      }
      onPut(c);
    });
  }

  /** The id of the ceremony holding `lock`, if any. */
  async lockHolder(lock: string): Promise<string | undefined> {
    return (await etcdCall('read ceremony lock', () => this.#ns.get(paths.ceremonyLock(lock)).string())) ?? undefined;
  }

  /** Releases `lock` if `id` still holds it. */
  async unlock(lock: string, id: string): Promise<void> {
    const key = paths.ceremonyLock(lock);
    await etcdCall('release ceremony lock', () => this.#ns.if(key, 'Value', '==', id).then(this.#ns.delete().key(key)).commit());
  }

  /**
   * Stores a new ceremony and takes its lock, in one transaction; false if the lock is held. The
   * running call's request token, if any, is recorded in it (throws if a concurrent attempt of
   * the same call recorded it first: request-tokens.ts `settle`).
   */
  async create(c: Ceremony): Promise<boolean> {
    const ns = this.#ns;
    const lock = paths.ceremonyLock(lockOf(c));
    const body = this.#body(c);
    const t = boundToken();
    const puts = [ns.put(lock).value(c.id), ns.put(paths.ceremony(c.id)).value(body)];
    if (t) {
      const [path, value] = t.put({ ceremony: { id: c.id, operation: c.operation } }, this.#integrity);
      puts.push(ns.put(path).value(value));
    }
    const res = await etcdCall(`create ${c.operation} ceremony`, () => {
      const cmp = ns.if(lock, 'Create', '==', 0);
      if (t) cmp.and(t.path, 'Create', '==', 0);
      return cmp.then(...puts).commit();
    });
    await settle(ns, t, res.succeeded);
    return res.succeeded;
  }

  /**
   * Records progress of an open ceremony: only by compare-and-swap on the record read here, if
   * it is still OPEN; throws (FAILED_PRECONDITION) if its bound fields changed underneath.
   */
  async progress(c: Ceremony): Promise<void> {
    const key = paths.ceremony(c.id);
    const res = await etcdCall('read ceremony', () => this.#ns.get(key).exec());
    const kv = res.kvs[0];
    if (!kv) return;
    const stored = macked(c.operation) ? this.#integrity.open<Ceremony>(key, kv.value) : (JSON.parse(kv.value.toString()) as Ceremony);
    if (stored.state !== 'CEREMONY_STATE_OPEN') return;
    if (!matches(stored, c)) throw new KeyshardError('FAILED_PRECONDITION', MISMATCH, { reason: 'INTEGRITY_FAILURE' });
    const body = this.#body(c);
    await etcdCall('update ceremony', () => this.#ns.if(key, 'Mod', '==', kv.mod_revision).then(this.#ns.put(key).value(body)).commit());
  }

  /**
   * Records a ceremony's end and releases its lock (a join's vouches go too). A replica sealed
   * meanwhile cannot MAC: the final state is then written without one. It drives nothing:
   * every read that acts on an approval ceremony checks the MAC.
   */
  async final(c: Ceremony): Promise<void> {
    const body = this.#body(c);
    await etcdCall(`put ${paths.ceremony(c.id)}`, () => this.#ns.put(paths.ceremony(c.id)).value(body).exec());
    await this.unlock(lockOf(c), c.id);
    if (c.operation === 'join') await etcdCall('drop join vouches', () => this.#ns.delete().prefix(paths.joinVouchesPrefix(c.id)).exec());
  }

  /** Leaves `voucher`'s vouch for join `ceremonyId` (never overwrites one). */
  async putVouch(ceremonyId: string, voucher: string, vouch: StoredVouch): Promise<void> {
    const key = paths.joinVouch(ceremonyId, voucher);
    await etcdCall(`create ${key}`, () => this.#ns.if(key, 'Create', '==', 0).then(this.#ns.put(key).value(JSON.stringify(vouch))).commit());
  }

  /** The vouches left for join `ceremonyId` (unparseable ones skipped). */
  async vouches(ceremonyId: string): Promise<StoredVouch[]> {
    const all = await etcdCall('list join vouches', () => this.#ns.getAll().prefix(paths.joinVouchesPrefix(ceremonyId)).strings());
    const out: StoredVouch[] = [];
    for (const raw of Object.values(all)) {
      try {
        out.push(JSON.parse(raw) as StoredVouch);
      } catch {
        // not a vouch: ignored (the joiner verifies every vouch it uses anyway)
      }
    }
    return out;
  }

  #body(c: Ceremony): string {
    return macked(c.operation) && this.#integrity.available ? this.#integrity.stamp(paths.ceremony(c.id), c) : JSON.stringify(c);
  }

  async #raw(id: string): Promise<string | undefined> {
    return (await etcdCall('read ceremony', () => this.#ns.get(paths.ceremony(id)).string())) ?? undefined;
  }

  #shown(raw: string): Ceremony | undefined {
    const { mac: _mac, ...c } = JSON.parse(raw) as Ceremony & { mac?: string };
    if (c.state !== 'CEREMONY_STATE_OPEN' || !macked(c.operation) || !this.#integrity.available) return c;
    return this.#integrity.check<Ceremony>(paths.ceremony(c.id), raw);
  }
}
