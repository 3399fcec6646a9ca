/**
 * The coordinator's gRPC client to custodian nodes (mutual TLS, coordinator identity). The
 * server is pinned to the custodian's id: its certificate CN must be that id (server-identity.ts).
 */
import { status, type Metadata } from '@grpc/grpc-js';
import { codeName, errorInfoOf, expectServer, keyshardProto, makeClient, unaryCall, isServiceError, reasonOfStatus, type pb, type TlsMaterial, type UnaryMethod, type UnaryRequest, type UnaryResponse } from '@keyshard/rpc';
import { KeyshardError, isReason, type ErrorCode } from '@keyshard/errors';
import type { Ceremony, JoinVouch, SealNotice, Succession } from '@keyshard/crypto';

export type CustodianIdentity = pb.CustodianIdentity__Output;

/**
 * A custodian's answer to a proposal or a poll: `status` is pending | released | denied; a
 * custodian restored into a new token sets `succession` (why its new approval key counts).
 */
export type ReleaseResponse = pb.ReleaseResponse__Output;

/** A custodian's approval as passed on to other custodians (DestroyShare, ExportShare). */
export type Approval = { custodianId: string; signature: Buffer; succession?: Succession | null };
const approvalMessages = (approvals: Approval[]): pb.Approval[] => approvals.map((a) => ({ custodian_id: a.custodianId, signature: a.signature, succession: a.succession ?? null }));

type Client = pb.CustodianServiceClient;

/**
 * A custodian's refusals, as the coordinator passes them on: the custodian's checks failed, so
 * asking again will not help (the ceremony runner records them: runner.ts). Its INVALID_ARGUMENT
 * is its check of what this coordinator sent (a ceremony's hash, its times, a recipient's key):
 * for the coordinator's caller that is a precondition that failed, not an argument of theirs.
 */
const REFUSALS: ReadonlyMap<status, ErrorCode> = new Map([
  [status.FAILED_PRECONDITION, 'FAILED_PRECONDITION'],
  [status.PERMISSION_DENIED, 'PERMISSION_DENIED'],
  [status.INVALID_ARGUMENT, 'FAILED_PRECONDITION'],
]);

/** Statuses that only say the custodian cannot be reached now (grpc-js makes them itself). */
const UNREACHABLE: ReadonlySet<status> = new Set([status.UNAVAILABLE, status.DEADLINE_EXCEEDED]);

/**
 * A custodian's error as a KeyshardError: a refusal (REFUSALS) keeps the custodian's reason
 * (WRONG_CLUSTER, NOT_ENROLLED, …; its code's default when it named none) and metadata; anything
 * else is UNAVAILABLE, which callers may retry (the ceremony runner does). When the custodian
 * answered with another status (INTERNAL, NOT_FOUND, …), that status is kept in the message and
 * as metadata `custodian_status`, so it is not mistaken for unreachability in the coordinator's log.
 */
export function custodianError(custodianId: string, e: { code: number; details?: string; metadata?: Metadata }): KeyshardError {
  const refusal = REFUSALS.get(e.code);
  if (refusal) {
    const reason = reasonOfStatus(e);
    return new KeyshardError(refusal, `custodian ${custodianId}: ${e.details || codeName(e.code)}`, {
      cause: e, reason: isReason(reason) ? reason : undefined, metadata: errorInfoOf(e)?.metadata,
    });
  }
  if (UNREACHABLE.has(e.code)) return new KeyshardError('UNAVAILABLE', `custodian ${custodianId}: ${e.details || 'unreachable'}`, { cause: e });
  const name = codeName(e.code);
  return new KeyshardError('UNAVAILABLE', `custodian ${custodianId} answered ${name}: ${e.details || 'no details'}`, { cause: e, metadata: { custodian_status: name } });
}

// The crypto package's domain objects are sent as they are: they must stay the proto messages' shapes.
type Conforms<Domain extends Message, Message> = Domain;
export type SentAsProto = [Conforms<Ceremony, pb.Ceremony>, Conforms<JoinVouch, pb.JoinVouch>, Conforms<SealNotice, pb.SealNotice>, Conforms<Succession, pb.Succession>];

export class CustodianLink {
  readonly id: string;
  readonly address: string;
  #client: Client;

  constructor(id: string, address: string, tls: TlsMaterial) {
    this.id = id;
    this.address = address;
    this.#client = makeClient(keyshardProto().CustodianService, address, tls, {}, expectServer(`custodian ${id}`, id));
  }

  async #call<M extends UnaryMethod<Client>>(method: M, req: UnaryRequest<Client, M>, timeoutMs = 5_000): Promise<UnaryResponse<Client, M>> {
    try {
      return await unaryCall(this.#client, method, req, { timeoutMs });
    } catch (e) {
      // Custodian errors are already safe to show.
      if (isServiceError(e)) throw custodianError(this.id, e);
      throw e;
    }
  }

  identity(timeoutMs?: number): Promise<CustodianIdentity> {
    return this.#call('GetIdentity', {}, timeoutMs);
  }

  /** Delivers a share encrypted to the custodian's enrollment key, with its set's peers and threshold. */
  deliverShare(d: {
    clusterId: string;
    encryptedShare: Buffer;
    x: number;
    replace: boolean;
    generation: number;
    threshold: number;
    peers: { id: string; approvalPublicKeyPem: string }[];
    /** The root's join-vouch key (join-vouch.ts): what the custodian checks join vouches with. */
    vouchPublicKeyPem: string;
    ceremonyId?: string;
    /** generation > 1: the quorum's approvals of the reshare / rotate-root ceremony (checked by the custodian). */
    approvals?: Approval[];
  }): Promise<pb.DeliverShareResponse__Output> {
    return this.#call('DeliverShare', {
      cluster_id: d.clusterId,
      encrypted_share: d.encryptedShare,
      x: d.x,
      replace: d.replace,
      generation: d.generation,
      threshold: d.threshold,
      peers: d.peers.map((p) => ({ custodian_id: p.id, approval_public_key_pem: p.approvalPublicKeyPem })),
      ceremony_id: d.ceremonyId ?? '',
      vouch_public_key_pem: d.vouchPublicKeyPem,
      approvals: approvalMessages(d.approvals ?? []),
    });
  }

  /** Asks the custodian to destroy share set(s) on a quorum's approvals of `ceremonyId`. */
  destroyShare(clusterId: string, ceremonyId: string, approvals: Approval[]): Promise<pb.DecisionResponse__Output> {
    return this.#call('DestroyShare', { cluster_id: clusterId, ceremony_id: ceremonyId, approvals: approvalMessages(approvals) });
  }

  /** Custodian recovery: the custodian's share wrapped to the recovery key an approved export-share ceremony binds. */
  exportShare(clusterId: string, ceremonyId: string, recoveryPublicKeyPem: string, approvals: Approval[]): Promise<pb.ExportShareResponse__Output> {
    return this.#call('ExportShare', {
      cluster_id: clusterId,
      ceremony_id: ceremonyId,
      recovery_public_key_pem: recoveryPublicKeyPem,
      approvals: approvalMessages(approvals),
    });
  }

  /** Proposes a ceremony; a join carries the vouch of an unsealed peer. */
  propose(ceremony: Ceremony, vouch?: JoinVouch): Promise<ReleaseResponse> {
    return this.#call('ProposeCeremony', { ceremony, vouch: vouch ?? null });
  }

  /** Tells the custodian the cluster's new seal epoch (seal-notice.ts). */
  noteSeal(notice: SealNotice): Promise<pb.SealNoticeResponse__Output> {
    return this.#call('NoteSeal', notice, 3_000);
  }

  release(ceremonyId: string): Promise<ReleaseResponse> {
    return this.#call('GetRelease', { id: ceremonyId });
  }

  close(): void {
    this.#client.close();
  }
}
