/**
 * The coordinator's door to record MACs (@keyshard/crypto record-mac.ts): every record whose
 * change would grant access or change behaviour is written with `stamp` and read with `open`
 * or `check`, under the record MAC key the seal holds while unsealed (seal.ts).
 *
 * What carries a MAC (written by an unsealed replica, verified whenever one loads it):
 *   keys/<id>            key records: policy, state, versions, rotation (keys/key-store.ts, key-cache.ts)
 *   aliases/<name>       {keyId}: the key an alias names
 *   ceremonies/<id>      quorum ceremonies (reshare, rotate-root, destroy-key, destroy-cluster,
 *                        export-share), at every write (ceremonies/ceremony-store.ts)
 *   seal-epoch           {epoch}: a rise seals every replica that verifies it (cluster-store.ts, replicas.ts)
 *   coordinators/<id>    a registration that says "unsealed" (replica-store.ts)
 *   usage/<id>/<v>       encryptions reserved (the GCM bound) and last use (keys/usage-store.ts)
 *   share-set-next       {generation};  share-exports/<id>   (cluster-store.ts)
 *   request-tokens/<d>   a state change's recorded outcome, answered to its repeats (keys/request-tokens.ts)
 * What is authenticated otherwise (so carries no second MAC):
 *   names/<name>         a bare key id: accepted only if the MAC'd key record it leads to has that name
 *   manifest             its own MAC under a root subkey, checked at unseal (share-manifest.ts)
 *   keks/<epoch>, keks/record-mac, versions/…   AES-GCM under the root / a KEK, AAD = position
 *   cluster              its id must match the MAC'd manifest's; its KEK epoch must unwrap
 *   unseal / join ceremonies and registrations of sealed replicas: written while sealed (no key);
 *                        bound by the custodian-signed ceremony hash, and shares are released
 *                        only to custodian-enrolled transport keys (part A), joins only on a vouch
 * A record that fails is never used: `open` throws FAILED_PRECONDITION "record <path> failed its
 * integrity check (altered outside keyshard?)", and the violation is reported once per stored
 * value (log, metric, audit event `integrity.record_refused`, which the audit sink alerts on).
 * A record written before record MACs existed has none and is refused the same way: a cluster
 * initialised before this change is re-initialised (dev) — there is no migration.
 */
import { createHash } from 'node:crypto';
import { verifyRecordMac, withRecordMac, zeroize } from '@keyshard/crypto';
import { failedPrecondition, type KeyshardError } from '@keyshard/errors';
import type { Logger } from '@keyshard/config';
import type { AuditRecorder } from '@keyshard/audit-client';
import { paths } from '@keyshard/store';
import type { Seal } from './seal.ts';

export interface IntegrityViolation {
  /** The record's etcd key relative to the cluster prefix. */
  path: string;
  /** What failed: 'no MAC', 'MAC mismatch', 'not JSON', or a consistency check's words. */
  reason: string;
}

export const integrityError = (path: string): KeyshardError =>
  failedPrecondition(`record ${path} failed its integrity check (altered outside keyshard?)`, { reason: 'INTEGRITY_FAILURE', metadata: { record: path } });

/**
 * How a replica reports a refused record: logged, counted (`count`) and audited as
 * `integrity.record_refused` (the audit sink's `integrity` alert rule fires on it). Never
 * blocks the refusal: an audit that fails is logged.
 */
export function integrityReporter(d: { principal: string; log: Logger; audit: AuditRecorder; count: (path: string) => void }): (v: IntegrityViolation) => void {
  const idUnder = (path: string, prefix: string) => (path.startsWith(prefix) ? path.slice(prefix.length) : '');
  return (v) => {
    d.log.error({ record: v.path, reason: v.reason }, 'record failed its integrity check (altered outside keyshard?): refused');
    d.count(v.path);
    void d.audit
      .record({
        operation: 'integrity.record_refused', principal: d.principal, key_id: idUnder(v.path, paths.keysPrefix), ceremony_id: idUnder(v.path, paths.ceremoniesPrefix),
        result: 'error', code: 'FAILED_PRECONDITION', details: { record: v.path, reason: v.reason },
      })
      .catch((e: Error) => d.log.error({ record: v.path, err: e.message }, 'the integrity failure could not be audited'));
  };
}

/** Stored values already reported (per process), so one bad record read a thousand times is one alert. */
const MAX_REMEMBERED = 4096;

export class RecordIntegrity {
  readonly #seal: Seal;
  readonly #report: (v: IntegrityViolation) => void;
  readonly #reported = new Set<string>();

  constructor(seal: Seal, report: (v: IntegrityViolation) => void) {
    this.#seal = seal;
    this.#report = report;
  }

  /** Whether records can be stamped and verified now (the replica is unsealed). */
  get available(): boolean {
    return !this.#seal.sealed;
  }

  /** Throws while records cannot be verified: the seal's refusal (SEALED, or UNINITIALIZED). */
  requireAvailable(): void {
    this.#seal.requireOpen();
  }

  /** `record`, with its MAC, as the JSON to store at `path`. Throws "sealed" while sealed. */
  stamp(path: string, record: object): string {
    return JSON.stringify(withRecordMac(this.#seal.recordMacKey(), path, record));
  }

  /**
   * A stamper that outlives the seal, for one write made just after this replica seals itself
   * (the cluster seal: seal at once, then raise the epoch). The caller closes it (zeroized).
   */
  detachedStamper(): { stamp(path: string, record: object): string; close(): void } {
    const key = Buffer.from(this.#seal.recordMacKey());
    return {
      stamp: (path, record) => JSON.stringify(withRecordMac(key, path, record)),
      close: () => zeroize(key),
    };
  }

  /** The record stored at `path` (its MAC verified and removed); `undefined` if it fails (reported). */
  check<T extends object>(path: string, raw: string | Buffer): T | undefined {
    const key = this.#seal.recordMacKey();
    const text = raw.toString();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      this.refuse(path, 'not JSON', text);
      return undefined;
    }
    const res = verifyRecordMac<T>(key, path, parsed);
    if (res.ok) return res.record;
    this.refuse(path, res.reason, text);
    return undefined;
  }

  /** Like `check`, but throws the integrity error. */
  open<T extends object>(path: string, raw: string | Buffer): T {
    const r = this.check<T>(path, raw);
    if (r === undefined) throw integrityError(path);
    return r;
  }

  /** Reports a record refused by a check of its own (a name whose key record names another). */
  refuse(path: string, reason: string, stored: string): KeyshardError {
    const id = createHash('sha256').update(path).update('\0').update(stored).digest('hex');
    if (!this.#reported.has(id)) {
      if (this.#reported.size >= MAX_REMEMBERED) this.#reported.clear();
      this.#reported.add(id);
      this.#report({ path, reason });
    }
    return integrityError(path);
  }
}
