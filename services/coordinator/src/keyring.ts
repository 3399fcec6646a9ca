/**
 * Keys and their versions (brief, "Key hierarchy"). Metadata lives in etcd in clear (it is
 * not secret); each version's material is its own etcd key, wrapped by the current KEK with
 * AAD = cluster id | key id | version. Unwrapped material is cached in memory only while
 * unsealed and zeroized on seal. A key name is unique: its `names/` entry is created in the
 * same transaction as the key.
 */
import { randomBytes } from 'node:crypto';
import {
  decryptWithVersion, encryptWithVersion, parseCiphertext, unwrapVersion, validateContext, wrapVersion, zeroize,
  type EncryptionContext,
} from '@keyshard/crypto';
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from '@keyshard/errors';
import { etcdCall, getJson, listJson, paths, type Namespace } from '@keyshard/store';
import type { Cluster } from './cluster.ts';
import type { Seal } from './seal.ts';

export const KEY_TYPES = ['aes256-gcm'] as const;
export type KeyType = (typeof KEY_TYPES)[number];
export type KeyState = 'KEY_STATE_ENABLED' | 'KEY_STATE_DISABLED' | 'KEY_STATE_PENDING_DESTRUCTION' | 'KEY_STATE_DESTROYED';

export interface KeyRecord {
  id: string;
  name: string;
  type: KeyType;
  usage: 'encrypt';
  state: KeyState;
  primaryVersion: number;
  minDecryptionVersion: number;
  description: string;
  labels: Record<string, string>;
  createdAt: string;
  rotatedAt: string;
  createdBy: string;
}

interface VersionRecord {
  version: number;
  kekEpoch: number;
  wrapped: string; // base64
  createdAt: string;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;
export const MAX_NAME_LENGTH = 128;
const KEY_ID_RE = /^k_[A-Za-z0-9_-]{22}$/;

export function validateKeyName(name: string): void {
  if (typeof name !== 'string' || name.length === 0) throw invalidArgument('key name must not be empty');
  if (name.length > MAX_NAME_LENGTH) throw invalidArgument(`key name is longer than ${MAX_NAME_LENGTH} characters`);
  if (!NAME_RE.test(name)) throw invalidArgument('key name may contain letters, digits and _ . : - and must start with a letter or digit');
  if (KEY_ID_RE.test(name)) throw invalidArgument('key name must not look like a key id (k_…)');
}

export interface KeyringOptions {
  maxPlaintextBytes: number;
}

export class Keyring {
  #ns: Namespace;
  #cluster: Cluster;
  #seal: Seal;
  #opts: KeyringOptions;
  #keys = new Map<string, KeyRecord>();
  #byName = new Map<string, string>();
  #material = new Map<string, Buffer>(); // `${id}/${version}` -> unwrapped material
  #loaded = false;

  constructor(ns: Namespace, cluster: Cluster, seal: Seal, opts: KeyringOptions) {
    this.#ns = ns;
    this.#cluster = cluster;
    this.#seal = seal;
    this.#opts = opts;
    seal.onSeal(() => this.#forget());
  }

  #forget(): void {
    zeroize(...this.#material.values());
    this.#material.clear();
  }

  /** Loads key metadata into memory (names and states are not secret). */
  async load(): Promise<void> {
    const keys = await listJson<KeyRecord>(this.#ns, paths.keysPrefix);
    this.#keys.clear();
    this.#byName.clear();
    for (const k of keys.values()) this.#remember(k);
    this.#loaded = true;
  }

  #remember(k: KeyRecord): void {
    this.#keys.set(k.id, k);
    this.#byName.set(k.name, k.id);
  }

  async #ready(): Promise<void> {
    this.#seal.requireOpen();
    if (!this.#loaded) await this.load();
  }

  /** Resolves an id or a name. */
  async resolve(ref: string): Promise<KeyRecord> {
    await this.#ready();
    if (typeof ref !== 'string' || ref.length === 0) throw invalidArgument('key reference must not be empty');
    if (ref.length > MAX_NAME_LENGTH) throw invalidArgument(`key reference is longer than ${MAX_NAME_LENGTH} characters`);
    const id = KEY_ID_RE.test(ref) ? ref : this.#byName.get(ref);
    const k = id ? this.#keys.get(id) : undefined;
    if (!k) throw notFound(`key ${ref} not found`);
    return k;
  }

  async create(req: { name: string; type?: string; description?: string; labels?: Record<string, string> }, principal: string): Promise<KeyRecord> {
    await this.#ready();
    validateKeyName(req.name);
    const type = (req.type || 'aes256-gcm') as KeyType;
    if (!KEY_TYPES.includes(type)) throw invalidArgument(`unsupported key type ${req.type}; supported: ${KEY_TYPES.join(', ')}`);
    if ((req.description ?? '').length > 1024) throw invalidArgument('description is longer than 1024 characters');
    const { record } = this.#cluster.requireInitialized();
    const now = new Date().toISOString();
    const key: KeyRecord = {
      id: `k_${randomBytes(16).toString('base64url')}`,
      name: req.name,
      type,
      usage: 'encrypt',
      state: 'KEY_STATE_ENABLED',
      primaryVersion: 1,
      minDecryptionVersion: 1,
      description: req.description ?? '',
      labels: req.labels ?? {},
      createdAt: now,
      rotatedAt: now,
      createdBy: principal,
    };
    const material = randomBytes(32);
    const version: VersionRecord = {
      version: 1,
      kekEpoch: record.kekEpoch,
      wrapped: wrapVersion(this.#seal.kek(record.kekEpoch), record.clusterId, key.id, 1, material).toString('base64'),
      createdAt: now,
    };
    const ns = this.#ns;
    const res = await etcdCall('create key', () =>
      ns
        .if(paths.name(key.name), 'Create', '==', 0)
        .then(
          ns.put(paths.name(key.name)).value(key.id),
          ns.put(paths.key(key.id)).value(JSON.stringify(key)),
          ns.put(paths.version(key.id, 1)).value(JSON.stringify(version)),
        )
        .commit(),
    ).catch((e) => {
      zeroize(material);
      throw e;
    });
    if (!res.succeeded) {
      zeroize(material);
      throw alreadyExists(`a key named ${key.name} already exists`);
    }
    this.#remember(key);
    if (this.#seal.sealed) zeroize(material); // sealed meanwhile: keep nothing in memory
    else this.#material.set(`${key.id}/1`, material);
    return key;
  }

  /** Keys in name order; the page token is the last name of the previous page. */
  async list(pageSize: number, pageToken: string): Promise<{ keys: KeyRecord[]; next: string }> {
    await this.#ready();
    const size = pageSize === 0 ? 100 : pageSize;
    if (!Number.isInteger(size) || size < 1 || size > 1000) throw invalidArgument('page_size must be between 1 and 1000');
    let after = '';
    if (pageToken) {
      after = Buffer.from(pageToken, 'base64url').toString('utf8');
      if (!after) throw invalidArgument('page_token is not valid');
    }
    const names = [...this.#byName.keys()].filter((n) => n > after).sort();
    const page = names.slice(0, size).map((n) => this.#keys.get(this.#byName.get(n)!)!);
    const next = names.length > size ? Buffer.from(page[page.length - 1]!.name).toString('base64url') : '';
    return { keys: page, next };
  }

  async #versionMaterial(k: KeyRecord, version: number): Promise<Buffer> {
    const cacheKey = `${k.id}/${version}`;
    const cached = this.#material.get(cacheKey);
    if (cached) return cached;
    const v = await getJson<VersionRecord>(this.#ns, paths.version(k.id, version));
    if (!v) throw notFound(`key ${k.name} has no version ${version}`);
    const { record } = this.#cluster.requireInitialized();
    // seal.kek() throws if the coordinator was sealed while etcd answered: nothing is cached then.
    const material = unwrapVersion(this.#seal.kek(v.kekEpoch), record.clusterId, k.id, version, Buffer.from(v.wrapped, 'base64'));
    this.#material.set(cacheKey, material);
    return material;
  }

  #requireUsable(k: KeyRecord): void {
    if (k.state === 'KEY_STATE_DESTROYED') throw failedPrecondition(`key ${k.name} is destroyed`);
    if (k.state !== 'KEY_STATE_ENABLED') throw failedPrecondition(`key ${k.name} is not enabled (${k.state})`);
  }

  async encrypt(ref: string, plaintext: Buffer, context: EncryptionContext): Promise<{ ciphertext: Buffer; key: KeyRecord; version: number }> {
    if (plaintext.length > this.#opts.maxPlaintextBytes)
      throw invalidArgument(`plaintext is ${plaintext.length} bytes; the limit is ${this.#opts.maxPlaintextBytes}`);
    validateContext(context);
    const k = await this.resolve(ref);
    this.#requireUsable(k);
    const material = await this.#versionMaterial(k, k.primaryVersion);
    const ciphertext = encryptWithVersion(material, { keyId: k.id, keyVersion: k.primaryVersion }, plaintext, context);
    return { ciphertext, key: k, version: k.primaryVersion };
  }

  async decrypt(ciphertext: Buffer, context: EncryptionContext, expectedKey?: string): Promise<{ plaintext: Buffer; key: KeyRecord; version: number }> {
    this.#seal.requireOpen();
    validateContext(context);
    if (ciphertext.length > this.#opts.maxPlaintextBytes + 1024) throw invalidArgument('ciphertext is longer than any this service produces');
    const parsed = parseCiphertext(ciphertext);
    const k = await this.resolve(parsed.keyId);
    if (expectedKey) {
      const expected = await this.resolve(expectedKey);
      if (expected.id !== k.id) throw invalidArgument('ciphertext was not made with the requested key');
    }
    this.#requireUsable(k);
    if (parsed.keyVersion > k.primaryVersion) throw notFound(`key ${k.name} has no version ${parsed.keyVersion}`);
    if (parsed.keyVersion < k.minDecryptionVersion)
      throw failedPrecondition(`key version ${parsed.keyVersion} is below the minimum decryption version`);
    const material = await this.#versionMaterial(k, parsed.keyVersion);
    return { plaintext: decryptWithVersion(material, parsed, context), key: k, version: parsed.keyVersion };
  }
}
