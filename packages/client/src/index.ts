/**
 * keyshard TypeScript SDK: typed promise methods over the keyshard.v1 gRPC API, mutual TLS,
 * a deadline and a request id on every call. Errors are grpc ServiceErrors (code + details).
 */
import type * as grpc from '@grpc/grpc-js';
import { keyshardProto, makeClient, readTls, unaryCall, type CallOptions, type TlsFiles, type TlsMaterial } from '@keyshard/rpc';

export type { TlsFiles, TlsMaterial, CallOptions };
export { isServiceError, statusName } from '@keyshard/rpc';

export type Context = Record<string, string>;

export interface Key {
  id: string;
  name: string;
  type: string;
  usage: string;
  state: string;
  primary_version: number;
  min_decryption_version: number;
  description: string;
  labels: Record<string, string>;
  created_at: string;
  rotated_at: string;
  created_by: string;
  versions: { version: number; created_at: string }[];
  rotation: { period_seconds: string; next_rotation_at: string };
  policy: { grants: Record<string, { principals: string[] }> };
  destruction_at: string;
}

export interface Ceremony {
  id: string;
  operation: string;
  cluster_id: string;
  initiator: string;
  created_at: string;
  expires_at: string;
  hash: string;
  state: string;
  threshold: number;
  approved_by: string[];
  failures: { custodian_id: string; reason: string }[];
  denied_by: string[];
  error: string;
  parameters: Record<string, string>;
  recipients: { coordinator_id: string; public_key_pem: string }[];
}

export interface Status {
  initialized: boolean;
  sealed: boolean;
  cluster_id: string;
  threshold: number;
  shares: number;
  ceremony: Ceremony | null;
  custodians: { id: string; address: string; reachable: boolean }[];
  coordinator_id: string;
  version: string;
}

export interface ClientOptions {
  address: string;
  tls: TlsMaterial | TlsFiles;
  timeoutMs?: number;
  channelOptions?: grpc.ChannelOptions;
  /** TLS connections key operations are spread over (default 4). */
  connections?: number;
}

function material(tls: TlsMaterial | TlsFiles): TlsMaterial {
  return Buffer.isBuffer(tls.ca) ? (tls as TlsMaterial) : readTls(tls as TlsFiles);
}

export class KeyshardClient {
  #keys: grpc.Client[];
  #next = 0;
  #ceremony: grpc.Client;
  #timeoutMs: number;

  constructor(opts: ClientOptions) {
    const tls = material(opts.tls);
    const proto = keyshardProto();
    // Key operations are spread over a few TLS connections: one HTTP/2 connection serialises
    // framing and TLS records on both ends, and several keep a busy caller's latency lower.
    const connections = opts.connections ?? 4;
    if (!Number.isInteger(connections) || connections < 1 || connections > 64) throw new Error('connections must be between 1 and 64');
    this.#keys = Array.from({ length: connections }, () =>
      makeClient<grpc.Client>(proto.KeyService, opts.address, tls, { ...opts.channelOptions, 'grpc.use_local_subchannel_pool': 1 }),
    );
    this.#ceremony = makeClient(proto.CeremonyService, opts.address, tls, opts.channelOptions);
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
  }

  #k<T>(method: string, req: unknown, o?: CallOptions) {
    const client = this.#keys[this.#next++ % this.#keys.length]!;
    return unaryCall<T>(client, method, req, { timeoutMs: this.#timeoutMs, ...o });
  }

  #c<T>(method: string, req: unknown, o?: CallOptions) {
    return unaryCall<T>(this.#ceremony, method, req, { timeoutMs: this.#timeoutMs, ...o });
  }

  status(o?: CallOptions) {
    return this.#c<Status>('Status', {}, o);
  }

  init(shares?: number, threshold?: number, o?: CallOptions) {
    return this.#c<{ cluster_id: string; threshold: number; shares: number; custodian_ids: string[]; manifest_fingerprint: string }>(
      'Init',
      { shares: shares ?? 0, threshold: threshold ?? 0 },
      { timeoutMs: 60_000, ...o },
    );
  }

  startUnseal(ttlSeconds?: number, o?: CallOptions) {
    return this.#c<Ceremony>('StartUnseal', { ttl_seconds: ttlSeconds ?? 0 }, o);
  }

  getCeremony(id: string, o?: CallOptions) {
    return this.#c<Ceremony>('GetCeremony', { id }, o);
  }

  seal(o?: CallOptions) {
    return this.#c<{ sealed: boolean }>('Seal', {}, o);
  }

  createKey(
    name: string,
    opts: { type?: string; description?: string; labels?: Record<string, string>; rotationPeriodSeconds?: number; policy?: Record<string, string[]> } = {},
    o?: CallOptions,
  ) {
    const { rotationPeriodSeconds, policy, ...rest } = opts;
    return this.#k<Key>(
      'CreateKey',
      {
        name,
        ...rest,
        rotation: rotationPeriodSeconds ? { period_seconds: rotationPeriodSeconds } : undefined,
        policy: policy ? { grants: Object.fromEntries(Object.entries(policy).map(([op, principals]) => [op, { principals }])) } : undefined,
      },
      o,
    );
  }

  getKey(key: string, o?: CallOptions) {
    return this.#k<Key>('GetKey', { key }, o);
  }

  listKeys(pageSize = 0, pageToken = '', o?: CallOptions) {
    return this.#k<{ keys: Key[]; next_page_token: string }>('ListKeys', { page_size: pageSize, page_token: pageToken }, o);
  }

  encrypt(key: string, plaintext: Buffer, context: Context = {}, o?: CallOptions) {
    return this.#k<{ ciphertext: Buffer; key_id: string; key_version: number }>('Encrypt', { key, plaintext, context }, o);
  }

  decrypt(ciphertext: Buffer, context: Context = {}, o?: CallOptions) {
    return this.#k<{ plaintext: Buffer; key_id: string; key_version: number }>('Decrypt', { ciphertext, context }, o);
  }

  reEncrypt(ciphertext: Buffer, sourceContext: Context = {}, destinationKey = '', destinationContext: Context = {}, o?: CallOptions) {
    return this.#k<{ ciphertext: Buffer; key_id: string; key_version: number }>(
      'ReEncrypt',
      { ciphertext, source_context: sourceContext, destination_key: destinationKey, destination_context: destinationContext },
      o,
    );
  }

  encryptBatch(items: { key: string; plaintext: Buffer; context?: Context }[], o?: CallOptions) {
    return this.#k<{ results: { result: { ciphertext: Buffer; key_id: string; key_version: number } | null; error: BatchError | null }[] }>(
      'EncryptBatch',
      { items },
      { timeoutMs: 60_000, ...o },
    );
  }

  decryptBatch(items: { ciphertext: Buffer; context?: Context }[], o?: CallOptions) {
    return this.#k<{ results: { result: { plaintext: Buffer; key_id: string; key_version: number } | null; error: BatchError | null }[] }>(
      'DecryptBatch',
      { items },
      { timeoutMs: 60_000, ...o },
    );
  }

  generateDataKey(key: string, length = 32, context: Context = {}, o?: CallOptions) {
    return this.#k<DataKey>('GenerateDataKey', { key, length, context }, o);
  }

  generateDataKeyWithoutPlaintext(key: string, length = 32, context: Context = {}, o?: CallOptions) {
    return this.#k<DataKey>('GenerateDataKeyWithoutPlaintext', { key, length, context }, o);
  }

  sign(key: string, input: { message?: Buffer; digest?: Buffer }, o?: CallOptions) {
    return this.#k<{ signature: Buffer; key_id: string; key_version: number }>('Sign', { key, ...input }, o);
  }

  verify(key: string, input: { message?: Buffer; digest?: Buffer }, signature: Buffer, keyVersion = 0, o?: CallOptions) {
    return this.#k<{ valid: boolean }>('Verify', { key, ...input, signature, key_version: keyVersion }, o);
  }

  getPublicKey(key: string, keyVersion = 0, o?: CallOptions) {
    return this.#k<{ pem: string; jwk: string; key_version: number }>('GetPublicKey', { key, key_version: keyVersion }, o);
  }

  mac(key: string, message: Buffer, o?: CallOptions) {
    return this.#k<{ mac: Buffer; key_version: number }>('Mac', { key, message }, o);
  }

  verifyMac(key: string, message: Buffer, mac: Buffer, keyVersion = 0, o?: CallOptions) {
    return this.#k<{ valid: boolean }>('VerifyMac', { key, message, mac, key_version: keyVersion }, o);
  }

  setRotationPolicy(key: string, periodSeconds: number, o?: CallOptions) {
    return this.#k<Key>('SetRotationPolicy', { key, rotation: { period_seconds: periodSeconds } }, o);
  }

  rotateKey(key: string, o?: CallOptions) {
    return this.#k<Key>('RotateKey', { key }, o);
  }

  updateKey(key: string, change: { description?: string; labels?: Record<string, string>; min_decryption_version?: number; policy?: Record<string, string[]> }, o?: CallOptions) {
    const policy = change.policy ? { grants: Object.fromEntries(Object.entries(change.policy).map(([op, principals]) => [op, { principals }])) } : undefined;
    return this.#k<Key>('UpdateKey', { key, ...change, policy }, o);
  }

  enableKey(key: string, o?: CallOptions) {
    return this.#k<Key>('EnableKey', { key }, o);
  }

  disableKey(key: string, o?: CallOptions) {
    return this.#k<Key>('DisableKey', { key }, o);
  }

  scheduleKeyDestruction(key: string, waitingPeriodSeconds = 0, o?: CallOptions) {
    return this.#k<Key>('ScheduleKeyDestruction', { key, waiting_period_seconds: waitingPeriodSeconds }, o);
  }

  cancelKeyDestruction(key: string, o?: CallOptions) {
    return this.#k<Key>('CancelKeyDestruction', { key }, o);
  }

  createAlias(name: string, key: string, o?: CallOptions) {
    return this.#k<{ name: string; key_id: string }>('CreateAlias', { name, key }, o);
  }

  updateAlias(name: string, key: string, o?: CallOptions) {
    return this.#k<{ name: string; key_id: string }>('UpdateAlias', { name, key }, o);
  }

  deleteAlias(name: string, o?: CallOptions) {
    return this.#k<object>('DeleteAlias', { name }, o);
  }

  listAliases(key = '', o?: CallOptions) {
    return this.#k<{ aliases: { name: string; key_id: string }[] }>('ListAliases', { key }, o);
  }

  close(): void {
    for (const c of this.#keys) c.close();
    this.#ceremony.close();
  }
}

export interface BatchError {
  code: number;
  message: string;
}

export interface DataKey {
  plaintext: Buffer;
  ciphertext: Buffer;
  key_id: string;
  key_version: number;
}

/** A custodian operator's client: list, show, approve and deny ceremonies on one custodian. */
export class CustodianOperatorClient {
  #c: grpc.Client;
  constructor(opts: ClientOptions) {
    this.#c = makeClient(keyshardProto().CustodianService, opts.address, material(opts.tls), opts.channelOptions);
  }
  pending() {
    return unaryCall<{ ceremonies: Ceremony[] }>(this.#c, 'ListPending', {});
  }
  show(id: string) {
    return unaryCall<Ceremony>(this.#c, 'ShowCeremony', { id });
  }
  approve(ceremonyId: string) {
    return unaryCall<{ ceremony_id: string; status: string }>(this.#c, 'Approve', { ceremony_id: ceremonyId });
  }
  deny(ceremonyId: string, reason: string) {
    return unaryCall<{ ceremony_id: string; status: string }>(this.#c, 'Deny', { ceremony_id: ceremonyId, reason });
  }
  identity() {
    return unaryCall<{ custodian_id: string; holds_shares_for: string[]; approval_policy: string }>(this.#c, 'GetIdentity', {});
  }
  close(): void {
    this.#c.close();
  }
}

/** Starts an unseal ceremony and polls it until it finishes; rejects unless it completed. */
export async function unsealAndWait(
  client: KeyshardClient,
  onProgress: (c: Ceremony) => void = () => {},
  timeoutMs = 60_000,
): Promise<Ceremony> {
  let c = await client.startUnseal();
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  while (c.state === 'CEREMONY_STATE_OPEN') {
    if (c.approved_by.length !== last) {
      last = c.approved_by.length;
      onProgress(c);
    }
    if (Date.now() > deadline) throw new Error(`unseal ceremony ${c.id} still open after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
    c = await client.getCeremony(c.id);
  }
  onProgress(c);
  if (c.state !== 'CEREMONY_STATE_COMPLETED') throw new Error(`unseal ceremony ${c.id} ${c.state.replace('CEREMONY_STATE_', '').toLowerCase()}: ${c.error}`);
  return c;
}
