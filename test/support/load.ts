/**
 * A steady, open-loop load of Encrypt, Decrypt and CreateKey from the TypeScript SDK, for
 * fault-injection tests: calls are started at a fixed rate whatever the cluster does (so a
 * fault shows as failures, not as a slower caller), every outcome is recorded with its start
 * and end time, and every acknowledged write is kept in a ledger that `verifyLedger` checks
 * later: an acknowledged CreateKey must still name a usable key, an acknowledged Encrypt must
 * still decrypt to its plaintext.
 */
import { randomBytes } from 'node:crypto';
import { KeyshardError, statusName, type Context, type KeyshardClient } from '@keyshard/client';

/**
 * EncryptNew is the first Encrypt with a key just created (right after its CreateKey was
 * acknowledged, through whichever replica the SDK picks): it measures read-your-writes across
 * replicas, apart from Encrypt with long-lived keys.
 */
export type OpKind = 'Encrypt' | 'Decrypt' | 'CreateKey' | 'EncryptNew';
export const OP_KINDS: readonly OpKind[] = ['Encrypt', 'Decrypt', 'CreateKey', 'EncryptNew'];

export interface OpRecord {
  kind: OpKind;
  start: number;
  end: number;
  ok: boolean;
  /** gRPC status name of a failure (or WRONG_PLAINTEXT: a Decrypt that answered something else). */
  code?: string;
  /** The name a CreateKey asked for. */
  name?: string;
}

export interface AckedCiphertext {
  ciphertext: Buffer;
  plaintext: Buffer;
  context: Context;
  keyId: string;
  ackAt: number;
}

export interface AckedKey {
  id: string;
  name: string;
  ackAt: number;
}

export interface Ledger {
  ciphertexts: AckedCiphertext[];
  keys: AckedKey[];
}

export interface LoadOptions {
  client: KeyshardClient;
  /** Calls started per second, all kinds together. */
  rate: number;
  /** Relative weights of the kinds started by the clock (each acknowledged CreateKey adds an EncryptNew). */
  mix: Record<'Encrypt' | 'Decrypt' | 'CreateKey', number>;
  /** Keys Encrypt uses (names or ids). */
  keys: string[];
  /** CreateKey names are `${namePrefix}-<n>`. */
  namePrefix: string;
  /** Calls in flight beyond which a tick starts none (counted in `shed`). */
  maxInFlight?: number;
}

export interface WindowStats {
  total: number;
  ok: number;
  /** ok / total; 1 when nothing was started. */
  ratio: number;
  /** Failures by status name. */
  codes: Record<string, number>;
}

const TICK_MS = 10;

export class SteadyLoad {
  readonly ops: OpRecord[] = [];
  readonly ledger: Ledger = { ciphertexts: [], keys: [] };
  /** CreateKeys that failed: the key may exist all the same (the call is ambiguous once sent). */
  readonly failedCreates: { name: string; code: string; at: number }[] = [];
  /** Calls not started because too many were in flight. */
  shed = 0;
  #o: Required<LoadOptions>;
  #timer: NodeJS.Timeout | undefined;
  #inFlight = new Set<Promise<void>>();
  #started = 0;
  #t0 = 0;
  #seq = 0;
  #weights: [OpKind, number][];

  constructor(opts: LoadOptions) {
    this.#o = { maxInFlight: 4_000, ...opts };
    const kinds = ['Encrypt', 'Decrypt', 'CreateKey'] as const;
    const sum = kinds.reduce((s, k) => s + opts.mix[k], 0);
    let acc = 0;
    this.#weights = kinds.map((k) => [k, (acc += opts.mix[k] / sum)]);
  }

  start(): void {
    this.#t0 = Date.now();
    this.#started = 0;
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
  }

  /** Stops starting calls and waits for those in flight. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    while (this.#inFlight.size) await Promise.allSettled([...this.#inFlight]);
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  #tick(): void {
    const due = Math.floor(((Date.now() - this.#t0) / 1000) * this.#o.rate);
    for (; this.#started < due; this.#started++) {
      if (this.#inFlight.size >= this.#o.maxInFlight) {
        this.shed++;
        continue;
      }
      this.#track(this.#one(this.#pick()));
    }
  }

  #track(p: Promise<void>): void {
    this.#inFlight.add(p);
    void p.finally(() => this.#inFlight.delete(p));
  }

  #pick(): OpKind {
    const r = Math.random();
    const kind = this.#weights.find(([, w]) => r < w)?.[0] ?? 'Encrypt';
    return kind === 'Decrypt' && this.ledger.ciphertexts.length === 0 ? 'Encrypt' : kind;
  }

  async #one(kind: OpKind): Promise<void> {
    if (kind === 'Encrypt') return this.#encrypt(this.#o.keys[Math.floor(Math.random() * this.#o.keys.length)]!);
    if (kind === 'Decrypt') return this.#decrypt(this.ledger.ciphertexts[Math.floor(Math.random() * this.ledger.ciphertexts.length)]!);
    return this.#createKey();
  }

  async #record<T>(kind: OpKind, call: () => Promise<T>, check: (v: T) => string | undefined = () => undefined, name?: string): Promise<{ value?: T; code?: string }> {
    const start = Date.now();
    let value: T | undefined;
    let code: string | undefined;
    try {
      value = await call();
      code = check(value);
    } catch (e) {
      code = codeOf(e);
    }
    this.ops.push({ kind, start, end: Date.now(), ok: !code, code, ...(name === undefined ? {} : { name }) });
    return code ? { code } : { value };
  }

  async #encrypt(key: string, kind: 'Encrypt' | 'EncryptNew' = 'Encrypt'): Promise<void> {
    const n = ++this.#seq;
    const plaintext = randomBytes(24);
    const context = { n: String(n) };
    const { value: r } = await this.#record(kind, () => this.#o.client.encrypt(key, plaintext, context));
    if (r) this.ledger.ciphertexts.push({ ciphertext: r.ciphertext, plaintext, context, keyId: r.key_id, ackAt: Date.now() });
  }

  async #decrypt(c: AckedCiphertext): Promise<void> {
    await this.#record(
      'Decrypt',
      () => this.#o.client.decrypt(c.ciphertext, c.context),
      (r) => (r.plaintext.equals(c.plaintext) ? undefined : 'WRONG_PLAINTEXT'),
    );
  }

  async #createKey(): Promise<void> {
    const name = `${this.#o.namePrefix}-${++this.#seq}`;
    const { value: k, code } = await this.#record('CreateKey', () => this.#o.client.createKey(name), undefined, name);
    if (!k) {
      this.failedCreates.push({ name, code: code!, at: Date.now() });
      return;
    }
    this.ledger.keys.push({ id: k.id, name, ackAt: Date.now() });
    await this.#encrypt(k.id, 'EncryptNew'); // the new key's material must work, and stays checked through its ciphertext
  }

  /** Calls started in [from, to), of one kind, of several, or all. */
  window(from: number, to: number, kind?: OpKind | readonly OpKind[]): WindowStats {
    const s: WindowStats = { total: 0, ok: 0, ratio: 1, codes: {} };
    const kinds = kind === undefined ? undefined : typeof kind === 'string' ? [kind] : kind;
    for (const op of this.ops) {
      if (op.start < from || op.start >= to || (kinds && !kinds.includes(op.kind))) continue;
      s.total++;
      if (op.ok) s.ok++;
      else s.codes[op.code ?? '?'] = (s.codes[op.code ?? '?'] ?? 0) + 1;
    }
    s.ratio = s.total ? s.ok / s.total : 1;
    return s;
  }

  /**
   * When the load of `kinds` was back to ~100 %: the end of the last `bucketMs` bucket in
   * [from, to) whose success ratio is below `threshold` (so `from` itself if none was).
   */
  recoveredAt(from: number, to: number, kinds?: readonly OpKind[], bucketMs = 1_000, threshold = 0.99): number {
    let recovered = from;
    for (let b = from; b < to; b += bucketMs) if (this.window(b, Math.min(b + bucketMs, to), kinds).ratio < threshold) recovered = Math.min(b + bucketMs, to);
    return recovered;
  }
}

/** The status name of a failed call: the SDK's KeyshardError carries it, a raw grpc-js error its number. */
export function codeOf(e: unknown): string {
  const code = (e as { code?: unknown }).code;
  if (e instanceof KeyshardError) return e.code;
  return typeof code === 'number' ? (statusName(code) ?? String(code)) : (e as Error).message;
}

export interface LedgerCheck {
  /** Acknowledged CreateKeys whose key is gone, or no longer encrypts and decrypts. */
  keysLost: AckedKey[];
  /** Acknowledged Encrypts whose ciphertext no longer decrypts to its plaintext. */
  undecryptable: (AckedCiphertext & { why: string })[];
  keysChecked: number;
  ciphertextsChecked: number;
  /** Writes that were missing or failed at first but were there on a later try (a replica's stale view), and the longest wait. */
  stale: number;
  staleMs: number;
}

const BATCH = 500;

/**
 * Checks every acknowledged write in `ledger`: each key is listed and usable (keys without an
 * acknowledged ciphertext get an Encrypt/Decrypt round trip, whose ciphertext joins the ledger),
 * and each ciphertext decrypts to its plaintext. Any call may land on any replica, and a
 * replica's view may lag (it follows etcd through a watch), so whatever is missing or fails is
 * tried again for `patienceMs`; only what is still missing then counts as lost.
 */
export async function verifyLedger(client: KeyshardClient, ledger: Ledger, patienceMs = 30_000): Promise<LedgerCheck> {
  const t0 = Date.now();
  const deadline = t0 + patienceMs;
  const stale = new Set<unknown>();
  let staleMs = 0;
  const settle = (x: unknown) => {
    if (stale.has(x)) staleMs = Math.max(staleMs, Date.now() - t0);
  };

  let missing = ledger.keys;
  for (;;) {
    const listed = await listKeys(client, deadline);
    const still = missing.filter((k) => !['KEY_STATE_ENABLED', 'KEY_STATE_DISABLED'].includes(listed.get(k.id)?.state ?? ''));
    for (const k of missing) if (!still.includes(k)) settle(k);
    missing = still;
    if (!missing.length || Date.now() > deadline) break;
    for (const k of missing) stale.add(k);
    await sleep(1_000);
  }
  const keysLost = [...missing];

  const covered = new Set(ledger.ciphertexts.map((c) => c.keyId));
  let bare = ledger.keys.filter((k) => !covered.has(k.id) && !keysLost.includes(k));
  while (bare.length) {
    const failed: AckedKey[] = [];
    for (let i = 0; i < bare.length; i += BATCH) {
      const chunk = bare.slice(i, i + BATCH).map((k) => ({ k, plaintext: randomBytes(24), context: { verify: k.id } }));
      const res = await retrying(deadline, () => client.encryptBatch(chunk.map((c) => ({ key: c.k.id, plaintext: c.plaintext, context: c.context }))));
      res.results.forEach((r, j) => {
        const c = chunk[j]!;
        if (r.result) {
          settle(c.k);
          ledger.ciphertexts.push({ ciphertext: r.result.ciphertext, plaintext: c.plaintext, context: c.context, keyId: c.k.id, ackAt: Date.now() });
        } else failed.push(c.k);
      });
    }
    if (Date.now() > deadline) {
      keysLost.push(...failed);
      break;
    }
    for (const k of failed) stale.add(k);
    bare = failed;
    if (bare.length) await sleep(1_000);
  }

  let pending = ledger.ciphertexts.map((c) => ({ c, why: '' }));
  const ciphertextsChecked = pending.length;
  const undecryptable: LedgerCheck['undecryptable'] = [];
  while (pending.length) {
    const retry: typeof pending = [];
    for (let i = 0; i < pending.length; i += BATCH) {
      const chunk = pending.slice(i, i + BATCH);
      const res = await retrying(deadline, () => client.decryptBatch(chunk.map(({ c }) => ({ ciphertext: c.ciphertext, context: c.context }))));
      res.results.forEach((r, j) => {
        const item = chunk[j]!;
        const why = r.result ? (r.result.plaintext.equals(item.c.plaintext) ? '' : 'wrong plaintext') : `${statusName(r.error!.code)}: ${r.error!.message}`;
        if (!why) return settle(item.c);
        if (Date.now() < deadline) retry.push({ c: item.c, why });
        else undecryptable.push({ ...item.c, why });
      });
    }
    for (const { c } of retry) stale.add(c);
    pending = retry;
    if (pending.length) await sleep(1_000);
  }
  return { keysLost, undecryptable, keysChecked: ledger.keys.length, ciphertextsChecked, stale: stale.size, staleMs };
}

/** Every key (id -> name and state), page by page. */
export async function listKeys(client: KeyshardClient, deadline = Date.now() + 30_000): Promise<Map<string, { name: string; state: string }>> {
  const listed = new Map<string, { name: string; state: string }>();
  for (let token = ''; ; ) {
    const page = await retrying(deadline, () => client.listKeys(1000, token));
    for (const k of page.keys) listed.set(k.id, { name: k.name, state: k.state });
    if (!(token = page.next_page_token)) return listed;
  }
}

const RETRYABLE = new Set(['UNAVAILABLE', 'DEADLINE_EXCEEDED']);

/** Retries a whole call on a transient failure until `deadline`. */
async function retrying<T>(deadline: number, call: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await call();
    } catch (e) {
      if (!RETRYABLE.has(codeOf(e)) || Date.now() > deadline) throw e;
      await sleep(500);
    }
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
