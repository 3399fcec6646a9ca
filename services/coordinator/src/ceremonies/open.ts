/**
 * Opening a ceremony under its lock (ceremony-store.ts `lockOf`): one open unseal, one open
 * join per replica, one open ceremony of each approval operation, cluster-wide.
 *
 * A lock held by a ceremony that is no longer open is released. One still open is closed and
 * its lock released when it has expired, or when its driver is gone: the driver is one replica
 * process (`driverAlive`), and a process that crashed mid-ceremony left it behind. Otherwise the
 * open ceremony is live and is returned instead of a new one (the caller decides whether that is
 * an answer — StartUnseal — or an error).
 */
import { isExpired, stateName, type Ceremony } from '@keyshard/crypto';
import { failedPrecondition, invalidArgument } from '@keyshard/errors';
import type { AuditRecorder } from '@keyshard/audit-client';
import { lockOf, type CeremonyStore } from './ceremony-store.ts';
import { finishCeremony, type RunContext } from './runner.ts';

/** Registered replica processes, as ceremonies see them (cluster/replicas.ts). */
export interface ReplicaDirectory {
  list(): Promise<{ id: string; publicKeyPem: string; ephemeralPublicKeyPem?: string; sealed: boolean }[]>;
  /** Whether the replica process `driver` (`<id>/<instance>`) is registered. */
  alive(driver: string): Promise<boolean>;
}

/**
 * Whether the replica process driving `c` is still registered: approval ceremonies name it
 * (parameters.driver); a share-releasing ceremony's driver is its first recipient, known by the
 * ephemeral key only that process holds.
 */
export async function driverAlive(c: Ceremony, replicas: ReplicaDirectory): Promise<boolean> {
  if (c.parameters.driver) return replicas.alive(c.parameters.driver);
  const driver = c.recipients[0];
  return (await replicas.list()).some((r) => r.id === driver?.coordinator_id && r.ephemeralPublicKeyPem === driver.ephemeral_public_key_pem);
}

export interface OpenDeps {
  store: CeremonyStore;
  audit: AuditRecorder;
  /** Whether a held ceremony's driver lives (driverAlive, or true for the caller's own). */
  alive(c: Ceremony): Promise<boolean>;
}

/**
 * Stores `c` and takes its lock, audited (`ceremony.<op>.created`, with `details`) before it is
 * visible. Returns `c`, or the live ceremony that holds the lock (nothing is created then);
 * undefined if the lock was taken concurrently.
 */
export async function openCeremony(c: Ceremony, details: Record<string, string>, d: OpenDeps): Promise<Ceremony | undefined> {
  const lock = lockOf(c);
  const heldBy = await d.store.lockHolder(lock);
  if (heldBy) {
    // A record that fails its check is not used (reported); its lock is released. So is one that
    // is not the lock's own (a lock pointed at another kind of ceremony in etcd).
    const peeked = await d.store.peek(heldBy, c.operation);
    const held = peeked?.id === heldBy && lockOf(peeked) === lock ? peeked : undefined;
    if (held?.state === 'CEREMONY_STATE_OPEN') {
      const o = { records: d.store, audit: d.audit, role: 'driver' as const };
      if (isExpired(held)) await finishCeremony(held, 'CEREMONY_STATE_EXPIRED', 'expired before a quorum of custodians answered', o);
      else if (!(await d.alive(held))) await finishCeremony(held, 'CEREMONY_STATE_FAILED', 'the coordinator running it stopped; start a new one', o, {}, 'UNAVAILABLE');
      else return held;
    }
    await d.store.unlock(lock, heldBy);
  }
  await d.audit.record({ operation: `ceremony.${c.operation}.created`, principal: c.initiator, ceremony_id: c.id, result: 'ok', details });
  return (await d.store.create(c)) ? c : undefined;
}

/** A requested lifetime: whole seconds, at least 10, at most the configured `max`. */
export function requireTtl(ttlSeconds: number, max: number): number {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 10 || ttlSeconds > max) throw invalidArgument(`ttl_seconds must be between 10 and ${max}`);
  return ttlSeconds;
}

/** CancelCeremony: ends open ceremony `c` as CANCELLED by `principal` (its driver, wherever it runs, sees it at its next round). */
export async function cancelCeremony(c: Ceremony, principal: string, o: Pick<RunContext, 'records' | 'audit'>): Promise<Ceremony> {
  if (c.state !== 'CEREMONY_STATE_OPEN') throw failedPrecondition(`ceremony ${c.id} is already ${stateName(c.state)}`, { reason: 'CEREMONY_CLOSED', metadata: { ceremony_id: c.id } });
  await finishCeremony(c, 'CEREMONY_STATE_CANCELLED', `cancelled by ${principal}`, { ...o, role: 'driver' });
  return c;
}
