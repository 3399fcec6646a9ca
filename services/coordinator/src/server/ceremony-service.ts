/**
 * Thin gRPC handlers for CeremonyService: decode, call the domain, encode. Authorisation,
 * errors and auditing are handled by `unaryService`, its authorizer (the roles the protos give
 * each method) and the audit observer.
 */
import { permissionDenied, invalidArgument, failedPrecondition, ceremonyNotFound, quote } from '@keyshard/errors';
import { OPERATIONS, RELEASING_OPERATIONS } from '@keyshard/crypto';
import type { Ceremony } from '@keyshard/crypto';
import { paths } from '@keyshard/store';
import { roleAuthorizer, type CallContext, type ServiceHandlers } from '@keyshard/rpc';
import type { Cluster } from '../cluster/cluster.ts';
import type { Seal } from '../cluster/seal.ts';
import type { Replicas } from '../cluster/replicas.ts';
import type { UnsealCeremonies } from '../ceremonies/unseal-ceremony.ts';
import type { QuorumCeremonies } from '../ceremonies/quorum-ceremonies.ts';
import type { CustodianLink } from '../ceremonies/custodian-link.ts';
import { macked, type CeremonyStore } from '../ceremonies/ceremony-store.ts';
import { integrityError } from '../cluster/record-integrity.ts';
import { withRequestTokens, type RequestTokens, type TokenRecord } from '../keys/request-tokens.ts';
import type { AuditSinkStatus, EtcdStatus } from '../cluster/cluster-status.ts';
import { getShareExport } from '../cluster/share-recovery.ts';
import type { ClusterStore } from '../cluster/cluster-store.ts';
import type { AuditWitness } from '../audit-witness/witness.ts';
import { toCheckpointMsg } from '@keyshard/audit-log';

export interface CeremonyDeps {
  cluster: Cluster;
  seal: Seal;
  unseal: UnsealCeremonies;
  links: CustodianLink[];
  coordinatorId: string;
  replicas: Replicas;
  quorum: QuorumCeremonies;
  ceremonies: CeremonyStore;
  /** Share exports (GetShareExport). */
  clusterStore: ClusterStore;
  leaderId: () => Promise<string>;
  /** etcd's members and the audit sink, for Status (cluster-status.ts). */
  etcdStatus: () => Promise<EtcdStatus>;
  /** Whether this replica's etcd reads succeed (etcd-reachability.ts). */
  etcdReachable: () => boolean;
  /** The sink the producer sends to, and every configured replica (cluster-status.ts auditSinkStatuses). */
  auditSinkStatus: () => Promise<{ sink: AuditSinkStatus; replicas: AuditSinkStatus[] }>;
  /** Seals every replica and tells the custodians (seal-notice.ts). */
  sealCluster: (principal: string) => Promise<number>;
  /** This replica's witness of the audit sink (Status; ResetWitnesses). */
  witness: AuditWitness;
  /** Request tokens of Init, StartUnseal and StartCeremony (keys/request-tokens.ts). */
  tokens?: RequestTokens;
}

/** Ceremony calls that change state need the admin role; reads admin or key-user (ceremony.proto's roles). */
export function ceremonyServiceAuthorizer(admins: ReadonlySet<string>, readers: ReadonlySet<string>) {
  return roleAuthorizer('CeremonyService', { ROLE_ADMIN: admins, ROLE_KEY_USER: readers }, (ctx, policy) =>
    policy.roles.includes('ROLE_KEY_USER') ? permissionDenied(`${ctx.principal} may not read cluster status`) : permissionDenied(`${ctx.method} needs the admin role`),
  );
}

/** Every BackupService method needs the admin role (backup.proto's roles). */
export function backupServiceAuthorizer(admins: ReadonlySet<string>) {
  return roleAuthorizer('BackupService', { ROLE_ADMIN: admins }, (ctx) => permissionDenied(`${ctx.method} needs the admin role`));
}

function withFacts(c: Ceremony, ctx: CallContext): Ceremony {
  ctx.facts.ceremonyId = c.id;
  return c;
}

/**
 * A repeated Init or ceremony start: the outcome its token recorded, read again as it stands
 * now and checked to be the caller's (a record made while sealed carries no MAC), audited as a replay.
 */
async function replay(d: CeremonyDeps, r: TokenRecord, ctx: CallContext): Promise<unknown> {
  const o = r.outcome;
  ctx.facts.details = { replay: 'true', request_token: r.token };
  if ('init' in o) {
    await d.cluster.load();
    const { record } = d.cluster.requireInitialized();
    if (record.clusterId !== o.init.clusterId) throw integrityError(paths.cluster);
    ctx.facts.details = { ...ctx.facts.details, cluster_id: o.init.clusterId, shares: String(o.init.shares), threshold: String(o.init.threshold) };
    return { cluster_id: o.init.clusterId, threshold: o.init.threshold, shares: o.init.shares, custodian_ids: o.init.custodianIds, manifest_fingerprint: o.init.manifestFingerprint };
  }
  if (!('ceremony' in o)) throw integrityError(paths.ceremoniesPrefix);
  const { id, operation } = o.ceremony;
  const c = RELEASING_OPERATIONS.has(operation) ? await d.unseal.get(id) : await d.ceremonies.show(id);
  if (!c) throw ceremonyNotFound(id);
  if (c.id !== id || c.operation !== operation || c.initiator !== r.principal) throw integrityError(paths.ceremony(id));
  return withFacts(c, ctx);
}

export function ceremonyHandlers(d: CeremonyDeps): ServiceHandlers<'CeremonyService'> {
  return withRequestTokens('CeremonyService', d.tokens, ceremonyHandlersUntokened(d), {
    replay: (_method, r, ctx) => replay(d, r, ctx),
    applied: (_method, reply, token, ctx) => {
      ctx.facts.details = { ...ctx.facts.details, request_token: token };
      return reply;
    },
    // Init and unseal/recover starts are made by a sealed replica: no record MAC can be made or checked.
    macked: (method, req) => method === 'StartCeremony' && macked(String(req.operation)),
  });
}

function ceremonyHandlersUntokened(d: CeremonyDeps): ServiceHandlers<'CeremonyService'> {
  return {
    async Status() {
      // With etcd unreachable, Status still answers at once from what this replica last read, and says so.
      const reads = d.etcdReachable();
      const [, leader, registered, etcd, auditSink] = await Promise.all([
        reads ? d.cluster.load().catch(() => {}) : undefined,
        reads ? d.leaderId() : '',
        reads ? d.replicas.list().catch(() => []) : [],
        d.etcdStatus(),
        d.auditSinkStatus(),
      ]);
      const custodians = await Promise.all(
        d.links.map(async (l) => ({
          id: l.id,
          address: l.address,
          reachable: await l.identity(1_000).then(() => true, () => false),
        })),
      );
      return {
        initialized: d.cluster.initialized,
        sealed: d.seal.sealed,
        cluster_id: d.cluster.record?.clusterId ?? '',
        threshold: d.cluster.manifest?.threshold ?? 0,
        shares: d.cluster.manifest?.custodians.length ?? 0,
        ceremony: d.unseal.current ?? null,
        custodians,
        coordinator_id: d.coordinatorId,
        version: '0.1.0',
        leader_id: leader,
        replicas: registered.map((r) => ({ id: r.id, address: r.address, sealed: r.sealed, leader: r.id === leader })),
        etcd,
        audit_sink: auditSink.sink,
        audit_replicas: auditSink.replicas,
        witness: d.witness.status(),
      };
    },
    async ResetWitnesses(req, ctx) {
      const r = await d.witness.reset(ctx.principal, req.confirm);
      ctx.facts.details = { previous_tree_size: String(r.previous?.tree_size ?? 0), anchor_tree_size: String(r.anchor.tree_size), anchor_root: r.anchor.root_hash };
      return { previous: r.previous ? toCheckpointMsg(r.previous) : null, anchor: toCheckpointMsg(r.anchor), previous_alarm: r.previousAlarm };
    },
    async Init(req, ctx) {
      const r = await d.cluster.init(req.shares || d.links.length, req.threshold || 3, d.replicas);
      ctx.facts.details = { cluster_id: r.clusterId, shares: String(r.shares), threshold: String(r.threshold) };
      return {
        cluster_id: r.clusterId,
        threshold: r.threshold,
        shares: r.shares,
        custodian_ids: r.custodianIds,
        manifest_fingerprint: r.manifestFingerprint,
      };
    },
    async StartUnseal(req, ctx) {
      return withFacts(await d.unseal.start(ctx.principal, req.ttl_seconds || undefined), ctx);
    },
    async GetCeremony(req, ctx) {
      return withFacts(await d.unseal.get(req.id), ctx);
    },
    async StartCeremony(req, ctx) {
      const op = req.operation;
      const params = req.parameters;
      const ttl = req.ttl_seconds || undefined;
      if (op === 'unseal') return withFacts(await d.unseal.start(ctx.principal, ttl), ctx);
      if (d.quorum.handles(op)) return withFacts(await d.quorum.start(op, params, ctx.principal, ttl), ctx);
      if (op === 'join') throw failedPrecondition('a replica asks for its own join ceremony; it cannot be started by hand');
      if ((OPERATIONS as readonly string[]).includes(op)) throw failedPrecondition(`${op} ceremonies are not available in this version`);
      throw invalidArgument(`unknown ceremony operation ${quote(op)}; one of ${OPERATIONS.join(', ')}`);
    },
    async ListCeremonies(req) {
      return { ceremonies: await d.ceremonies.list(req.include_finished) };
    },
    async CancelCeremony(req, ctx) {
      const c = await d.ceremonies.show(req.id);
      if (!c) throw ceremonyNotFound(req.id);
      const cancelled = c.operation === 'unseal' || c.operation === 'join' ? await d.unseal.cancel(c.id, ctx.principal) : await d.quorum.cancel(c.id, ctx.principal);
      return withFacts(cancelled, ctx);
    },
    async GetShareExport(req, ctx) {
      ctx.facts.ceremonyId = req.id;
      return getShareExport(d.clusterStore, req.id);
    },
    /** Seals every replica: this one at once, the others through the seal epoch they watch. */
    async Seal(_req, ctx) {
      try {
        // Seals this replica at once, then raises the seal epoch under a record MAC (replicas.ts).
        const epoch = await d.sealCluster(ctx.principal);
        ctx.facts.details = { seal_epoch: String(epoch) };
      } finally {
        await d.unseal.cancelCurrent('sealed by an admin');
      }
      return { sealed: true };
    },
  };
}
