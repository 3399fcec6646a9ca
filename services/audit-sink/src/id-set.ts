/**
 * The ids of every stored event, exactly: what makes delivery idempotent (a resent event is
 * acknowledged, not stored twice). A JavaScript Set holds at most 2^24 entries (V8's
 * OrderedHashSet; the 16,777,217th add throws "Set maximum size exceeded"), which a busy sink
 * reaches in hours — so ids go into generations of ID_SET_GENERATION ids each, newest first.
 * A lookup probes each generation (resends are recent: they are found in the first); memory is
 * that of the strings, as before.
 */
/** Ids per generation: half of what one Set can hold. */
export const ID_SET_GENERATION = 1 << 23;

export class IdSet {
  private readonly generations: Set<string>[] = [new Set()];
  private count = 0;

  /** `generation`: ids per Set (tests use a small one). */
  constructor(private readonly generation = ID_SET_GENERATION) {}

  get size(): number {
    return this.count;
  }

  has(id: string): boolean {
    const g = this.generations;
    for (let i = g.length - 1; i >= 0; i--) if (g[i]!.has(id)) return true;
    return false;
  }

  /** Adds `id`; false (and nothing changes) if it is already in the set. */
  add(id: string): boolean {
    if (this.generations.length > 1 && this.has(id)) return false;
    let newest = this.generations[this.generations.length - 1]!;
    const before = newest.size;
    if (newest.add(id).size === before) return false;
    this.count += 1;
    if (newest.size >= this.generation) this.generations.push((newest = new Set()));
    return true;
  }

  /** Removes an id (undoing the add()s of a batch that is refused). */
  delete(id: string): void {
    for (const g of this.generations) if (g.delete(id)) {
      this.count -= 1;
      return;
    }
  }
}
