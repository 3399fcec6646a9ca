/** Thin gRPC handlers for CustodianService; authorisation by the caller's certificate identity. */
import { invalidArgument, permissionDenied } from '@keyshard/errors';
import type { CallContext, UnaryHandler } from '@keyshard/rpc';
import type { CustodianToken } from '@keyshard/hsm';
import type { Ceremony } from '@keyshard/crypto';
import type { Custody, ReleaseRecord } from './custody.ts';

const COORDINATOR_METHODS = new Set(['GetIdentity', 'DeliverShare', 'ProposeCeremony', 'GetRelease', 'DestroyShare']);
const OPERATOR_METHODS = new Set(['GetIdentity', 'ListPending', 'ShowCeremony', 'Approve', 'Deny']);

export function authorizer(coordinators: Set<string>, operators: Set<string>) {
  return (ctx: CallContext) => {
    const name = ctx.method.slice(ctx.method.indexOf('.') + 1);
    if (coordinators.has(ctx.principal) && COORDINATOR_METHODS.has(name)) return;
    if (operators.has(ctx.principal) && OPERATOR_METHODS.has(name)) return;
    throw permissionDenied(`${ctx.principal} may not call ${name} on this custodian`);
  };
}

export interface CustodianDeps {
  custodianId: string;
  tokenLabel: string;
  oaepHash: string;
  policy: string;
  token: CustodianToken;
  custody: Custody;
  identity: { enrollmentPublicKeyPem: string; approvalPublicKeyPem: string };
}

function releaseMessage(r: ReleaseRecord) {
  return {
    ceremony_id: r.ceremony.id,
    status: r.status,
    releases: r.releases,
    approval_signature: r.approval_signature,
    reason: r.reason,
  };
}

function facts(ctx: CallContext, r: ReleaseRecord): void {
  ctx.facts.ceremonyId = r.ceremony.id;
  ctx.facts.details = { status: r.status, operation: r.ceremony.operation, recipients: String(r.releases.length) };
}

export function custodianHandlers(d: CustodianDeps): Record<string, UnaryHandler<any, any>> {
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
      const peers = Array.isArray(req.peers) && req.peers.length > 0
        ? { threshold: Number(req.threshold), custodians: req.peers.map((p: { custodian_id: string; approval_public_key_pem: string }) => ({ id: p.custodian_id, approvalPublicKeyPem: p.approval_public_key_pem })) }
        : undefined;
      const generation = Number(req.generation) || 1;
      d.custody.deliver({ clusterId: req.cluster_id, encryptedShare: req.encrypted_share, replace: req.replace === true, generation, peers, ceremonyId: req.ceremony_id || undefined });
      ctx.facts.details = { cluster_id: req.cluster_id, x: String(req.x), generation: String(generation) };
      if (req.ceremony_id) ctx.facts.ceremonyId = req.ceremony_id;
      return { custodian_id: d.custodianId };
    },
    async DestroyShare(req, ctx) {
      if (!/^[\w-]{1,64}$/.test(req.cluster_id)) throw invalidArgument('cluster_id is not valid');
      const approvals = (req.approvals ?? []).map((a: { custodian_id: string; signature: Buffer }) => ({ custodianId: a.custodian_id, signature: a.signature }));
      const destroyed = d.custody.destroy(req.cluster_id, req.ceremony_id, approvals);
      ctx.facts.ceremonyId = req.ceremony_id;
      ctx.facts.details = { cluster_id: req.cluster_id, generations: destroyed.join(',') };
      return { ceremony_id: req.ceremony_id, status: destroyed.length ? `destroyed set ${destroyed.join(',')}` : 'no share held' };
    },
    async ProposeCeremony(req, ctx) {
      const r = d.custody.propose(req.ceremony as Ceremony, ctx.principal);
      facts(ctx, r);
      return releaseMessage(r);
    },
    async GetRelease(req, ctx) {
      const r = d.custody.get(req.id);
      facts(ctx, r);
      return releaseMessage(r);
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
      const r = d.custody.approve(req.ceremony_id);
      facts(ctx, r);
      return { ceremony_id: r.ceremony.id, status: r.status };
    },
    async Deny(req, ctx) {
      const r = d.custody.deny(req.ceremony_id, req.reason);
      facts(ctx, r);
      return { ceremony_id: r.ceremony.id, status: r.status };
    },
  };
}
