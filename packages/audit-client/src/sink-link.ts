/**
 * How a component that sends audit events pins its sink, configured once and validated at
 * start-up (coordinator and custodian configs spread `auditSinkPinFields` into their `audit`):
 *   serverId              the sink's certificate CN (default `audit-sink`): TLS peer pin;
 *   checkpointPublicKeys  the sink's Ed25519 checkpoint public keys (SPKI PEM files; two during
 *                         a key rotation): every acknowledgement's checkpoint must verify.
 * And what a component does when the sink's acknowledgements stop verifying: an `ALERT` error
 * log line with a stable `alert` field, for the log pipeline that pages people (the sink's own
 * alert path cannot be used: the sink is what is not trusted).
 */
import type { KeyObject } from 'node:crypto';
import { ConfigError, z, type Logger } from '@keyshard/config';
import { AUDIT_SINK_ID } from '@keyshard/rpc';
import { loadCheckpointKeys } from '@keyshard/audit-log';

export const auditSinkPinFields = {
  /** The sink's certificate CN: a server presenting any other certificate of the CA is refused. */
  serverId: z.string().regex(/^[\w.:-]{1,64}$/).default(AUDIT_SINK_ID),
  /** The sink's checkpoint public keys (Ed25519, SPKI PEM files): acknowledgements must be signed by one. */
  checkpointPublicKeys: z.array(z.string().min(1)).min(1, 'name the audit sink checkpoint public key (PEM file)'),
};

/** The sink keys named by a validated config; a ConfigError (exit 2) when a file is missing or wrong. */
export function sinkCheckpointKeys(files: readonly string[]): Map<string, KeyObject> {
  try {
    return loadCheckpointKeys(files);
  } catch (e) {
    throw new ConfigError(`invalid config: audit.checkpointPublicKeys: ${(e as Error).message}`);
  }
}

/** The stable `alert` field of the log line raised when the sink's acknowledgements fail verification. */
export const SINK_DISTRUSTED_ALERT = 'audit_sink_checkpoint_rejected';

/** An AuditClient `onAlert` that logs the alert line. */
export function logSinkAlert(log: Logger, address: string): (alert: { reason: string }) => void {
  return ({ reason }) =>
    log.error(
      { alert: SINK_DISTRUSTED_ALERT, address, reason },
      'ALERT: audit sink acknowledgement failed checkpoint verification; no further event is counted as stored (crypto calls spool, then are refused; ceremonies are refused) until an operator resets the witnesses (keyshard audit witness reset) or, where no witness anchors this process (custodians), until it is restarted',
    );
}
