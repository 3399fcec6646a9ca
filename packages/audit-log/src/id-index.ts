/**
 * Every event id in a log with the index of the record that stored it, exactly: what makes the
 * sink's delivery idempotent (a resent event is acknowledged, not stored twice) and what the
 * verifier's duplicate check reads. A JavaScript Map or Set holds at most 2^24 entries (V8's
 * ordered hash tables: the 16,777,217th throws "maximum size exceeded"), which a busy sink
 * reaches in hours — so ids go into generations of ID_INDEX_GENERATION each, newest first. A
 * lookup probes each generation (resends are recent: they are found in the first probed).
 */

/** Ids per generation: half of what one Map can hold. */
export const ID_INDEX_GENERATION = 1 << 23;

export class IdIndex {
  private readonly generations: Map<string, number>[] = [new Map()];
  private count = 0;

  /** `generation`: ids per Map (tests use a small one). */
  constructor(private readonly generation = ID_INDEX_GENERATION) {}

  get size(): number {
    return this.count;
  }

  /** The index of the record that stored `id`, if one did. */
  indexOf(id: string): number | undefined {
    const g = this.generations;
    for (let i = g.length - 1; i >= 0; i--) {
      const at = g[i]!.get(id);
      if (at !== undefined) return at;
    }
    return undefined;
  }

  has(id: string): boolean {
    return this.indexOf(id) !== undefined;
  }

  /** Records `id` as stored at `index`; false (and nothing changes) if it is already known. */
  add(id: string, index: number): boolean {
    if (this.has(id)) return false;
    const g = this.generations;
    let newest = g[g.length - 1]!;
    newest.set(id, index);
    this.count += 1;
    if (newest.size >= this.generation) g.push((newest = new Map()));
    return true;
  }

  /** Forgets an id (undoing the add()s of a batch that is refused). */
  delete(id: string): void {
    for (const g of this.generations)
      if (g.delete(id)) {
        this.count -= 1;
        return;
      }
  }
}
