/**
 * What callers do with keys: encrypt/decrypt (AEAD per key type, context as AAD), data keys,
 * re-encryption inside the service, sign/verify, MAC, and the key lifecycle (rotate, enable,
 * disable, scheduled destruction). Every operation checks, in order: sealed (before the call:
 * the KeyService interceptor, server/methods.ts; the keyring again before it uses a record),
 * input, key exists, per-key policy, key state, key usage. Plaintext produced inside (data
 * keys, re-encryption) is zeroized as soon as it has been used.
 */
import {
  aeadOf, decryptWithVersion, encryptWithVersion, hmacSha256, parseCiphertext, publicKeyOf, requireUsage, signWith,
  pooledRandomBytes, validateContext, verifyHmacSha256, verifyWith, zeroize, type EncryptionContext, type KeyUsage,
} from '@keyshard/crypto';
import { failedPrecondition, invalidArgument, notFound, unavailable } from '@keyshard/errors';
import type { CreateKeyInput, Keyring } from './keyring.ts';
import { keyStateRefusal, rotationFrom, stateWord, validateDescription, validateLabels, validateName, type KeyRecord } from './key-record.ts';
import type { VersionUsage } from './version-usage.ts';
import { authorizeAdmin, authorizeUse, mayAdminister, refuseAliasToUsable, refuseSelfGrant, validatePolicy, type AdminOperation, type UseOperation } from './key-policy.ts';

export interface KeyOperationsOptions {
  maxPlaintextBytes: number;
  admins: ReadonlySet<string>;
  /** Shortest waiting period ScheduleKeyDestruction accepts. */
  minDestructionWaitSeconds: number;
  defaultDestructionWaitSeconds: number;
}

export const MAX_BATCH = 1000;

/**
 * Documented maxima of an encryption context bound into a NEW ciphertext (Encrypt, GenerateDataKey,
 * ReEncrypt's destination; keys.proto, README "Observability and limits"). Decrypt keeps the wider
 * limits of @keyshard/crypto validateContext, so ciphertexts made before these stay readable.
 */
export const MAX_CONTEXT_PAIRS = 32;
export const MAX_CONTEXT_ENCODED_BYTES = 4096;

export function validateNewContext(context: EncryptionContext): void {
  validateContext(context);
  const keys = Object.keys(context);
  if (keys.length > MAX_CONTEXT_PAIRS) throw invalidArgument(`encryption context has ${keys.length} entries; at most ${MAX_CONTEXT_PAIRS}`);
  // The size of its canonical encoding (context.ts): a count, then each string length-prefixed.
  let bytes = 4;
  for (const k of keys) bytes += 8 + Buffer.byteLength(k) + Buffer.byteLength(context[k]!);
  if (bytes > MAX_CONTEXT_ENCODED_BYTES) throw invalidArgument(`encryption context encodes to ${bytes} bytes; at most ${MAX_CONTEXT_ENCODED_BYTES}`);
}

export class KeyOperations {
  constructor(
    private readonly keyring: Keyring,
    private readonly usage: VersionUsage,
    private readonly opts: KeyOperationsOptions,
  ) {}

  /** A version's material, noting the use (last-use time per version). */
  #material(k: KeyRecord, version: number): Promise<Buffer> {
    this.usage.used(k.id, version);
    return this.keyring.material(k, version);
  }

  /** Resolves, authorizes the use (key-policy.ts: admins use only what a policy names them for) and checks state; `usage` also checks the key type. */
  async #use(ref: string, principal: string, op: UseOperation, usage?: KeyUsage): Promise<KeyRecord> {
    const k = await this.keyring.resolve(ref);
    authorizeUse(k, principal, op, this.opts.admins);
    if (k.state === 'KEY_STATE_DESTROYED') throw keyStateRefusal(k, `key ${k.name} is destroyed`);
    if (k.state !== 'KEY_STATE_ENABLED') throw keyStateRefusal(k, `key ${k.name} is not enabled (${stateWord(k.state)})`);
    if (usage) requireUsage(k.type, usage, k.name);
    return k;
  }

  #checkPlaintext(plaintext: Buffer): void {
    if (plaintext.length > this.opts.maxPlaintextBytes)
      throw invalidArgument(`plaintext is ${plaintext.length} bytes; the limit is ${this.opts.maxPlaintextBytes}`);
  }

  async #version(key: KeyRecord, requested: number | undefined): Promise<{ version: number; material: Buffer }> {
    // A version newer than the cached record may have been made through another replica just now.
    const k = requested && requested > key.primaryVersion ? await this.keyring.fresh(key) : key;
    const version = requested || k.primaryVersion;
    if (version > k.primaryVersion) throw notFound(`key ${k.name} has no version ${version}`, { reason: 'KEY_VERSION_NOT_FOUND', metadata: { key_id: k.id, version: String(version) } });
    if (version < k.minDecryptionVersion)
      throw failedPrecondition(`key version ${version} of ${k.name} is below its minimum decryption version`, { reason: 'KEY_VERSION_RETIRED', metadata: { key_id: k.id, version: String(version) } });
    return { version, material: await this.#material(k, version) };
  }

  // ---- encryption ----------------------------------------------------------------------

  async encrypt(ref: string, plaintext: Buffer, context: EncryptionContext, principal: string) {
    this.#checkPlaintext(plaintext);
    validateNewContext(context);
    return this.#encryptWith(await this.#use(ref, principal, 'encrypt', 'encrypt'), plaintext, context);
  }

  /**
   * Encrypts with the primary version, counted against its usage bound. A version found
   * exhausted has been rotated by then: the new primary version is used instead.
   */
  async #encryptWith(key: KeyRecord, plaintext: Buffer, context: EncryptionContext) {
    let k = key;
    for (let attempt = 0; ; attempt++) {
      const counting = this.usage.encryption(k.id, k.primaryVersion);
      if (counting === undefined || (await counting)) break;
      if (attempt === 2) throw unavailable(`key ${k.name} reached its usage bound and is being rotated; try again`, { reason: 'CONTENDED' });
      k = await this.keyring.fresh(k); // the rotation may have been made by another replica
    }
    const material = await this.keyring.material(k, k.primaryVersion);
    const ciphertext = encryptWithVersion(material, { keyId: k.id, keyVersion: k.primaryVersion }, plaintext, context, aeadOf(k.type));
    return { ciphertext, key: k, version: k.primaryVersion };
  }

  async decrypt(ciphertext: Buffer, context: EncryptionContext, principal: string, expectedKey?: string) {
    validateContext(context);
    if (ciphertext.length > this.opts.maxPlaintextBytes + 1024) throw invalidArgument('ciphertext is longer than any this service produces');
    const parsed = parseCiphertext(ciphertext);
    const k = await this.#use(parsed.keyId, principal, 'decrypt', 'encrypt');
    if (expectedKey && (await this.keyring.resolve(expectedKey)).id !== k.id) throw invalidArgument('ciphertext was not made with the requested key', { reason: 'WRONG_KEY' });
    const { version, material } = await this.#version(k, parsed.keyVersion);
    return { plaintext: decryptWithVersion(material, parsed, context, aeadOf(k.type)), key: k, version };
  }

  /** Decrypts and encrypts again inside the service; the plaintext never leaves it. */
  async reEncrypt(ciphertext: Buffer, sourceContext: EncryptionContext, destinationKey: string, destinationContext: EncryptionContext, principal: string) {
    const source = await this.decrypt(ciphertext, sourceContext, principal);
    try {
      return await this.encrypt(destinationKey || source.key.id, source.plaintext, destinationContext, principal);
    } finally {
      zeroize(source.plaintext);
    }
  }

  /** A fresh data key, returned in clear (unless `withPlaintext` is false) and wrapped by the key. */
  async generateDataKey(ref: string, length: number, context: EncryptionContext, principal: string, withPlaintext: boolean) {
    const n = length || 32;
    if (!Number.isInteger(n) || n < 16 || n > 1024) throw invalidArgument('data key length must be between 16 and 1024 bytes');
    validateNewContext(context);
    const k = await this.#use(ref, principal, 'generate_data_key', 'encrypt');
    const dataKey = pooledRandomBytes(n);
    try {
      const r = await this.#encryptWith(k, dataKey, context);
      return { plaintext: withPlaintext ? Buffer.from(dataKey) : Buffer.alloc(0), ciphertext: r.ciphertext, key: k, version: r.version };
    } finally {
      zeroize(dataKey);
    }
  }

  async batch<I, T>(items: readonly I[], one: (item: I) => Promise<T>): Promise<({ result: T } | { error: unknown })[]> {
    if (!Array.isArray(items) || items.length === 0) throw invalidArgument('a batch needs at least one item');
    if (items.length > MAX_BATCH) throw invalidArgument(`a batch holds at most ${MAX_BATCH} items, got ${items.length}`);
    return Promise.all(items.map((item) => one(item).then((result) => ({ result }), (error: unknown) => ({ error }))));
  }

  // ---- signatures and MACs -------------------------------------------------------------

  async sign(ref: string, input: { message?: Buffer; digest?: Buffer }, principal: string) {
    const k = await this.#use(ref, principal, 'sign', 'sign');
    const material = await this.#material(k, k.primaryVersion);
    return { signature: signWith(k.type, material, input), key: k, version: k.primaryVersion };
  }

  async verify(ref: string, input: { message?: Buffer; digest?: Buffer }, signature: Buffer, version: number | undefined, principal: string) {
    const k = await this.#use(ref, principal, 'verify', 'sign');
    const v = await this.#version(k, version);
    return verifyWith(k.type, v.material, input, signature);
  }

  async publicKey(ref: string, version: number | undefined, principal: string) {
    const k = await this.#use(ref, principal, 'verify', 'sign');
    const v = await this.#version(k, version);
    return { ...publicKeyOf(k.type, v.material), version: v.version };
  }

  async mac(ref: string, message: Buffer, principal: string) {
    this.#checkPlaintext(message);
    const k = await this.#use(ref, principal, 'mac', 'mac');
    const material = await this.#material(k, k.primaryVersion);
    return { mac: hmacSha256(material, message), key: k, version: k.primaryVersion };
  }

  async verifyMac(ref: string, message: Buffer, mac: Buffer, version: number | undefined, principal: string) {
    this.#checkPlaintext(message);
    const k = await this.#use(ref, principal, 'mac', 'mac');
    const v = await this.#version(k, version);
    return verifyHmacSha256(v.material, message, mac);
  }

  // ---- lifecycle -----------------------------------------------------------------------

  /**
   * Creates a key; its creator may not name itself for a use the default policy would not give it
   * (key-policy.ts refuseSelfGrant: a cluster admin's key is used by whom its policy names).
   */
  async createKey(req: CreateKeyInput, principal: string): Promise<KeyRecord> {
    validateName(req.name);
    if (req.policy) {
      const policy = validatePolicy(req.policy);
      refuseSelfGrant({ policy: {}, createdBy: principal }, { policy, createdBy: principal, name: req.name }, principal, this.opts.admins);
    }
    return this.keyring.create(req, principal, this.opts.admins.has(principal));
  }

  /** Whether `principal` sees the key's policy and usage statistics (GetKey, ListKeys): only who administers it. */
  showsPolicyTo(k: KeyRecord, principal: string): boolean {
    return mayAdminister(k, principal, this.opts.admins);
  }

  async #admin(ref: string, principal: string, op: AdminOperation = 'admin'): Promise<KeyRecord> {
    const k = await this.keyring.resolve(ref);
    authorizeAdmin(k, principal, this.opts.admins, op);
    if (k.state === 'KEY_STATE_DESTROYED') throw keyStateRefusal(k, `key ${k.name} is destroyed`);
    return k;
  }

  /** Rotates now, or with `onlyIfDue` only if the scheduled rotation is due; `rotated` says which. */
  async rotate(ref: string, principal: string, onlyIfDue = false): Promise<{ key: KeyRecord; rotated: boolean }> {
    const k = await this.#admin(ref, principal, 'rotate');
    const r = await this.keyring.rotate(k, onlyIfDue ? { ifDueAt: Date.now() } : {});
    return r ? { key: r, rotated: true } : { key: await this.keyring.resolve(k.id), rotated: false };
  }

  /** Sets (or with 0 clears) a key's rotation period; the next rotation is one period from now. */
  async setRotationPolicy(ref: string, periodSeconds: number, principal: string): Promise<KeyRecord> {
    const period = this.keyring.rotationPeriod(periodSeconds);
    const k = await this.#admin(ref, principal, 'rotate');
    return this.keyring.update(k.id, (cur) => ({ ...cur, rotation: rotationFrom(period, Date.now()) }));
  }

  async setState(ref: string, principal: string, to: 'enable' | 'disable'): Promise<KeyRecord> {
    const k = await this.#admin(ref, principal);
    return this.keyring.update(k.id, (cur) => {
      if (to === 'disable' && cur.state === 'KEY_STATE_ENABLED') return { ...cur, state: 'KEY_STATE_DISABLED' };
      if (to === 'enable' && cur.state === 'KEY_STATE_DISABLED') return { ...cur, state: 'KEY_STATE_ENABLED' };
      if ((to === 'disable' && cur.state === 'KEY_STATE_DISABLED') || (to === 'enable' && cur.state === 'KEY_STATE_ENABLED')) return cur;
      throw keyStateRefusal(cur, `key ${cur.name} is ${stateWord(cur.state)}; it cannot be ${to}d`);
    });
  }

  async scheduleDestruction(ref: string, waitingSeconds: number, principal: string): Promise<KeyRecord> {
    const wait = waitingSeconds || this.opts.defaultDestructionWaitSeconds;
    if (!Number.isInteger(wait) || wait < this.opts.minDestructionWaitSeconds)
      throw invalidArgument(`the waiting period must be at least ${this.opts.minDestructionWaitSeconds} seconds`);
    const k = await this.#admin(ref, principal);
    return this.keyring.update(k.id, (cur) => {
      if (cur.state === 'KEY_STATE_PENDING_DESTRUCTION') throw keyStateRefusal(cur, `key ${cur.name} is already pending destruction`);
      return { ...cur, state: 'KEY_STATE_PENDING_DESTRUCTION', destructionAt: new Date(Date.now() + wait * 1000).toISOString() };
    });
  }

  async cancelDestruction(ref: string, principal: string): Promise<KeyRecord> {
    const k = await this.#admin(ref, principal);
    return this.keyring.update(k.id, (cur) => {
      if (cur.state !== 'KEY_STATE_PENDING_DESTRUCTION') throw keyStateRefusal(cur, `key ${cur.name} is not pending destruction`, 'WRONG_KEY_STATE');
      return { ...cur, state: 'KEY_STATE_DISABLED', destructionAt: '' };
    });
  }

  // ---- aliases: administering an alias means administering the key(s) it names -------------

  /**
   * Creates an alias of a key, or repoints one: needs `admin` on the new key and on the key it
   * named, and the new key must be one the caller may not use (key-policy.ts refuseAliasToUsable).
   */
  async putAlias(alias: string, ref: string, update: boolean, principal: string): Promise<{ name: string; keyId: string }> {
    validateName(alias, 'alias');
    const target = await this.#admin(ref, principal);
    refuseAliasToUsable(target, alias, principal, this.opts.admins);
    const from = update ? await this.#admin(`alias/${alias}`, principal) : undefined;
    return this.keyring.putAlias(alias, target, from?.id);
  }

  /** Deletes an alias: needs `admin` on the key it names. */
  async deleteAlias(alias: string, principal: string): Promise<void> {
    validateName(alias, 'alias');
    const k = await this.#admin(`alias/${alias}`, principal);
    await this.keyring.deleteAlias(alias, k.id);
  }

  async updateKey(
    ref: string,
    change: { description?: string; labels?: Record<string, string>; minDecryptionVersion?: number; policy?: Record<string, string[]> },
    principal: string,
  ): Promise<KeyRecord> {
    const k = await this.#admin(ref, principal);
    if (change.description !== undefined) validateDescription(change.description);
    if (change.labels !== undefined) validateLabels(change.labels);
    const policy = change.policy ? validatePolicy(change.policy) : undefined;
    return this.keyring.update(k.id, (cur) => {
      // Judged again against the record being replaced (inside its compare-and-swap), not only the cached one.
      authorizeAdmin(cur, principal, this.opts.admins);
      if (policy) refuseSelfGrant(cur, { ...cur, policy }, principal, this.opts.admins);
      const min = change.minDecryptionVersion || cur.minDecryptionVersion;
      if (min < cur.minDecryptionVersion) throw invalidArgument('min_decryption_version can only be raised');
      if (min > cur.primaryVersion) throw invalidArgument(`min_decryption_version ${min} is above the primary version ${cur.primaryVersion}`);
      return {
        ...cur,
        description: change.description ?? cur.description,
        labels: change.labels ?? cur.labels,
        minDecryptionVersion: min,
        policy: policy ?? cur.policy,
      };
    });
  }
}
