/**
 * Key version material (brief, "Key hierarchy"), for keyring.ts. A new version's material is
 * generated here and wrapped by the current KEK with AAD = cluster id | key id | version
 * (@keyshard/crypto key-hierarchy); a stored version is unwrapped at its first use. Unwrapped
 * material is kept in memory only while unsealed: zeroized on seal and when its key is
 * destroyed, and never kept if the seal closed while it was being made or read.
 */
import { generateMaterial, unwrapVersion, wrapVersion, zeroize } from '@keyshard/crypto';
import { notFound } from '@keyshard/errors';
import type { Cluster } from '../cluster/cluster.ts';
import type { Seal } from '../cluster/seal.ts';
import type { KeyRecord, VersionRecord } from './key-record.ts';
import type { KeyStore } from './key-store.ts';

export class VersionMaterial {
  #cluster: Cluster;
  #seal: Seal;
  #store: KeyStore;
  #unwrapped = new Map<string, Buffer>(); // `${id}/${version}` -> unwrapped material

  constructor(cluster: Cluster, seal: Seal, store: KeyStore) {
    this.#cluster = cluster;
    this.#seal = seal;
    this.#store = store;
    seal.onSeal(() => {
      // One call per buffer: spreading a cache of >~120 k versions into one call overflows the
      // stack, and the material stayed in memory.
      for (const material of this.#unwrapped.values()) zeroize(material);
      this.#unwrapped.clear();
    });
  }

  /**
   * A version about to be stored. `make` generates fresh material for version `n` of `key` and
   * returns its record (wrapped) to store; each attempt of a compare-and-swap makes it again and
   * the last attempt's material is zeroized. `keep` keeps the material once its record is stored
   * (zeroized instead if sealed meanwhile); `discard` zeroizes what was not kept.
   */
  pending(): { make(key: KeyRecord, n: number): VersionRecord; keep(): void; discard(): void } {
    let made: { id: string; n: number; material: Buffer } | undefined;
    const discard = () => {
      if (made) zeroize(made.material);
      made = undefined;
    };
    return {
      make: (key, n) => {
        discard();
        const { record } = this.#cluster.requireInitialized();
        const material = generateMaterial(key.type);
        made = { id: key.id, n, material };
        const wrapped = wrapVersion(this.#seal.kek(record.kekEpoch), record.clusterId, key.id, n, material).toString('base64');
        return { version: n, kekEpoch: record.kekEpoch, wrapped, createdAt: new Date().toISOString() };
      },
      keep: () => {
        if (made && !this.#seal.sealed) this.#unwrapped.set(`${made.id}/${made.n}`, made.material);
        else discard();
        made = undefined;
      },
      discard,
    };
  }

  /** Zeroizes what is kept of key `id` (it was destroyed). */
  forget(id: string): void {
    for (const [cacheKey, material] of this.#unwrapped)
      if (cacheKey.startsWith(`${id}/`)) {
        zeroize(material);
        this.#unwrapped.delete(cacheKey);
      }
  }

  /** The unwrapped material of one version; throws "sealed" if sealed meanwhile. */
  async of(k: KeyRecord, version: number): Promise<Buffer> {
    const cacheKey = `${k.id}/${version}`;
    const cached = this.#unwrapped.get(cacheKey);
    if (cached) return cached;
    const v = await this.#store.version(k.id, version);
    if (!v) throw notFound(`key ${k.name} has no version ${version}`, { reason: 'KEY_VERSION_NOT_FOUND', metadata: { key_id: k.id, version: String(version) } });
    const { record } = this.#cluster.requireInitialized();
    // seal.kek() throws if the coordinator was sealed while etcd answered: nothing is kept then.
    const material = unwrapVersion(this.#seal.kek(v.kekEpoch), record.clusterId, k.id, version, Buffer.from(v.wrapped, 'base64'));
    this.#unwrapped.set(cacheKey, material);
    return material;
  }
}
