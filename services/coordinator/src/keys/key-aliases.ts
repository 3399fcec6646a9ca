/**
 * Aliases (`alias/<name>` in any key reference): each names one key, is unique, and carries a
 * record MAC (key-store.ts). For keyring.ts, which checks the seal first. Creating one requires
 * that it does not exist; repointing or deleting one requires that it still names the key the
 * caller was authorised against — a compare-and-swap on its etcd revision, so an alias changed
 * meanwhile is never overwritten on the strength of an authorisation against its old key.
 */
import { alreadyExists, unavailable } from '@keyshard/errors';
import type { KeyCache } from './key-cache.ts';
import { validateName } from './key-record.ts';
import type { KeyStore } from './key-store.ts';

export interface Alias {
  name: string;
  keyId: string;
}

export class KeyAliases {
  #store: KeyStore;
  #cache: KeyCache;

  constructor(store: KeyStore, cache: KeyCache) {
    this.#store = store;
    this.#cache = cache;
  }

  /** Creates alias `name` of key `keyId` (`from` undefined: it must not exist) or repoints it (`from`: the key id it must still name). */
  async put(name: string, keyId: string, from?: string): Promise<Alias> {
    validateName(name, 'alias');
    const revision = from ? await this.#revision(name, from) : undefined;
    // An alias can be deleted and made again, so a resend after a lost answer could recreate or
    // repoint one changed in the moments since: it then names the key this caller asked for.
    const res = await this.#store.putAlias(name, keyId, revision);
    if (res.outcome !== 'applied') throw from ? changed(name) : alreadyExists(`alias ${name} already exists`);
    this.#cache.rememberAlias(name, keyId, res.revision);
    return { name, keyId };
  }

  /** Deletes alias `name` if it still names `from`. */
  async delete(name: string, from: string): Promise<void> {
    validateName(name, 'alias');
    const res = await this.#store.deleteAlias(name, await this.#revision(name, from));
    if (res.outcome !== 'applied') throw changed(name);
    this.#cache.rememberAlias(name, undefined, res.revision);
  }

  /** The aliases known (of key `keyId` only, if given), in name order. */
  list(keyId?: string): Alias[] {
    return this.#cache.aliases()
      .filter(([, id]) => !keyId || id === keyId)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([name, id]) => ({ name, keyId: id }));
  }

  /** The mod revision of alias `name`, which must pass its check and still name `keyId`. */
  async #revision(name: string, keyId: string): Promise<string> {
    const a = await this.#store.alias(name);
    if (!a || a.record.keyId !== keyId) throw changed(name);
    return a.revision;
  }
}

const changed = (name: string) => unavailable(`alias ${name} changed meanwhile; try again`, { reason: 'CONTENDED' });
