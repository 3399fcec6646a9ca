/**
 * The coordinator's seal: holds the root key and the unwrapped KEKs in memory while unsealed,
 * nowhere else. Sealing zeroizes them and tells listeners (the keyring drops its material).
 * Invariant: every key operation calls `requireOpen()` first, so a sealed coordinator
 * answers FAILED_PRECONDITION "sealed" and touches no key material.
 */
import { failedPrecondition, sealedError } from '@keyshard/errors';
import { clearRandomPool, zeroize } from '@keyshard/crypto';

export class Seal {
  #root: Buffer | undefined;
  #keks = new Map<number, Buffer>();
  #onSeal: (() => void)[] = [];
  #onOpen: (() => void)[] = [];
  #generation = 0;

  get sealed(): boolean {
    return this.#root === undefined;
  }

  requireOpen(): void {
    if (this.#root === undefined) throw sealedError();
  }

  /** Changes on every seal: an unseal that began before a seal must not open after it. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Takes ownership of `root` and `keks` (zeroized on seal). Refuses, zeroizing them, if the
   * coordinator was sealed since `generation` was read.
   */
  open(root: Buffer, keks: Map<number, Buffer>, generation: number): void {
    if (generation !== this.#generation) {
      zeroize(root, ...keks.values());
      throw failedPrecondition('sealed while the unseal was in progress');
    }
    if (this.#root) this.seal();
    this.#root = root;
    this.#keks = keks;
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
    zeroize(this.#root, ...this.#keks.values());
    this.#root = undefined;
    this.#keks = new Map();
    clearRandomPool(); // CSPRNG bytes that would have become the next keys
    for (const l of this.#onSeal) l();
  }
}
