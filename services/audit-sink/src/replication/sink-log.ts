/**
 * What the AuditService handlers (server.ts, query.ts) use of the log: appends, reads, proofs.
 * A single sink hands them its AuditLog; a replica hands them a ReplicatedSinkLog, whose appends
 * go through the replication leader (replica.ts: refused AUDIT_NOT_LEADER on a follower) and
 * whose reads are refused until the replica has proved its log a prefix of the leader's.
 */
import { KeyshardError } from '@keyshard/errors';
import type { LogEvent, SignedCheckpoint } from '@keyshard/audit-log';
import type { AuditLog, Receipt, StoredRecord } from '../audit-log.ts';
import type { Replica } from './replica.ts';

export type SinkLog = Pick<AuditLog, 'append' | 'size' | 'checkpoint' | 'freshCheckpoint' | 'rootAt' | 'leafAt' | 'inclusionProof' | 'consistencyProof' | 'records' | 'waitForGrowth'>;

export class ReplicatedSinkLog implements SinkLog {
  constructor(
    private readonly log: AuditLog,
    private readonly replica: Replica,
  ) {}

  private ready(): void {
    if (!this.replica.inSync)
      throw new KeyshardError('UNAVAILABLE', 'this audit sink replica is catching up with the leader and serves reads once its log is proved consistent with it', { reason: 'AUDIT_UNAVAILABLE' });
  }

  append(events: readonly LogEvent[]): Promise<Receipt> {
    return this.replica.append(events);
  }

  get size(): number {
    return this.log.size;
  }

  get checkpoint(): SignedCheckpoint {
    return this.log.checkpoint;
  }

  freshCheckpoint(): Promise<SignedCheckpoint> {
    this.ready();
    return this.log.freshCheckpoint();
  }

  rootAt(size?: number): Buffer {
    this.ready();
    return this.log.rootAt(size);
  }

  leafAt(index: number): Buffer {
    this.ready();
    return this.log.leafAt(index);
  }

  inclusionProof(index: number, size: number): Buffer[] {
    this.ready();
    return this.log.inclusionProof(index, size);
  }

  consistencyProof(first: number, second: number): Buffer[] {
    this.ready();
    return this.log.consistencyProof(first, second);
  }

  records(from?: number, to?: number): AsyncGenerator<StoredRecord> {
    this.ready();
    return this.log.records(from, to);
  }

  waitForGrowth(size: number, signal?: AbortSignal): Promise<void> {
    return this.log.waitForGrowth(size, signal);
  }
}
