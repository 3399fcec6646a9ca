/**
 * Thin gRPC handlers for KeyService: decode the proto shape, call KeyOperations / Keyring,
 * encode; each answers, beside its reply, the facts its audit event records (key id, version,
 * batch sizes). The seal check and the audit class are per method, in server/methods.ts.
 */
import { invalidArgument, permissionDenied, KeyshardError } from '@keyshard/errors';
import { roleAuthorizer, STATUS_OF, type CallContext, type pb } from '@keyshard/rpc';
import { withRequestTokens, type RequestTokens, type TokenRecord } from '../keys/request-tokens.ts';
import type { Keyring } from '../keys/keyring.ts';
import type { KeyRecord, UsageRecord } from '../keys/key-record.ts';
import type { KeyOperations } from '../keys/key-operations.ts';
import { forEachConcurrent } from '../concurrency.ts';
import type { Answer, AnsweringHandlers, AuditFacts } from './methods.ts';

/** What is known of the use of each of a key's versions (VersionUsage.ofKey). */
export type UsageOf = (keyId: string, versions: number[]) => Promise<Map<number, UsageRecord>>;

const NEVER_USED: UsageRecord = { encryptions: 0, lastUsedAt: '' };

/**
 * A key's message; `usage` by version (a version absent from it has never been used), or
 * `undefined` for a caller who does not administer the key: it gets no policy and no usage
 * statistics (keys.proto Key; key-policy.ts).
 */
export function keyMessage(k: KeyRecord, usage: Map<number, UsageRecord> | undefined): pb.Key {
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
      const u = usage?.get(v.version) ?? NEVER_USED;
      return { version: v.version, created_at: v.createdAt, last_used_at: u.lastUsedAt, encryptions: u.encryptions };
    }),
    rotation: { period_seconds: k.rotation.periodSeconds, next_rotation_at: k.rotation.nextRotationAt },
    policy: { grants: usage ? Object.fromEntries(Object.entries(k.policy).map(([op, principals]) => [op, { principals }])) : {} },
    destruction_at: k.destructionAt,
    caller_administers: usage !== undefined,
  };
}

function bytes(v: unknown, field: string): Buffer {
  if (Buffer.isBuffer(v)) return v;
  throw invalidArgument(`${field} must be bytes`);
}

const optionalBytes = (v: unknown): Buffer | undefined => (Buffer.isBuffer(v) && v.length > 0 ? v : undefined);

/** 100 years: longer periods and waits would put the next date past what a Date holds (RangeError). */
const MAX_SECONDS = 100 * 365 * 24 * 3600;

/** A uint64 of seconds a caller set (absent: 0); beyond 2^53 it decodes as a number that is not a safe integer. */
function seconds(n: number | undefined, field: string): number {
  n ??= 0;
  if (!Number.isSafeInteger(n) || n < 0 || n > MAX_SECONDS)
    throw invalidArgument(`${field} is not a valid number of seconds (0 to ${MAX_SECONDS}, 100 years)`);
  return n;
}

function policyOf(p: pb.KeyPolicy__Output | null): Record<string, string[]> | undefined {
  const grants = p?.grants ?? {};
  if (Object.keys(grants).length === 0) return undefined;
  return Object.fromEntries(Object.entries(grants).map(([op, list]) => [op, list?.principals ?? []]));
}

/** The audit facts of a call that used one version of one key. */
const usedVersion = (r: { key: KeyRecord; version: number }): AuditFacts => ({ keyId: r.key.id, details: { version: String(r.version) } });

function itemError(e: unknown): pb.BatchItemError {
  if (e instanceof KeyshardError) return { code: STATUS_OF[e.code], message: e.message, reason: e.reason };
  return { code: STATUS_OF.INTERNAL, message: 'internal error', reason: 'INTERNAL' };
}

/** The audit facts of a batch: how many items, how many failed. */
const batchFacts = (results: ({ result: unknown } | { error: unknown })[]): AuditFacts => ({
  details: { items: String(results.length), failed: String(results.filter((r) => 'error' in r).length) },
});

async function aliasAnswer(p: Promise<{ name: string; keyId: string }>): Promise<Answer<pb.Alias>> {
  const a = await p;
  return { audit: { keyId: a.keyId }, reply: { name: a.name, key_id: a.keyId } };
}

/**
 * KeyService's handlers; each answers its reply and its audit facts. Served behind the
 * interceptor of server/methods.ts (`intercepted('keys', …)`), which refuses them while sealed.
 */
export function keyHandlers(keyring: Keyring, ops: KeyOperations, usageOf: UsageOf, tokens?: RequestTokens): AnsweringHandlers<'KeyService'> {
  /** The key as `principal` may see it: policy and usage only for who administers it. */
  const message = async (k: KeyRecord, principal: string) =>
    keyMessage(k, ops.showsPolicyTo(k, principal) ? await usageOf(k.id, k.versions.map((v) => v.version)) : undefined);
  const keyAnswer = async (k: Promise<KeyRecord>, ctx: CallContext, details?: Record<string, string>): Promise<Answer<pb.Key>> => {
    const rec = await k;
    return { audit: { keyId: rec.id, ...(details && { details }) }, reply: message(rec, ctx.principal) };
  };
  const encryptOne = (req: pb.EncryptRequest__Output, ctx: CallContext) => ops.encrypt(req.key, bytes(req.plaintext, 'plaintext'), req.context ?? {}, ctx.principal);
  const decryptOne = (req: pb.DecryptRequest__Output, ctx: CallContext) => ops.decrypt(bytes(req.ciphertext, 'ciphertext'), req.context ?? {}, ctx.principal, req.key || undefined);
  const dataKey = (withPlaintext: boolean) => async (req: pb.GenerateDataKeyRequest__Output, ctx: CallContext): Promise<Answer<pb.GenerateDataKeyResponse>> => {
    const r = await ops.generateDataKey(req.key, req.length, req.context ?? {}, ctx.principal, withPlaintext);
    return { audit: usedVersion(r), reply: { plaintext: r.plaintext, ciphertext: r.ciphertext, key_id: r.key.id, key_version: r.version } };
  };

  /** A repeated call's answer: the outcome its token recorded (request-tokens.ts), audited as a replay. */
  const replay = (method: string, r: TokenRecord, { principal }: CallContext): Answer<unknown> => {
    const o = r.outcome;
    const details = { replay: 'true', request_token: r.token };
    if ('key' in o)
      return {
        audit: { keyId: o.key.id, details: { ...details, version: String(o.key.primaryVersion) } },
        reply: method === 'CreateKey' ? keyMessage(o.key, ops.showsPolicyTo(o.key, principal) ? new Map() : undefined) : message(o.key, principal),
      };
    if ('alias' in o) return { audit: { keyId: o.alias.keyId, details }, reply: { name: o.alias.name, key_id: o.alias.keyId } };
    return { audit: { details }, reply: {} };
  };

  return withRequestTokens('KeyService', tokens, {
    // A key just created has never been used: no usage to read.
    async CreateKey(req, ctx) {
      const rec = await ops.createKey(
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
      return { audit: { keyId: rec.id }, reply: keyMessage(rec, ops.showsPolicyTo(rec, ctx.principal) ? new Map() : undefined) };
    },
    GetKey: (req, ctx) => keyAnswer(keyring.resolve(req.key), ctx),
    async ListKeys(req, ctx) {
      const { keys, next } = await keyring.list(req.page_size, req.page_token);
      const messages: pb.Key[] = new Array(keys.length);
      await forEachConcurrent([...keys.keys()], 16, async (i) => void (messages[i] = await message(keys[i]!, ctx.principal)));
      return { reply: { keys: messages, next_page_token: next } };
    },
    UpdateKey: (req, ctx) =>
      keyAnswer(
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
        ctx,
      ),
    EnableKey: (req, ctx) => keyAnswer(ops.setState(req.key, ctx.principal, 'enable'), ctx),
    DisableKey: (req, ctx) => keyAnswer(ops.setState(req.key, ctx.principal, 'disable'), ctx),
    ScheduleKeyDestruction: (req, ctx) => keyAnswer(ops.scheduleDestruction(req.key, seconds(req.waiting_period_seconds, 'waiting_period_seconds'), ctx.principal), ctx),
    CancelKeyDestruction: (req, ctx) => keyAnswer(ops.cancelDestruction(req.key, ctx.principal), ctx),
    async RotateKey(req, ctx) {
      const r = await ops.rotate(req.key, ctx.principal, req.only_if_due === true);
      return keyAnswer(Promise.resolve(r.key), ctx, { rotated: String(r.rotated), version: String(r.key.primaryVersion) });
    },
    SetRotationPolicy: (req, ctx) => keyAnswer(ops.setRotationPolicy(req.key, seconds(req.rotation?.period_seconds, 'rotation.period_seconds'), ctx.principal), ctx),

    async Encrypt(req, ctx) {
      const r = await encryptOne(req, ctx);
      return { audit: usedVersion(r), reply: { ciphertext: r.ciphertext, key_id: r.key.id, key_version: r.version } };
    },
    async Decrypt(req, ctx) {
      const r = await decryptOne(req, ctx);
      return { audit: usedVersion(r), reply: { plaintext: r.plaintext, key_id: r.key.id, key_version: r.version } };
    },
    async ReEncrypt(req, ctx) {
      const r = await ops.reEncrypt(bytes(req.ciphertext, 'ciphertext'), req.source_context ?? {}, req.destination_key, req.destination_context ?? {}, ctx.principal);
      return { audit: usedVersion(r), reply: { ciphertext: r.ciphertext, key_id: r.key.id, key_version: r.version } };
    },
    async EncryptBatch(req, ctx) {
      const results = await ops.batch(req.items, (item) => encryptOne(item, ctx));
      const reply = results.map((r) =>
        'result' in r ? { result: { ciphertext: r.result.ciphertext, key_id: r.result.key.id, key_version: r.result.version } } : { error: itemError(r.error) },
      );
      return { audit: batchFacts(results), reply: { results: reply } };
    },
    async DecryptBatch(req, ctx) {
      const results = await ops.batch(req.items, (item) => decryptOne(item, ctx));
      const reply = results.map((r) =>
        'result' in r ? { result: { plaintext: r.result.plaintext, key_id: r.result.key.id, key_version: r.result.version } } : { error: itemError(r.error) },
      );
      return { audit: batchFacts(results), reply: { results: reply } };
    },
    GenerateDataKey: dataKey(true),
    GenerateDataKeyWithoutPlaintext: dataKey(false),

    async Sign(req, ctx) {
      const r = await ops.sign(req.key, { message: optionalBytes(req.message), digest: optionalBytes(req.digest) }, ctx.principal);
      return { audit: usedVersion(r), reply: { signature: r.signature, key_id: r.key.id, key_version: r.version } };
    },
    async Verify(req, ctx) {
      const valid = await ops.verify(
        req.key,
        { message: optionalBytes(req.message), digest: optionalBytes(req.digest) },
        bytes(req.signature, 'signature'),
        req.key_version || undefined,
        ctx.principal,
      );
      return { reply: { valid } };
    },
    async GetPublicKey(req, ctx) {
      const r = await ops.publicKey(req.key, req.key_version || undefined, ctx.principal);
      return { reply: { pem: r.pem, jwk: JSON.stringify(r.jwk), key_version: r.version } };
    },
    async Mac(req, ctx) {
      const r = await ops.mac(req.key, bytes(req.message, 'message'), ctx.principal);
      return { audit: usedVersion(r), reply: { mac: r.mac, key_version: r.version } };
    },
    async VerifyMac(req, ctx) {
      return { reply: { valid: await ops.verifyMac(req.key, bytes(req.message, 'message'), bytes(req.mac, 'mac'), req.key_version || undefined, ctx.principal) } };
    },

    CreateAlias: (req, ctx) => aliasAnswer(ops.putAlias(req.name, req.key, false, ctx.principal)),
    UpdateAlias: (req, ctx) => aliasAnswer(ops.putAlias(req.name, req.key, true, ctx.principal)),
    async DeleteAlias(req, ctx) {
      await ops.deleteAlias(req.name, ctx.principal);
      return { reply: {} };
    },
    async ListAliases(req) {
      return { reply: { aliases: (await keyring.listAliases(req.key || undefined)).map((a) => ({ name: a.name, key_id: a.keyId })) } };
    },
  }, {
    replay,
    // The change's own audit event names its token too, so its replays link to it.
    applied: (_method, a: Answer<unknown>, token) => ({ ...a, audit: { ...a.audit, details: { ...a.audit?.details, request_token: token } } }),
  });
}

/** Only configured key users and admins may call KeyService (keys.proto's roles); components and readers may not. */
export function keyServiceAuthorizer(admins: ReadonlySet<string>, keyUsers: ReadonlySet<string>) {
  return roleAuthorizer('KeyService', { ROLE_ADMIN: admins, ROLE_KEY_USER: keyUsers }, (ctx) => permissionDenied(`${ctx.principal} may not use the key service`));
}
