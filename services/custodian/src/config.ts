/** Custodian node configuration, validated once at start-up. The PIN is never in here. */
import { z, address, tlsFiles } from '@keyshard/config';
import { metricsConfig } from '@keyshard/metrics';
import { auditSinkPinFields } from '@keyshard/audit-client';

export const custodianConfig = z.object({
  custodianId: z.string().regex(/^[\w.-]{1,64}$/),
  listen: address,
  tls: tlsFiles,
  token: z.object({
    modulePath: z.string().min(1),
    label: z.string().min(1).max(32),
    /** File holding the user PIN; otherwise the KEYSHARD_CUSTODIAN_PIN environment variable. */
    pinFile: z.string().min(1).optional(),
  }),
  /** RSA-OAEP hash; SoftHSM 2.6 supports only sha1. */
  oaepHash: z.enum(['sha1', 'sha256']).default('sha1'),
  /** auto: release to any valid ceremony at once (dev); manual: an operator approves each one. */
  approvalPolicy: z.enum(['auto', 'manual']).default('manual'),
  /**
   * Join ceremonies (a restarted coordinator replica asking for its own shares while its peers
   * are unsealed): `auto` releases only on a vouch by a replica unsealed in the current seal
   * epoch (packages/crypto/src/join-vouch.ts), verified against the vouch key stored with the
   * share set, and nothing weaker; `manual` waits for this custodian's operator (so a join
   * without a vouch needs a quorum of operators' approvals by hand).
   */
  joinPolicy: z.enum(['auto', 'manual']).default('auto'),
  /** Principals allowed to deliver shares and propose ceremonies. */
  coordinators: z.array(z.string().min(1)).min(1),
  /** Principals allowed to list, show, approve and deny ceremonies on this custodian. */
  operators: z.array(z.string().min(1)).default([]),
  audit: z.object({ address, ...auditSinkPinFields, timeoutMs: z.number().int().positive().default(2_000) }),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error']).default('info'),
  /** Prometheus endpoint (GET /metrics, loopback only); off when absent. The bound port is logged ("metrics listening"). */
  metrics: metricsConfig.optional(),
});

export type CustodianConfig = z.infer<typeof custodianConfig>;
