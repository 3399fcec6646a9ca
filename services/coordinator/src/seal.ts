/**
 * The coordinator's seal: holds the root key and the unwrapped KEKs in memory while unsealed,
 * nowhere else. Sealing zeroizes them and tells listeners (the keyring drops its material).
 * Invariant: every key operation calls `requireOpen()` first, so a sealed coordinator
 * answers FAILED_PRECONDITION "sealed" and touches no key material.
 */
import { sealedError } from '@keyshard/errors';
import { zeroize } from '@keyshard/crypto';

export class Seal {
  #root: Buffer | undefined;
  #keks = new Map<number, Buffer>();
  #onSeal: (() => void)[] = [];

  get sealed(): boolean {
    return this.#root === undefined;
  }

  requireOpen(): void {
    if (this.#root === undefined) throw sealedError();
  }

  /** Takes ownership of `root` and `keks`: they are zeroized on seal. */
  open(root: Buffer, keks: Map<number, Buffer>): void {
    if (this.#root) this.seal();
    this.#root = root;
    this.#keks = keks;
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
    zeroize(this.#root, ...this.#keks.values());
    this.#root = undefined;
    this.#keks = new Map();
    for (const l of this.#onSeal) l();
  }
}
