/**
 * The coordinator's seal: holds the root key, the unwrapped KEKs and the record MAC key
 * (record-integrity.ts) in memory while unsealed, nowhere else. Sealing zeroizes them and tells listeners (the keyring drops its material).
 * Invariant: a sealed coordinator answers FAILED_PRECONDITION, reason SEALED, and touches no key
 * material: every KeyService method that needs key material is refused by the seal interceptor
 * before its handler runs (server/methods.ts), and the keyring checks `requireOpen()` itself for
 * its internal callers (rotation sweep, usage bound, destroy-key).
 * A sealed coordinator of a cluster that does not exist (never initialised, destroyed, being
 * restored) answers reason UNINITIALIZED instead: nothing could unseal it. The Cluster tells
 * its seal whether it exists (followCluster), from the cluster record it follows in etcd.
 */
import { failedPrecondition, sealedError, uninitializedError } from '@keyshard/errors';
import { clearRandomPool, zeroize } from '@keyshard/crypto';

export class Seal {
  #root: Buffer | undefined;
  #keks = new Map<number, Buffer>();
  #recordMacKey: Buffer | undefined;
  #onSeal: (() => void)[] = [];
  #onOpen: (() => void)[] = [];
  #generation = 0;
  #initialized: () => boolean = () => true;

  get sealed(): boolean {
    return this.#root === undefined;
  }

  /** How to tell a sealed cluster from none (Cluster.initialized): the refusal's reason depends on it. */
  followCluster(initialized: () => boolean): void {
    this.#initialized = initialized;
  }

  /** Throws while sealed: reason SEALED, or UNINITIALIZED when there is no cluster to unseal. */
  requireOpen(): void {
    if (this.#root === undefined) throw this.#initialized() ? sealedError() : uninitializedError();
  }

  /** Changes on every seal: an unseal that began before a seal must not open after it. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Takes ownership of `root`, `keks` and `recordMacKey` (zeroized on seal). Refuses, zeroizing
   * them, if the coordinator was sealed since `generation` was read.
   */
  open(root: Buffer, keks: Map<number, Buffer>, generation: number, recordMacKey: Buffer): void {
    if (generation !== this.#generation) {
      zeroize(root, recordMacKey, ...keks.values());
      throw failedPrecondition('sealed while the unseal was in progress');
    }
    if (this.#root) this.seal();
    this.#root = root;
    this.#keks = keks;
    this.#recordMacKey = recordMacKey;
    for (const l of this.#onOpen) l();
  }

  onOpen(listener: () => void): void {
    this.#onOpen.push(listener);
  }

  /** A copy of the root key (the caller zeroizes it): reshare splits it anew. */
  rootCopy(): Buffer {
    this.requireOpen();
    return Buffer.from(this.#root!);
  }

  /** Epochs of the KEKs held. */
  kekEpochs(): number[] {
    this.requireOpen();
    return [...this.#keks.keys()];
  }

  /** After a root rotation is committed: the new root replaces the old (zeroized); KEKs stay. */
  replaceRoot(root: Buffer): void {
    this.requireOpen();
    zeroize(this.#root);
    this.#root = root;
  }

  /** The record MAC key (not a copy: callers use it at once and keep no reference). */
  recordMacKey(): Buffer {
    this.requireOpen();
    return this.#recordMacKey!;
  }

  kek(epoch: number): Buffer {
    this.requireOpen();
    const kek = this.#keks.get(epoch);
    if (!kek) throw sealedError();
    return kek;
  }

  onSeal(listener: () => void): void {
    this.#onSeal.push(listener);
  }

  seal(): void {
    this.#generation++;
    zeroize(this.#root, this.#recordMacKey, ...this.#keks.values());
    this.#root = undefined;
    this.#recordMacKey = undefined;
    this.#keks = new Map();
    clearRandomPool(); // CSPRNG bytes that would have become the next keys
    // Every listener runs even if one throws (each drops its own material); the first error is rethrown after.
    let failed: { error: unknown } | undefined;
    for (const l of this.#onSeal)
      try {
        l();
      } catch (error) {
        failed ??= { error };
      }
    if (failed) throw failed.error;
  }
}
