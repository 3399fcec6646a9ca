/**
 * keyshard TypeScript SDK: typed promise methods over the keyshard.v1 gRPC API, mutual TLS,
 * a deadline and a request id on every call. Every call rejects with a KeyshardError (errors.ts):
 * the status `code` and the server's `reason`, a subclass for the common ones (SealedError, …).
 * A client may be given several coordinator replicas: calls are balanced over the healthy ones
 * and retried within their deadline only as call-policy.ts allows (replica-pool.ts does it);
 * state changes carry a request token (one per logical call), so they are retried too.
 * Servers are pinned (@keyshard/rpc server-identity.ts): a coordinator must present a
 * coordinator identity (ClientOptions.coordinatorIds), a custodian its own id; any other
 * certificate of the CA is refused with UNAVAILABLE.
 */
import type * as grpc from '@grpc/grpc-js';
import { status as grpcStatus } from '@grpc/grpc-js';
import { expectServer, keyshardProto, makeClient, principalOfCertificate, unaryCall, type pb, type TlsFiles, type TlsMaterial, type UnaryMethod, type UnaryRequest, type UnaryResponse } from '@keyshard/rpc';
import { newRequestToken, retryPolicy, takesRequestToken, type RetryOptions } from './call-policy.ts';
import { coordinatorIdentity, tlsMaterial, type ConnectionOptions } from './connection.ts';
import { grpcTransport, Replica, ReplicaPool } from './replica-pool.ts';
import { DeadlineExceededError, toKeyshardError, typedError, type KeyshardError } from './errors.ts';
import type { Ceremony, Context, ShareExport } from './types.ts';

export type { TlsFiles, TlsMaterial, RetryOptions };
export { isServiceError, statusName, REASONS } from '@keyshard/rpc';
export * from './errors.ts';
export { methodSafety, type Safety } from './call-policy.ts';
export { coordinatorIdentity, type ConnectionOptions } from './connection.ts';
export type * from './types.ts';

export interface ClientOptions extends Omit<ConnectionOptions, 'address'> {
  /** A coordinator's "host:port", or several replicas of one cluster. */
  address: string | readonly string[];
  /**
   * The coordinator replicas' ids (their certificate CNs): a server presenting another
   * certificate of the CA is refused. Default: any CN of the replica naming convention,
   * `coordinator-<n>` or `<prefix>-coordinator-<n>` (COORDINATOR_ID_PATTERN); set the ids
   * when the CA issues such names to anything else or replicas are named otherwise.
   */
  coordinatorIds?: readonly string[];
  /** Each call's deadline, retries included, unless the call says otherwise (default 10 s). */
  timeoutMs?: number;
  /** TLS connections key operations are spread over, per address (default 4). */
  connections?: number;
  retry?: RetryOptions;
}

export interface CallOptions {
  /** The call's whole budget, retries included (default: the client's timeoutMs). */
  timeoutMs?: number;
  /** An absolute deadline (epoch ms or Date); takes precedence over timeoutMs. */
  deadline?: number | Date;
  /** Sent as x-request-id and kept across retries, so the audit log links the attempts. */
  requestId?: string;
  /**
   * A state change's idempotency token (keys.proto, "Idempotent state changes"): 1 to 128
   * characters of [A-Za-z0-9_-]. Default: a fresh random one per call, kept across its retries.
   * Give your own to make a change exactly once across calls (e.g. after your process restarts):
   * within 24 h, the same token with the same parameters answers the first call's outcome.
   */
  requestToken?: string;
}

/**
 * A replica that comes back is noticed within seconds, not after grpc-js's default of up to 120 s.
 * A replica that hangs (SIGSTOPped, its host frozen: TCP still accepts, nothing answers) is
 * noticed by HTTP/2 keepalive: while a call is in flight a PING goes out every 2 s, and an
 * unanswered one drops the connection after 3 s, failing its calls UNAVAILABLE, so idempotent
 * ones move to another replica within ~5 s instead of waiting out their deadline. Idle channels
 * are not pinged (no load on servers from idle clients); the first call after an idle spell
 * sends a PING at once (grpc-js). Servers permit this rate (@keyshard/rpc serverOptions).
 */
const SDK_CHANNEL_OPTIONS: Readonly<grpc.ChannelOptions> = {
  'grpc.max_reconnect_backoff_ms': 5_000,
  'grpc.keepalive_time_ms': 2_000,
  'grpc.keepalive_timeout_ms': 3_000,
  'grpc.keepalive_permit_without_calls': 0,
};

function addressesOf(address: string | readonly string[]): string[] {
  const list = typeof address === 'string' ? [address] : [...address];
  if (list.length === 0 || list.some((a) => typeof a !== 'string' || a.trim() === '')) throw new Error('address must be a non-empty "host:port" or a non-empty list of them');
  if (new Set(list).size !== list.length) throw new Error('address lists a replica twice');
  return list;
}

type KeyClient = pb.KeyServiceClient;
type CeremonyClient = pb.CeremonyServiceClient;

/** A key policy as the SDK takes it (operation → principals) in its proto form. */
const grantsOf = (policy: Record<string, string[]> | undefined): pb.KeyPolicy | undefined =>
  policy ? { grants: Object.fromEntries(Object.entries(policy).map(([op, principals]) => [op, { principals }])) } : undefined;

export class KeyshardClient {
  #keys: ReplicaPool;
  #ceremony: ReplicaPool;
  #timeoutMs: number;

  constructor(opts: ClientOptions) {
    const addresses = addressesOf(opts.address);
    const tls = tlsMaterial(opts.tls);
    const proto = keyshardProto();
    // Key operations are spread over a few TLS connections: one HTTP/2 connection serialises
    // framing and TLS records on both ends, and several keep a busy caller's latency lower.
    const connections = opts.connections ?? 4;
    if (!Number.isInteger(connections) || connections < 1 || connections > 64) throw new Error('connections must be between 1 and 64');
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    if (!(this.#timeoutMs > 0)) throw new Error('timeoutMs must be a positive number of milliseconds');
    const policy = retryPolicy(opts.retry);
    const server = coordinatorIdentity(opts.coordinatorIds);
    const channelOptions = { ...SDK_CHANNEL_OPTIONS, ...opts.channelOptions };
    const keyChannels = { ...channelOptions, 'grpc.use_local_subchannel_pool': 1 };
    this.#keys = new ReplicaPool(
      addresses.map(
        (a) => new Replica(a, Array.from({ length: connections }, () => grpcTransport(makeClient(proto.KeyService, a, tls, keyChannels, server)))),
      ),
      policy,
      true,
    );
    this.#ceremony = new ReplicaPool(
      addresses.map((a) => new Replica(a, [grpcTransport(makeClient(proto.CeremonyService, a, tls, channelOptions, server))])),
      policy,
      false,
    );
  }

  // Typed by the generated client: the request as keys.proto / ceremony.proto define it, the
  // response as decoded. The pools decide retries on the raw status (call-policy.ts); callers
  // get the typed error (errors.ts).
  // A state change gets one request token per logical call, sent by every attempt: the pool may
  // then retry it like an idempotent call (call-policy.ts), and the coordinator applies it once.
  #k<M extends UnaryMethod<KeyClient>>(method: M, req: UnaryRequest<KeyClient, M>, o?: CallOptions, timeoutMs = this.#timeoutMs) {
    const request = takesRequestToken(method) ? { ...req, request_token: o?.requestToken || newRequestToken() } : req;
    return typed(this.#keys.call<UnaryResponse<KeyClient, M>>(method, request, deadlineOf(o, timeoutMs), o?.requestId), o?.requestId);
  }

  #c<M extends UnaryMethod<CeremonyClient>>(method: M, req: UnaryRequest<CeremonyClient, M>, o?: CallOptions, timeoutMs = this.#timeoutMs) {
    const request = takesRequestToken(method) ? { ...req, request_token: o?.requestToken || newRequestToken() } : req;
    return typed(this.#ceremony.call<UnaryResponse<CeremonyClient, M>>(method, request, deadlineOf(o, timeoutMs), o?.requestId), o?.requestId);
  }

  status(o?: CallOptions) {
    return this.#c('Status', {}, o);
  }

  init(shares?: number, threshold?: number, o?: CallOptions) {
    return this.#c(
      'Init',
      { shares: shares ?? 0, threshold: threshold ?? 0 },
      o,
      60_000,
    );
  }

  startUnseal(ttlSeconds?: number, o?: CallOptions) {
    return this.#c('StartUnseal', { ttl_seconds: ttlSeconds ?? 0 }, o);
  }

  getCeremony(id: string, o?: CallOptions) {
    return this.#c('GetCeremony', { id }, o);
  }

  seal(o?: CallOptions) {
    return this.#c('Seal', {}, o);
  }

  /** Opens a quorum ceremony (e.g. destroy-key with parameters { key }). */
  startCeremony(operation: string, parameters: Record<string, string> = {}, ttlSeconds = 0, o?: CallOptions) {
    return this.#c('StartCeremony', { operation, parameters, ttl_seconds: ttlSeconds }, o);
  }

  listCeremonies(includeFinished = false, o?: CallOptions) {
    return this.#c('ListCeremonies', { include_finished: includeFinished }, o);
  }

  /** The recovery export an export-share ceremony produced (wrapped to the offline recovery key). */
  getShareExport(ceremonyId: string, o?: CallOptions) {
    return this.#c('GetShareExport', { id: ceremonyId }, o);
  }

  /**
   * After an audit witness alarm (a rolled-back or forked audit sink): re-anchors every replica's
   * witness on the sink's current checkpoint. Admin only; audited (`witness.reset`).
   */
  resetWitnesses(confirm: boolean, o?: CallOptions) {
    return this.#c('ResetWitnesses', { confirm }, o);
  }

  cancelCeremony(id: string, o?: CallOptions) {
    return this.#c('CancelCeremony', { id }, o);
  }

  createKey(
    name: string,
    opts: { type?: string; description?: string; labels?: Record<string, string>; rotationPeriodSeconds?: number; policy?: Record<string, string[]> } = {},
    o?: CallOptions,
  ) {
    const { rotationPeriodSeconds, policy, ...rest } = opts;
    return this.#k(
      'CreateKey',
      {
        name,
        ...rest,
        rotation: rotationPeriodSeconds ? { period_seconds: rotationPeriodSeconds } : undefined,
        policy: grantsOf(policy),
      },
      o,
    );
  }

  getKey(key: string, o?: CallOptions) {
    return this.#k('GetKey', { key }, o);
  }

  listKeys(pageSize = 0, pageToken = '', o?: CallOptions) {
    return this.#k('ListKeys', { page_size: pageSize, page_token: pageToken }, o);
  }

  encrypt(key: string, plaintext: Buffer, context: Context = {}, o?: CallOptions) {
    return this.#k('Encrypt', { key, plaintext, context }, o);
  }

  /** `o.key`: the key (name, id or alias) the ciphertext must belong to; another key's ciphertext is refused. */
  decrypt(ciphertext: Buffer, context: Context = {}, o?: CallOptions & { key?: string }) {
    return this.#k('Decrypt', { ciphertext, context, ...(o?.key ? { key: o.key } : {}) }, o);
  }

  reEncrypt(ciphertext: Buffer, sourceContext: Context = {}, destinationKey = '', destinationContext: Context = {}, o?: CallOptions) {
    return this.#k(
      'ReEncrypt',
      { ciphertext, source_context: sourceContext, destination_key: destinationKey, destination_context: destinationContext },
      o,
    );
  }

  encryptBatch(items: { key: string; plaintext: Buffer; context?: Context }[], o?: CallOptions) {
    return this.#k(
      'EncryptBatch',
      { items },
      o,
      60_000,
    );
  }

  decryptBatch(items: { ciphertext: Buffer; context?: Context }[], o?: CallOptions) {
    return this.#k(
      'DecryptBatch',
      { items },
      o,
      60_000,
    );
  }

  generateDataKey(key: string, length = 32, context: Context = {}, o?: CallOptions) {
    return this.#k('GenerateDataKey', { key, length, context }, o);
  }

  generateDataKeyWithoutPlaintext(key: string, length = 32, context: Context = {}, o?: CallOptions) {
    return this.#k('GenerateDataKeyWithoutPlaintext', { key, length, context }, o);
  }

  sign(key: string, input: { message?: Buffer; digest?: Buffer }, o?: CallOptions) {
    return this.#k('Sign', { key, ...input }, o);
  }

  verify(key: string, input: { message?: Buffer; digest?: Buffer }, signature: Buffer, keyVersion = 0, o?: CallOptions) {
    return this.#k('Verify', { key, ...input, signature, key_version: keyVersion }, o);
  }

  getPublicKey(key: string, keyVersion = 0, o?: CallOptions) {
    return this.#k('GetPublicKey', { key, key_version: keyVersion }, o);
  }

  mac(key: string, message: Buffer, o?: CallOptions) {
    return this.#k('Mac', { key, message }, o);
  }

  verifyMac(key: string, message: Buffer, mac: Buffer, keyVersion = 0, o?: CallOptions) {
    return this.#k('VerifyMac', { key, message, mac, key_version: keyVersion }, o);
  }

  setRotationPolicy(key: string, periodSeconds: number, o?: CallOptions) {
    return this.#k('SetRotationPolicy', { key, rotation: { period_seconds: periodSeconds } }, o);
  }

  /** Rotates now; with `onlyIfDue`, only if the key's scheduled rotation is due (compare-and-swap, like the leader's sweep). */
  rotateKey(key: string, o?: CallOptions & { onlyIfDue?: boolean }) {
    return this.#k('RotateKey', { key, only_if_due: o?.onlyIfDue ?? false }, o);
  }

  /** Changes what is given; `minDecryptionVersion` retires older versions for decryption. */
  updateKey(key: string, change: { description?: string; labels?: Record<string, string>; minDecryptionVersion?: number; policy?: Record<string, string[]> }, o?: CallOptions) {
    const { minDecryptionVersion, policy, ...rest } = change;
    return this.#k('UpdateKey', { key, ...rest, min_decryption_version: minDecryptionVersion, policy: grantsOf(policy) }, o);
  }

  enableKey(key: string, o?: CallOptions) {
    return this.#k('EnableKey', { key }, o);
  }

  disableKey(key: string, o?: CallOptions) {
    return this.#k('DisableKey', { key }, o);
  }

  scheduleKeyDestruction(key: string, waitingPeriodSeconds = 0, o?: CallOptions) {
    return this.#k('ScheduleKeyDestruction', { key, waiting_period_seconds: waitingPeriodSeconds }, o);
  }

  cancelKeyDestruction(key: string, o?: CallOptions) {
    return this.#k('CancelKeyDestruction', { key }, o);
  }

  createAlias(name: string, key: string, o?: CallOptions) {
    return this.#k('CreateAlias', { name, key }, o);
  }

  updateAlias(name: string, key: string, o?: CallOptions) {
    return this.#k('UpdateAlias', { name, key }, o);
  }

  deleteAlias(name: string, o?: CallOptions) {
    return this.#k('DeleteAlias', { name }, o);
  }

  listAliases(key = '', o?: CallOptions) {
    return this.#k('ListAliases', { key }, o);
  }

  close(): void {
    this.#keys.close();
    this.#ceremony.close();
  }
}

/** `p`, rejecting with the KeyshardError of its status error (errors.ts). */
function typed<T>(p: Promise<T>, requestId?: string): Promise<T> {
  return p.catch((e: unknown) => {
    throw toKeyshardError(e, requestId);
  });
}

function deadlineOf(o: CallOptions | undefined, timeoutMs: number): number {
  if (o?.deadline !== undefined) return typeof o.deadline === 'number' ? o.deadline : o.deadline.getTime();
  return Date.now() + (o?.timeoutMs ?? timeoutMs);
}

/**
 * A custodian's id as its operator's certificate implies: operator certificates are named
 * `<custodian id>-operator` (dev PKI, deploy/README.md).
 */
export function custodianOfOperator(operatorCn: string): string | undefined {
  const m = /^(.+)-operator$/.exec(operatorCn);
  return m?.[1];
}

/** A custodian operator's client: list, show, approve and deny ceremonies on one custodian. */
export class CustodianOperatorClient {
  #c: pb.CustodianServiceClient;
  /**
   * `custodianId`: the custodian expected at `address` (its certificate CN); by default the
   * one the operator certificate is named for (`<custodian id>-operator`).
   */
  constructor(opts: ConnectionOptions & { custodianId?: string }) {
    const tls = tlsMaterial(opts.tls);
    const id = opts.custodianId ?? custodianOfOperator(principalOfCertificate(tls.cert));
    if (!id) throw new Error('custodianId is required: the certificate is not named <custodian id>-operator');
    this.#c = makeClient(keyshardProto().CustodianService, opts.address, tls, opts.channelOptions, expectServer(`custodian ${id}`, id));
  }
  pending() {
    return typed(unaryCall(this.#c, 'ListPending', {}));
  }
  show(id: string) {
    return typed(unaryCall(this.#c, 'ShowCeremony', { id }));
  }
  approve(ceremonyId: string) {
    return typed(unaryCall(this.#c, 'Approve', { ceremony_id: ceremonyId }));
  }
  deny(ceremonyId: string, reason: string) {
    return typed(unaryCall(this.#c, 'Deny', { ceremony_id: ceremonyId, reason }));
  }
  identity() {
    return typed(unaryCall(this.#c, 'GetIdentity', {}));
  }
  /**
   * The token's security officer enrolls a trusted wrapping key: a coordinator's transport key
   * (kind transport) or an offline recovery key (kind recovery). The SO PIN is sent for this call only.
   */
  enrollTransportKey(r: { coordinatorId?: string; publicKeyPem: string; soPin: string; kind?: 'transport' | 'recovery' }) {
    return typed(unaryCall(this.#c, 'EnrollTransportKey', {
      coordinator_id: r.coordinatorId ?? '', public_key_pem: r.publicKeyPem, so_pin: r.soPin, kind: r.kind ?? 'transport',
    }, { timeoutMs: 30_000 }));
  }
  /** Revokes the trusted keys of a coordinator (only `publicKeyPem` when given), or a recovery key (`publicKeyPem` names it). */
  revokeTransportKey(r: { coordinatorId?: string; publicKeyPem?: string; soPin: string; kind?: 'transport' | 'recovery' }) {
    return typed(unaryCall(this.#c, 'RevokeTransportKey', {
      coordinator_id: r.coordinatorId ?? '', public_key_pem: r.publicKeyPem ?? '', so_pin: r.soPin, kind: r.kind ?? 'transport',
    }, { timeoutMs: 30_000 }));
  }
  listTrustedKeys() {
    return typed(unaryCall(this.#c, 'ListTrustedKeys', {}));
  }
  /** Custodian recovery: imports a share export into this custodian's (new) token with the recovery private key. */
  importShare(e: ShareExport, recoveryPrivateKeyPem: string) {
    return typed(unaryCall(this.#c, 'ImportShare', {
      cluster_id: e.cluster_id, wrapped_share: e.wrapped_share, generation: e.generation, peers_json: e.peers_json,
      custodian_id: e.custodian_id, recovery_private_key_pem: recoveryPrivateKeyPem, succession_statement: e.succession_statement,
    }, { timeoutMs: 30_000 }));
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
  return waitForCeremony(client, await client.startUnseal(), onProgress, timeoutMs);
}

/**
 * Follows a ceremony until it leaves OPEN, reporting each change of its approvals; resolves
 * with the completed ceremony, rejects if it failed, expired or was cancelled
 * (ceremonyError: a FailedPreconditionError whose reason says why, e.g. QUORUM_NOT_MET,
 * CEREMONY_EXPIRED or CANCELLED, with the custodians' refusals in its metadata), or is still
 * open after `timeoutMs` (DeadlineExceededError).
 */
export async function waitForCeremony(
  client: KeyshardClient,
  ceremony: Ceremony,
  onProgress: (c: Ceremony) => void = () => {},
  timeoutMs = 60_000,
): Promise<Ceremony> {
  let c = ceremony;
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  while (c.state === 'CEREMONY_STATE_OPEN') {
    if (c.approved_by.length !== last) {
      last = c.approved_by.length;
      onProgress(c);
    }
    if (Date.now() > deadline)
      throw new DeadlineExceededError({ code: grpcStatus.DEADLINE_EXCEEDED, message: `${c.operation} ceremony ${c.id} still open after ${timeoutMs} ms`, metadata: { ceremony_id: c.id } });
    await new Promise((r) => setTimeout(r, 200));
    c = await client.getCeremony(c.id);
  }
  onProgress(c);
  if (c.state !== 'CEREMONY_STATE_COMPLETED') throw ceremonyError(c);
  return c;
}

/**
 * Why a ceremony that ended without completing ended, as the typed error of its reason
 * (FailedPreconditionError, or the reason's own class): the reason is the ceremony's
 * `error_reason` (QUORUM_NOT_MET, CEREMONY_EXPIRED, CANCELLED, INTEGRITY_FAILURE, …); from a
 * server older than that field, CEREMONY_EXPIRED or CANCELLED by its state, else the first
 * custodian refusal's reason, else CEREMONY_CLOSED. Metadata: `ceremony_id`, `state`, and when
 * there are any `failures` (`custodian-4=WRONG_CLUSTER,custodian-5=NOT_ENROLLED`: each refusing
 * or rejected custodian with its reason) and `denied_by` (`custodian-2,custodian-3`); each
 * failure's words are in `ceremony.failures`.
 */
export function ceremonyError(c: Ceremony): KeyshardError {
  const firstRefusal = c.failures?.find((f) => f.error_reason)?.error_reason;
  const reason =
    c.error_reason ||
    (c.state === 'CEREMONY_STATE_EXPIRED' ? 'CEREMONY_EXPIRED' : c.state === 'CEREMONY_STATE_CANCELLED' ? 'CANCELLED' : firstRefusal || 'CEREMONY_CLOSED');
  const metadata: Record<string, string> = { ceremony_id: c.id, state: c.state };
  if (c.failures?.length) metadata.failures = c.failures.map((f) => (f.error_reason ? `${f.custodian_id}=${f.error_reason}` : f.custodian_id)).join(',');
  if (c.denied_by?.length) metadata.denied_by = c.denied_by.join(',');
  return typedError({
    code: grpcStatus.FAILED_PRECONDITION,
    message: `${c.operation} ceremony ${c.id} ${ceremonyState(c)}${c.error ? `: ${c.error}` : ''}`,
    reason,
    metadata,
  });
}

/** A ceremony's state as a word: open, completed, failed, expired, cancelled. */
export const ceremonyState = (c: Pick<Ceremony, 'state'>): string => c.state.replace('CEREMONY_STATE_', '').toLowerCase();
export { BackupClient, type BackupSummary, type RestoreProgress } from './backup.ts';
export {
  encryptEnvelope,
  decryptEnvelope,
  encryptEnvelopeStream,
  decryptEnvelopeStream,
  encryptFile,
  decryptFile,
  parseEnvelopeHeader,
  DEFAULT_SEGMENT_BYTES,
  MIN_SEGMENT_BYTES,
  MAX_SEGMENT_BYTES,
  type ByteSource,
  type EnvelopeInput,
  type EnvelopeContext,
  type EnvelopeHeader,
  type EnvelopeKeyClient,
  type EnvelopeOptions,
  type EncryptEnvelopeOptions,
  type EnvelopeCallOptions,
} from './envelope.ts';
