/**
 * The coordinator's gRPC client to custodian nodes (mutual TLS, coordinator identity). The
 * server is pinned to the custodian's id: its certificate CN must be that id (server-identity.ts).
 */
import { expectServer, keyshardProto, makeClient, unaryCall, isServiceError, reasonOfStatus, type pb, type TlsMaterial, type UnaryMethod, type UnaryRequest, type UnaryResponse } from '@keyshard/rpc';
import { KeyshardError, isReason } from '@keyshard/errors';
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
      if (isServiceError(e)) {
        // Custodian errors are already safe to show; keep their status class, and their reason with it.
        const code = e.code === 9 ? 'FAILED_PRECONDITION' : e.code === 7 ? 'PERMISSION_DENIED' : 'UNAVAILABLE';
        const reason = reasonOfStatus(e);
        const kept = code !== 'UNAVAILABLE' && isReason(reason) ? reason : undefined;
        throw new KeyshardError(code, `custodian ${this.id}: ${e.details || 'unreachable'}`, { cause: e, reason: kept });
      }
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
