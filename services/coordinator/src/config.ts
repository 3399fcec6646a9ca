/** Coordinator configuration, validated once at start-up. */
import { z, address, tlsFiles } from '@keyshard/config';

export const coordinatorConfig = z.object({
  /** Names the etcd namespace `/keyshard/<clusterName>/`. */
  clusterName: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lowercase letters, digits and dashes'),
  coordinatorId: z.string().regex(/^[\w.-]{1,64}$/),
  listen: address,
  tls: tlsFiles,
  etcd: z.object({
    endpoints: z.array(z.string().url()).min(1),
    tls: tlsFiles.optional(),
    callTimeoutMs: z.number().int().positive().default(5_000),
  }),
  audit: z.object({
    address,
    timeoutMs: z.number().int().positive().default(2_000),
    /**
     * Local durable spool for crypto-operation events: they are answered once fsync'ed here
     * and shipped to the sink in order. Without it, every call waits for the sink itself.
     */
    spoolDir: z.string().min(1).optional(),
    spoolMaxEvents: z.number().int().positive().default(100_000),
  }),
  custodians: z
    .array(z.object({ id: z.string().regex(/^[\w.-]{1,64}$/), address }))
    .min(2)
    .refine((cs) => new Set(cs.map((c) => c.id)).size === cs.length, 'custodian ids must be unique'),
  /** Principals (certificate common names) with the admin role: init, unseal, seal. */
  admins: z.array(z.string().min(1)).min(1),
  /**
   * Principals allowed to call KeyService at all (admins always are). Per-key policy narrows
   * this further in the key-lifecycle issue. Component identities should never be listed.
   */
  keyUsers: z.array(z.string().min(1)).default([]),
  /** RSA-OAEP hash for share delivery: SoftHSM supports only sha1. */
  oaepHash: z.enum(['sha1', 'sha256']).default('sha1'),
  keys: z
    .object({
      /** Production floor 1 hour (brief); tests may configure seconds. */
      minRotationPeriodSeconds: z.number().int().positive().default(3600),
      /** Production floor 7 days; tests may configure seconds. */
      minDestructionWaitSeconds: z.number().int().positive().default(7 * 24 * 3600),
      defaultDestructionWaitSeconds: z.number().int().positive().default(30 * 24 * 3600),
      /** Per-version encryption bound (services/coordinator/src/version-usage.ts). */
      usage: z
        .object({
          /** NIST SP 800-38D §8.3: at most 2^32 messages per key with random 96-bit nonces. */
          limit: z.number().int().positive().max(2 ** 32).default(2 ** 32),
          /** A version is rotated automatically at this count: well before the limit. */
          rotateAt: z.number().int().positive().default(2 ** 30),
          reserveBlock: z.number().int().positive().default(2 ** 16),
          lastUseFlushSeconds: z.number().positive().default(5),
        })
        .refine((u) => u.rotateAt < u.limit, 'usage.rotateAt must be below usage.limit')
        .prefault({}), // zod 4: an absent object is parsed as {}, so the field defaults apply
    })
    .prefault({}),
  maxPlaintextBytes: z.number().int().positive().max(4 * 1024 * 1024).default(64 * 1024),
  ceremonyTtlSeconds: z.number().int().min(10).max(7 * 24 * 3600).default(900),
  /** How often a ceremony asks custodians for their releases while it is open. */
  custodianPollMs: z.number().int().min(10).default(50),
  registrationTtlSeconds: z.number().int().min(2).default(10),
  /** How often a sealed replica checks whether peers are unsealed, to ask to join them. */
  joinCheckSeconds: z.number().positive().default(2),
  /** etcd election TTL of the leader that runs background jobs. */
  leaderTtlSeconds: z.number().int().min(1).default(5),
  /** How often the leader looks for keys due for scheduled rotation. */
  rotationSweepSeconds: z.number().positive().default(30),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error']).default('info'),
  /** Crash tests only: SIGKILL the process at a named step of a ceremony (e.g. reshare:delivered). */
  faultInjection: z.object({ crashAt: z.string().min(1).optional() }).default({}),
});

export type CoordinatorConfig = z.infer<typeof coordinatorConfig>;
