/**
 * Thin gRPC handlers for KeyService: decode the proto shape, call KeyOperations / Keyring,
 * encode. Facts for the audit record (key id, version, batch sizes) are set here.
 */
import { invalidArgument, permissionDenied, KeyshardError } from '@keyshard/errors';
import { STATUS_OF, type CallContext, type UnaryHandler } from '@keyshard/rpc';
import type { Keyring, KeyRecord } from '../keys/keyring.ts';
import type { KeyOperations } from '../keys/key-operations.ts';
import { forEachConcurrent } from '../concurrency.ts';
import type { UsageRecord } from '../keys/version-usage.ts';

type Handlers = Record<string, UnaryHandler<any, any>>;

/** What is known of the use of each of a key's versions (VersionUsage.ofKey). */
export type UsageOf = (keyId: string, versions: number[]) => Promise<Map<number, UsageRecord>>;

const NEVER_USED: UsageRecord = { encryptions: 0, lastUsedAt: '' };

/** A key's message; `usage` by version (a version absent from it has never been used). */
export function keyMessage(k: KeyRecord, usage: Map<number, UsageRecord>) {
  return {
    id: k.id,
    name: k.name,
    type: k.type,
    usage: k.usage,
    state: k.state,
    primary_version: k.primaryVersion,
    min_decryption_version: k.minDecryptionVersion,
    description: k.description,
    labels: k.labels,
    created_at: k.createdAt,
    rotated_at: k.rotatedAt,
    created_by: k.createdBy,
    versions: k.versions.map((v) => {
      const u = usage.get(v.version) ?? NEVER_USED;
      return { version: v.version, created_at: v.createdAt, last_used_at: u.lastUsedAt, encryptions: String(u.encryptions) };
    }),
    rotation: { period_seconds: String(k.rotation.periodSeconds), next_rotation_at: k.rotation.nextRotationAt },
    policy: { grants: Object.fromEntries(Object.entries(k.policy).map(([op, principals]) => [op, { principals }])) },
    destruction_at: k.destructionAt,
  };
}

function bytes(v: unknown, field: string): Buffer {
  if (Buffer.isBuffer(v)) return v;
  throw invalidArgument(`${field} must be bytes`);
}

const optionalBytes = (v: unknown): Buffer | undefined => (Buffer.isBuffer(v) && v.length > 0 ? v : undefined);

/** 100 years: longer periods and waits would put the next date past what a Date holds (RangeError). */
const MAX_SECONDS = 100 * 365 * 24 * 3600;

function seconds(v: unknown, field: string): number {
  const n = Number(v ?? 0);
  if (!Number.isSafeInteger(n) || n < 0 || n > MAX_SECONDS)
    throw invalidArgument(`${field} is not a valid number of seconds (0 to ${MAX_SECONDS}, 100 years)`);
  return n;
}

function policyOf(p: { grants?: Record<string, { principals?: string[] }> } | null | undefined): Record<string, string[]> | undefined {
  const grants = p?.grants ?? {};
  if (Object.keys(grants).length === 0) return undefined;
  return Object.fromEntries(Object.entries(grants).map(([op, list]) => [op, list?.principals ?? []]));
}

function keyFacts<T extends { key: KeyRecord; version: number }>(ctx: CallContext, r: T): T {
  ctx.facts.keyId = r.key.id;
  ctx.facts.details = { version: String(r.version) };
  return r;
}

function itemError(e: unknown) {
  if (e instanceof KeyshardError) return { code: STATUS_OF[e.code], message: e.message };
  return { code: STATUS_OF.INTERNAL, message: 'internal error' };
}

async function aliasReply(ctx: CallContext, p: Promise<{ name: string; keyId: string }>) {
  const a = await p;
  ctx.facts.keyId = a.keyId;
  return { name: a.name, key_id: a.keyId };
}

export function keyHandlers(keyring: Keyring, ops: KeyOperations, usageOf: UsageOf): Handlers {
  const message = async (k: KeyRecord) => keyMessage(k, await usageOf(k.id, k.versions.map((v) => v.version)));
  const keyReply = async (ctx: CallContext, k: Promise<KeyRecord>) => {
    const rec = await k;
    ctx.facts.keyId = rec.id;
    return message(rec);
  };
  const encryptOne = (req: any, ctx: CallContext) => ops.encrypt(req.key, bytes(req.plaintext, 'plaintext'), req.context ?? {}, ctx.principal);
  const decryptOne = (req: any, ctx: CallContext) => ops.decrypt(bytes(req.ciphertext, 'ciphertext'), req.context ?? {}, ctx.principal, req.key || undefined);
  const dataKey = (withPlaintext: boolean) => async (req: any, ctx: CallContext) => {
    const r = keyFacts(ctx, await ops.generateDataKey(req.key, req.length, req.context ?? {}, ctx.principal, withPlaintext));
    return { plaintext: r.plaintext, ciphertext: r.ciphertext, key_id: r.key.id, key_version: r.version };
  };

  return {
    // A key just created has never been used: no usage to read.
    CreateKey: async (req, ctx) => {
      const rec = await keyring.create(
        {
          name: req.name,
          type: req.type,
          description: req.description,
          labels: req.labels,
          rotationPeriodSeconds: seconds(req.rotation?.period_seconds, 'rotation.period_seconds'),
          policy: policyOf(req.policy),
        },
        ctx.principal,
      );
      ctx.facts.keyId = rec.id;
      return keyMessage(rec, new Map());
    },
    GetKey: (req, ctx) => keyReply(ctx, keyring.resolve(req.key)),
    async ListKeys(req) {
      const { keys, next } = await keyring.list(req.page_size, req.page_token);
      const messages: ReturnType<typeof keyMessage>[] = new Array(keys.length);
      await forEachConcurrent([...keys.keys()], 16, async (i) => void (messages[i] = await message(keys[i]!)));
      return { keys: messages, next_page_token: next };
    },
    UpdateKey: (req, ctx) =>
      keyReply(
        ctx,
        ops.updateKey(
          req.key,
          {
            description: req.description || undefined,
            labels: Object.keys(req.labels ?? {}).length ? req.labels : undefined,
            minDecryptionVersion: req.min_decryption_version || undefined,
            policy: policyOf(req.policy),
          },
          ctx.principal,
        ),
      ),
    EnableKey: (req, ctx) => keyReply(ctx, ops.setState(req.key, ctx.principal, 'enable')),
    DisableKey: (req, ctx) => keyReply(ctx, ops.setState(req.key, ctx.principal, 'disable')),
    ScheduleKeyDestruction: (req, ctx) =>
      keyReply(ctx, ops.scheduleDestruction(req.key, seconds(req.waiting_period_seconds, 'waiting_period_seconds'), ctx.principal)),
    CancelKeyDestruction: (req, ctx) => keyReply(ctx, ops.cancelDestruction(req.key, ctx.principal)),
    RotateKey: async (req, ctx) => {
      const r = await ops.rotate(req.key, ctx.principal, req.only_if_due === true);
      ctx.facts.details = { rotated: String(r.rotated), version: String(r.key.primaryVersion) };
      return keyReply(ctx, Promise.resolve(r.key));
    },
    SetRotationPolicy: (req, ctx) =>
      keyReply(ctx, ops.setRotationPolicy(req.key, seconds(req.rotation?.period_seconds, 'rotation.period_seconds'), ctx.principal)),

    async Encrypt(req, ctx) {
      const r = keyFacts(ctx, await encryptOne(req, ctx));
      return { ciphertext: r.ciphertext, key_id: r.key.id, key_version: r.version };
    },
    async Decrypt(req, ctx) {
      const r = keyFacts(ctx, await decryptOne(req, ctx));
      return { plaintext: r.plaintext, key_id: r.key.id, key_version: r.version };
    },
    async ReEncrypt(req, ctx) {
      const r = keyFacts(
        ctx,
        await ops.reEncrypt(bytes(req.ciphertext, 'ciphertext'), req.source_context ?? {}, req.destination_key, req.destination_context ?? {}, ctx.principal),
      );
      return { ciphertext: r.ciphertext, key_id: r.key.id, key_version: r.version };
    },
    async EncryptBatch(req, ctx) {
      const results = await ops.batch(req.items, (item) => encryptOne(item, ctx));
      ctx.facts.details = { items: String(results.length), failed: String(results.filter((r) => 'error' in r).length) };
      return {
        results: results.map((r) =>
          'result' in r ? { result: { ciphertext: r.result.ciphertext, key_id: r.result.key.id, key_version: r.result.version } } : { error: itemError(r.error) },
        ),
      };
    },
    async DecryptBatch(req, ctx) {
      const results = await ops.batch(req.items, (item) => decryptOne(item, ctx));
      ctx.facts.details = { items: String(results.length), failed: String(results.filter((r) => 'error' in r).length) };
      return {
        results: results.map((r) =>
          'result' in r ? { result: { plaintext: r.result.plaintext, key_id: r.result.key.id, key_version: r.result.version } } : { error: itemError(r.error) },
        ),
      };
    },
    GenerateDataKey: dataKey(true),
    GenerateDataKeyWithoutPlaintext: dataKey(false),

    async Sign(req, ctx) {
      const r = keyFacts(ctx, await ops.sign(req.key, { message: optionalBytes(req.message), digest: optionalBytes(req.digest) }, ctx.principal));
      return { signature: r.signature, key_id: r.key.id, key_version: r.version };
    },
    async Verify(req, ctx) {
      const valid = await ops.verify(
        req.key,
        { message: optionalBytes(req.message), digest: optionalBytes(req.digest) },
        bytes(req.signature, 'signature'),
        req.key_version || undefined,
        ctx.principal,
      );
      return { valid };
    },
    async GetPublicKey(req, ctx) {
      const r = await ops.publicKey(req.key, req.key_version || undefined, ctx.principal);
      return { pem: r.pem, jwk: JSON.stringify(r.jwk), key_version: r.version };
    },
    async Mac(req, ctx) {
      const r = keyFacts(ctx, await ops.mac(req.key, bytes(req.message, 'message'), ctx.principal));
      return { mac: r.mac, key_version: r.version };
    },
    async VerifyMac(req, ctx) {
      return { valid: await ops.verifyMac(req.key, bytes(req.message, 'message'), bytes(req.mac, 'mac'), req.key_version || undefined, ctx.principal) };
    },

    CreateAlias: (req, ctx) => aliasReply(ctx, ops.putAlias(req.name, req.key, false, ctx.principal)),
    UpdateAlias: (req, ctx) => aliasReply(ctx, ops.putAlias(req.name, req.key, true, ctx.principal)),
    async DeleteAlias(req, ctx) {
      await ops.deleteAlias(req.name, ctx.principal);
      return {};
    },
    async ListAliases(req) {
      return { aliases: (await keyring.listAliases(req.key || undefined)).map((a) => ({ name: a.name, key_id: a.keyId })) };
    },
  };
}

/** Only configured key users and admins may call KeyService; components and readers may not. */
export function keyServiceAuthorizer(allowed: Set<string>) {
  return (ctx: CallContext) => {
    if (!allowed.has(ctx.principal)) throw permissionDenied(`${ctx.principal} may not use the key service`);
  };
}
