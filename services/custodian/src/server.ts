/**
 * Thin gRPC handlers for CustodianService; authorisation by the caller's certificate identity
 * and the roles custodian.proto gives each method (coordinators: ROLE_COORDINATOR, this
 * custodian's operators: ROLE_CUSTODIAN_OPERATOR).
 */
import { invalidArgument, permissionDenied } from '@keyshard/errors';
import { methodOf, methodsWhere, roleAuthorizer, type CallContext, type pb, type ServiceHandlers } from '@keyshard/rpc';
import type { CustodianToken } from '@keyshard/hsm';
import type { Ceremony } from '@keyshard/crypto';
import type { Approvals, Custody, ReleaseRecord } from './custody.ts';
import type { TrustedKeys } from './trusted-keys.ts';

export function authorizer(coordinators: ReadonlySet<string>, operators: ReadonlySet<string>) {
  return roleAuthorizer('CustodianService', { ROLE_COORDINATOR: coordinators, ROLE_CUSTODIAN_OPERATOR: operators }, (ctx) =>
    permissionDenied(`${ctx.principal} may not call ${methodOf(ctx)} on this custodian`),
  );
}

/** Methods that move a share or decide about one: their intent is on record before they run (auditIntent). */
export const STATE_CHANGING: ReadonlySet<string> = methodsWhere('CustodianService', (p) => p.changesState);

export interface CustodianDeps {
  custodianId: string;
  tokenLabel: string;
  oaepHash: string;
  policy: string;
  token: CustodianToken;
  custody: Custody;
  trustedKeys: TrustedKeys;
  identity: { enrollmentPublicKeyPem: string; approvalPublicKeyPem: string };
}

function releaseMessage(r: ReleaseRecord, custody: Custody): pb.ReleaseResponse {
  return {
    ceremony_id: r.ceremony.id,
    status: r.status,
    releases: r.releases,
    approval_signature: r.approval_signature,
    reason: r.reason,
    succession: r.status === 'released' ? custody.succession(r.ceremony.cluster_id) : null,
  };
}

/** Approvals as the coordinator passes them on. */
const approvalsOf = (req: { approvals: pb.Approval__Output[] }): Approvals =>
  req.approvals.map((a) => ({ custodianId: a.custodian_id, signature: a.signature, succession: a.succession }));

function facts(ctx: CallContext, r: ReleaseRecord): void {
  ctx.facts.ceremonyId = r.ceremony.id;
  ctx.facts.details = { status: r.status, operation: r.ceremony.operation, recipients: String(r.releases.length) };
}

export function custodianHandlers(d: CustodianDeps): ServiceHandlers<'CustodianService'> {
  return {
    async GetIdentity() {
      return {
        custodian_id: d.custodianId,
        token_label: d.tokenLabel,
        enrollment_public_key_pem: d.identity.enrollmentPublicKeyPem,
        approval_public_key_pem: d.identity.approvalPublicKeyPem,
        oaep_hash: d.oaepHash,
        holds_shares_for: d.token.shareClusterIds(),
        approval_policy: d.policy,
      };
    },
    async DeliverShare(req, ctx) {
      if (!/^[\w-]{1,64}$/.test(req.cluster_id)) throw invalidArgument('cluster_id is not valid');
      if (!Buffer.isBuffer(req.encrypted_share) || req.encrypted_share.length === 0 || req.encrypted_share.length > 1024)
        throw invalidArgument('encrypted_share must be an RSA-OAEP ciphertext');
      const peers = req.peers.length > 0
        ? {
            threshold: req.threshold,
            custodians: req.peers.map((p) => ({ id: p.custodian_id, approvalPublicKeyPem: p.approval_public_key_pem })),
            ...(req.vouch_public_key_pem ? { vouchPublicKeyPem: req.vouch_public_key_pem } : {}),
          }
        : undefined;
      const generation = req.generation || 1;
      d.custody.deliver({ clusterId: req.cluster_id, encryptedShare: req.encrypted_share, replace: req.replace === true, generation, peers, ceremonyId: req.ceremony_id || undefined, approvals: approvalsOf(req) });
      ctx.facts.details = { cluster_id: req.cluster_id, x: String(req.x), generation: String(generation) };
      if (req.ceremony_id) ctx.facts.ceremonyId = req.ceremony_id;
      return { custodian_id: d.custodianId };
    },
    async DestroyShare(req, ctx) {
      if (!/^[\w-]{1,64}$/.test(req.cluster_id)) throw invalidArgument('cluster_id is not valid');
      const approvals = approvalsOf(req);
      const destroyed = d.custody.destroy(req.cluster_id, req.ceremony_id, approvals);
      ctx.facts.ceremonyId = req.ceremony_id;
      ctx.facts.details = { cluster_id: req.cluster_id, generations: destroyed.join(',') };
      return { ceremony_id: req.ceremony_id, status: destroyed.length ? `destroyed set ${destroyed.join(',')}` : 'no share held' };
    },
    async ExportShare(req, ctx) {
      if (!/^[\w-]{1,64}$/.test(req.cluster_id)) throw invalidArgument('cluster_id is not valid');
      const approvals = approvalsOf(req);
      const e = d.custody.exportShare(req.cluster_id, req.ceremony_id, req.recovery_public_key_pem, approvals);
      ctx.facts.ceremonyId = req.ceremony_id;
      ctx.facts.details = { cluster_id: req.cluster_id, generation: String(e.generation) };
      return {
        wrapped_share: e.wrappedShare, generation: e.generation, peers_json: e.peersJson, custodian_id: d.custodianId, cluster_id: req.cluster_id, oaep_hash: d.oaepHash,
        succession_statement: e.successionStatement,
      };
    },
    async ImportShare(req, ctx) {
      if (!/^[\w-]{1,64}$/.test(req.cluster_id)) throw invalidArgument('cluster_id is not valid');
      if (!Buffer.isBuffer(req.wrapped_share) || req.wrapped_share.length === 0 || req.wrapped_share.length > 1024)
        throw invalidArgument('wrapped_share must be an RSA-OAEP ciphertext');
      const generation = req.generation || 1;
      d.custody.importShare({
        clusterId: req.cluster_id, custodianId: req.custodian_id, generation, wrappedShare: req.wrapped_share,
        peersJson: req.peers_json, recoveryPrivateKeyPem: req.recovery_private_key_pem,
        successionStatement: Buffer.isBuffer(req.succession_statement) ? req.succession_statement : Buffer.alloc(0),
      });
      ctx.facts.details = { cluster_id: req.cluster_id, generation: String(generation), recovered: 'true' };
      return { custodian_id: d.custodianId };
    },
    async ProposeCeremony(req, ctx) {
      // Known before the decision, so that a refusal (e.g. an unvouched join) is audited with them.
      ctx.facts.ceremonyId = (req.ceremony?.id ?? '').slice(0, 128);
      ctx.facts.details = { operation: (req.ceremony?.operation ?? '').slice(0, 64) };
      const vouch = req.vouch ? { voucher: req.vouch.voucher, seal_epoch: req.vouch.seal_epoch, not_after: req.vouch.not_after, signature: req.vouch.signature } : null;
      // custody.propose checks every field of the ceremony (a missing one fails its hash or its checks).
      const r = await d.custody.propose(req.ceremony as Ceremony, ctx.principal, Date.now(), vouch);
      facts(ctx, r);
      return releaseMessage(r, d.custody);
    },
    async GetRelease(req, ctx) {
      const r = d.custody.get(req.id);
      facts(ctx, r);
      return releaseMessage(r, d.custody);
    },
    async ListPending() {
      return { ceremonies: d.custody.pending() };
    },
    async ShowCeremony(req, ctx) {
      const r = d.custody.get(req.id);
      facts(ctx, r);
      return r.ceremony;
    },
    async Approve(req, ctx) {
      const r = await d.custody.approve(req.ceremony_id);
      facts(ctx, r);
      return { ceremony_id: r.ceremony.id, status: r.status };
    },
    async EnrollTransportKey(req, ctx) {
      return d.trustedKeys.enroll(req, ctx);
    },
    async RevokeTransportKey(req, ctx) {
      return d.trustedKeys.revoke(req, ctx);
    },
    async NoteSeal(req, ctx) {
      const notice = { cluster_id: req.cluster_id, generation: req.generation, seal_epoch: req.seal_epoch, signature: req.signature };
      ctx.facts.details = { cluster_id: notice.cluster_id.slice(0, 128), seal_epoch: String(notice.seal_epoch) };
      return { seal_epoch: d.custody.noteSeal(notice) };
    },
    async ListTrustedKeys() {
      return d.trustedKeys.list();
    },
    async Deny(req, ctx) {
      const r = d.custody.deny(req.ceremony_id, req.reason);
      facts(ctx, r);
      return { ceremony_id: r.ceremony.id, status: r.status };
    },
  };
}
