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
}

function material(tls: TlsMaterial | TlsFiles): TlsMaterial {
  return Buffer.isBuffer(tls.ca) ? (tls as TlsMaterial) : readTls(tls as TlsFiles);
}

export class KeyshardClient {
  #keys: grpc.Client;
  #ceremony: grpc.Client;
  #timeoutMs: number;

  constructor(opts: ClientOptions) {
    const tls = material(opts.tls);
    const proto = keyshardProto();
    this.#keys = makeClient(proto.KeyService, opts.address, tls, opts.channelOptions);
    this.#ceremony = makeClient(proto.CeremonyService, opts.address, tls, opts.channelOptions);
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
  }

  #k<T>(method: string, req: unknown, o?: CallOptions) {
    return unaryCall<T>(this.#keys, method, req, { timeoutMs: this.#timeoutMs, ...o });
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

  createKey(name: string, opts: { type?: string; description?: string; labels?: Record<string, string> } = {}, o?: CallOptions) {
    return this.#k<Key>('CreateKey', { name, ...opts }, o);
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

  close(): void {
    this.#keys.close();
    this.#ceremony.close();
  }
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
