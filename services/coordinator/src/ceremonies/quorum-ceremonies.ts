/**
 * Approval ceremonies: dangerous acts that need custodians' approval but move no share
 * (reshare, rotate-root, destroy-key, destroy-cluster, export-share; brief, "Ceremonies"). They
 * run on the ceremony runner (runner.ts); here each accepted answer is one custodian's HSM
 * signature over the ceremony hash, counted once per manifest custodian (tallyApprovals).
 *
 *   start (admin; parameters checked by the operation; one open ceremony per operation: open.ts)
 *     ──► runner: propose, poll, tally ──► t valid approvals: the stored ceremony is re-read; if
 *         it was cancelled, or its stored fields no longer hash to what was approved, nothing is
 *         done ──► the operation runs on the approved (in-memory) parameters ──► COMPLETED
 *
 * Invariants: below t approvals nothing is done; every step is audited before the next, and a
 * step that cannot be audited stops the ceremony (fail closed). The coordinator must be
 * unsealed: the manifest whose approval keys count was verified (its MAC) at unseal. The stored
 * ceremony carries a record MAC at every write and is checked at every read that acts on it
 * (ceremony-store.ts): one altered in etcd fails its ceremony (and is audited), never drives it.
 */
import { newCeremony, tallyApprovals, type Ceremony } from '@keyshard/crypto';
import { ceremonyNotFound, failedPrecondition, invalidArgument, quote, KeyshardError } from '@keyshard/errors';
import type { Logger } from '@keyshard/config';
import type { AuditRecorder } from '@keyshard/audit-client';
import type { Cluster } from '../cluster/cluster.ts';
import type { Seal } from '../cluster/seal.ts';
import type { Approval, CustodianLink } from './custodian-link.ts';
import type { CeremonyStore } from './ceremony-store.ts';
import { cancelCeremony, driverAlive, openCeremony, requireTtl, type ReplicaDirectory } from './open.ts';
import { runCeremony, type CeremonyKind } from './runner.ts';

/** One kind of quorum-approved act. */
export interface QuorumOperation {
  /** Checks a request and returns the parameters custodians will see and sign. */
  prepare(parameters: Record<string, string>): Promise<Record<string, string>>;
  /** Runs once the ceremony is approved (with the approvals counted); returns details for the audit record. */
  execute(c: Ceremony, approvals: Approval[]): Promise<Record<string, string>>;
}

export interface QuorumDeps {
  store: CeremonyStore;
  /** This replica process (`<id>/<instance>`: the driver it names) and the registered ones. */
  driver: ReplicaDirectory & { self: string };
  cluster: Cluster;
  seal: Seal;
  links: CustodianLink[];
  audit: AuditRecorder;
  log: Logger;
  ttlSeconds: number;
  pollMs: number;
}

/** The approval kind: an answer counts if its signature verifies with the manifest custodian's approval key. */
export function approvalKind(cluster: Cluster, op: QuorumOperation, audit: AuditRecorder, log: Logger): CeremonyKind<Approval> {
  return {
    events: { accepted: 'approved', rejected: 'approval_refused' },
    unit: 'approvals',
    acceptsBeyondQuorum: true,
    async accept(c, custodianId, res) {
      const approval = { custodianId, signature: res.approval_signature, succession: res.succession };
      const { refused } = tallyApprovals(c, cluster.requireInitialized().manifest.custodians, [approval]);
      if (refused.length > 0) throw new KeyshardError('FAILED_PRECONDITION', refused[0]!.reason);
      return approval;
    },
    async complete(c, accepted) {
      await audit.record({ operation: `ceremony.${c.operation}.executing`, principal: c.initiator, ceremony_id: c.id, result: 'ok', details: { approved_by: c.approved_by.join(',') } });
      const details = await op.execute(c, accepted.map((a) => a.value));
      log.info({ ceremonyId: c.id, operation: c.operation, approvedBy: c.approved_by }, 'quorum ceremony completed');
      return details;
    },
    dispose: () => {},
  };
}

export class QuorumCeremonies {
  #d: QuorumDeps;
  #ops: Record<string, QuorumOperation>;

  constructor(deps: QuorumDeps, operations: Record<string, QuorumOperation>) {
    this.#d = deps;
    this.#ops = operations;
  }

  handles(operation: string): boolean {
    return Object.hasOwn(this.#ops, operation);
  }

  async start(operation: string, parameters: Record<string, string>, initiator: string, ttlSeconds = this.#d.ttlSeconds): Promise<Ceremony> {
    const op = this.#ops[operation];
    if (!op) throw invalidArgument(`unknown ceremony operation ${quote(operation)}`);
    requireTtl(ttlSeconds, this.#d.ttlSeconds);
    this.#d.seal.requireOpen();
    const { record, manifest } = this.#d.cluster.requireInitialized();
    // Every ceremony names the share set whose custodians approve it (custodians check they hold it).
    const params = { generation: String(manifest.generation ?? 1), ...(await op.prepare(parameters)), driver: this.#d.driver.self };
    const c = newCeremony({ operation, parameters: params, clusterId: record.clusterId, initiator, ttlSeconds, recipients: [], threshold: manifest.threshold });
    const { store, audit } = this.#d;
    const opened = await openCeremony(c, params, { store, audit, alive: (held) => driverAlive(held, this.#d.driver) });
    if (opened !== c) throw failedPrecondition(`another ${operation} ceremony is open; only one runs at a time`, { reason: 'CEREMONY_IN_PROGRESS' });
    void this.#run(c, op);
    return c;
  }

  async #run(c: Ceremony, op: QuorumOperation): Promise<void> {
    const { store, audit, log, links, pollMs, cluster } = this.#d;
    await runCeremony(c, approvalKind(cluster, op, audit, log), { role: 'driver', links, records: store, audit, log, pollMs, refusalsFinal: false });
  }

  /** Cancels an open ceremony (admin). */
  async cancel(id: string, principal: string): Promise<Ceremony> {
    const { store, audit } = this.#d;
    const c = await store.read(id, 'approval');
    if (!c) throw ceremonyNotFound(id);
    return cancelCeremony(c, principal, { records: store, audit });
  }
}
