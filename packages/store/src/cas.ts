/**
 * Compare-and-swap writes that apply at most once although etcd's answer can be lost on the way
 * back. The client does not resend writes (resend-policy.ts), so these do: the same transaction,
 * again and again for a few seconds (an etcd leader election is over in about a second). A
 * compare must never hold again once its puts applied (a mod revision, or the creation of a key
 * nothing deletes), so at most one send applies. A compare that fails after a lost answer may
 * have failed on that earlier send's own write: the transaction then reads back the keys, and if
 * the first `witnesses` of them hold exactly what we put — values made for this one write, like a
 * fresh id or wrapped material — that send applied.
 *
 * A deletion has nothing of its own to read back: `deleteCas` takes the key being absent after a
 * lost answer as the proof (deleted by that send or by another: either way, what was asked).
 *
 * `commitCas` sends one; `CreateBatcher` groups concurrent create-if-absent writes into one
 * transaction of nested transactions (etcd ≥ 3.3), each with its own compare and its own answer:
 * group commit, the way the audit sink batches its appends.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { ComparatorBuilder, IKeyValue, ITxnResponse, Namespace } from 'etcd3';
import { KeyshardError } from '@keyshard/errors';
import { etcdCall } from './etcd-call.ts';
import { neverSent } from './resend-policy.ts';

/**
 * What a compare-and-swap found; `revision` is the etcd revision at which the puts applied.
 * `conflict`: ours did not apply. `unknown`: an answer was lost and the keys hold other values
 * now, so ours may have applied before them; the caller must not simply do it again.
 */
export type CasResult = { outcome: 'applied'; revision: string } | { outcome: 'conflict' | 'unknown' };

/**
 * Resends of a transaction while no answer comes back: at least MIN_SENDS sends (a send that
 * timed out after the whole call deadline still gets its resends), and more while within
 * RESEND_WINDOW_MS of the first failure: after connections are reset, grpc-js can take a second
 * or more to reconnect, and sends in that time fail at once without leaving ("No connection
 * established"). Pauses double from 100 ms to 1 s.
 */
const MIN_SENDS = 3;
const RESEND_WINDOW_MS = 5_000;
const FIRST_PAUSE_MS = 100;
const MAX_PAUSE_MS = 1_000;

/** Sends `txn` until an answer comes back; `lost`: an earlier send may have applied unseen. */
async function sendUntilAnswered(what: string, txn: () => Promise<ITxnResponse>): Promise<{ res: ITxnResponse; lost: boolean }> {
  let lost = false;
  let firstFailure: number | undefined;
  for (let send = 1, pause = FIRST_PAUSE_MS; ; send++, pause = Math.min(pause * 2, MAX_PAUSE_MS)) {
    try {
      return { res: await etcdCall(what, txn), lost };
    } catch (e) {
      if (!(e instanceof KeyshardError && e.code === 'UNAVAILABLE')) throw e;
      firstFailure ??= Date.now();
      if (send >= MIN_SENDS && Date.now() + pause - firstFailure > RESEND_WINDOW_MS) throw e;
      lost ||= !neverSent(e.cause);
    }
    await delay(pause);
  }
}

/**
 * One CAS's outcome from its answer: `held` is what its failure branch read back (the witness
 * keys), consulted only when an earlier answer was lost; each must hold its `expected` value
 * (undefined: be absent). The revision is the first witness's, or the answer's if it is absent.
 */
function outcomeOf(succeeded: boolean, revision: string, lost: boolean, expected: (string | undefined)[], held: () => (IKeyValue | undefined)[]): CasResult {
  if (succeeded) return { outcome: 'applied', revision };
  if (!lost) return { outcome: 'conflict' };
  const kvs = held();
  if (kvs.every((kv, i) => kv?.value.toString() === expected[i])) return { outcome: 'applied', revision: kvs[0]?.mod_revision ?? revision };
  return { outcome: 'unknown' };
}

const firstKv = (r: { response_range: { kvs: IKeyValue[] } }) => r.response_range.kvs[0];

/** Every key under `prefix`, deleted in a compare-and-swap beside its puts. */
export interface CasPrefixDeletion {
  prefix: string;
}

/** Commits `puts` (and `deletions`) if `compare` holds, exactly once (see above). */
export async function commitCas(
  ns: Namespace,
  what: string,
  compare: () => ComparatorBuilder,
  puts: [string, string][],
  witnesses = puts.length,
  deletions: CasPrefixDeletion[] = [],
): Promise<CasResult> {
  const { res, lost } = await sendUntilAnswered(what, () =>
    compare()
      .then(...puts.map(([k, v]) => ns.put(k).value(v)), ...deletions.map((d) => ns.delete().prefix(d.prefix)))
      .else(...puts.slice(0, witnesses).map(([k]) => ns.get(k)))
      .commit(),
  );
  return outcomeOf(res.succeeded, res.header.revision, lost, puts.map(([, v]) => v), () => res.responses.map(firstKv));
}

/**
 * Deletes `key` (and commits `puts` with it) if `compare` holds, exactly once (see above: its
 * absence, and each put's value, witness a lost answer).
 */
export async function deleteCas(ns: Namespace, what: string, compare: () => ComparatorBuilder, key: string, puts: [string, string][] = []): Promise<CasResult> {
  const { res, lost } = await sendUntilAnswered(what, () =>
    compare()
      .then(ns.delete().key(key), ...puts.map(([k, v]) => ns.put(k).value(v)))
      .else(ns.get(key), ...puts.map(([k]) => ns.get(k)))
      .commit(),
  );
  return outcomeOf(res.succeeded, res.header.revision, lost, [undefined, ...puts.map(([, v]) => v)], () => res.responses.map(firstKv));
}

/** A create-if-absent: `puts` if `guard` was never created (it must be one of them, never deleted). */
export interface CreateIfAbsent {
  guard: string;
  puts: [string, string][];
  /** The first puts that prove a lost answer applied (values made for this write); default all. */
  witnesses?: number;
  /** More keys that must not exist either (e.g. the request token the create is recorded under). */
  absent?: string[];
}

interface Pending extends CreateIfAbsent {
  bytes: number;
  resolve(r: CasResult): void;
  reject(e: unknown): void;
}

export interface CreateBatcherOptions {
  /**
   * Creates per transaction. etcd refuses a transaction whose nested transactions have more
   * operations than `--max-txn-ops` (128 by default) less the outer transaction's count, so
   * 3 puts each allow up to 125; 64 leaves room.
   */
  maxBatch?: number;
  /** Bytes a transaction may take, framing included (etcd's `--max-request-bytes` is 1.5 MiB by default). */
  maxBatchBytes?: number;
  /** Transactions on their way at once; the creates that arrive meanwhile form the next ones. */
  maxInFlight?: number;
}

/**
 * Commits concurrent create-if-absent writes as few etcd transactions: each create is a nested
 * transaction with its own compare, puts and read-back, so each gets its own outcome exactly as
 * from commitCas, and a lost answer is resent for the whole batch (every nested compare still
 * guards its own puts). etcd refuses a transaction that puts one key twice, so creates that
 * share a key (two creates of one name) go to different batches; with two batches on their way,
 * both may be in flight together, and etcd's order decides which one finds the name free.
 */
export class CreateBatcher {
  readonly #ns: Namespace;
  readonly #what: string;
  readonly #maxBatch: number;
  readonly #maxBatchBytes: number;
  readonly #maxInFlight: number;
  #queue: Pending[] = [];
  #inFlight = 0;

  constructor(ns: Namespace, what: string, opts: CreateBatcherOptions = {}) {
    this.#ns = ns;
    this.#what = what;
    this.#maxBatch = opts.maxBatch ?? 64;
    this.#maxBatchBytes = opts.maxBatchBytes ?? 512 * 1024;
    this.#maxInFlight = opts.maxInFlight ?? 2;
  }

  create(c: CreateIfAbsent): Promise<CasResult> {
    return new Promise((resolve, reject) => {
      // What the create adds to the request: its puts, its compare and read-back keys, all with
      // the namespace prefix, and the protobuf framing (a generous 32 bytes a key).
      const keyBytes = (k: string) => this.#ns.prefix.length + Buffer.byteLength(k) + 32;
      const bytes = keyBytes(c.guard) + (c.absent ?? []).reduce((n, k) => n + keyBytes(k), 0) + c.puts.reduce((n, [k, v]) => n + 2 * keyBytes(k) + Buffer.byteLength(v), 0);
      this.#queue.push({ ...c, bytes, resolve, reject });
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#inFlight < this.#maxInFlight && this.#queue.length > 0) {
      const batch = this.#take();
      this.#inFlight++;
      void this.#commit(batch).finally(() => {
        this.#inFlight--;
        this.#pump();
      });
    }
  }

  /** The next batch: queued creates in order, skipping (for later) any that shares a key with it. */
  #take(): Pending[] {
    const batch: Pending[] = [];
    const rest: Pending[] = [];
    const keys = new Set<string>();
    let bytes = 0;
    for (const p of this.#queue) {
      const fits = batch.length === 0 || (batch.length < this.#maxBatch && bytes + p.bytes <= this.#maxBatchBytes);
      if (!fits || p.puts.some(([k]) => keys.has(k))) {
        rest.push(p);
        continue;
      }
      batch.push(p);
      bytes += p.bytes;
      for (const [k] of p.puts) keys.add(k);
    }
    this.#queue = rest;
    return batch;
  }

  /** Never rejects: each create's promise gets the outcome or the error. */
  async #commit(batch: Pending[]): Promise<void> {
    const key = (k: string) => Buffer.concat([this.#ns.prefix, Buffer.from(k)]);
    try {
      const request = {
        compare: [],
        failure: [],
        success: batch.map((p) => ({
          request_txn: {
            compare: [p.guard, ...(p.absent ?? [])].map((k) => ({ key: key(k), target: 'Create' as const, result: 'Equal' as const, create_revision: '0' })),
            success: p.puts.map(([k, v]) => ({ request_put: { key: key(k), value: Buffer.from(v) } })),
            failure: p.puts.slice(0, p.witnesses ?? p.puts.length).map(([k]) => ({ request_range: { key: key(k) } })),
          },
        })),
      };
      const { res, lost } = await sendUntilAnswered(this.#what, () => this.#ns.kv.txn(request as never));
      batch.forEach((p, i) => {
        const r = res.responses[i]!.response_txn;
        p.resolve(outcomeOf(r.succeeded, res.header.revision, lost, p.puts.map(([, v]) => v), () => r.responses.map(firstKv)));
      });
    } catch (e) {
      for (const p of batch) p.reject(e);
    }
  }
}
